"""The restricted unpickler for released benchmark files (``lcaffect_ml.released``, MUStARD's
``split_indices.p``): a pickle can run any code its author chose, and the standard unpickler
also trusts it with memory (a dtype whose state declares object fields reads raw bytes as
pointers; ``bytearray(2 << 30)`` is 48 bytes). ``SafeUnpickler`` admits only what the released
layouts need to rebuild NumPy arrays and plain containers, checks every admitted call and every
``BUILD`` state before anything is built, and raises ``ReleasedFeatureError`` naming the file for
every refusal. A caller that expects less narrows it further (``load_pickle(allowed=...,
object_arrays=False)``: MUStARD's ``split_indices.p`` admits only ``NUMPY_ARRAY_GLOBALS`` and no
object-dtype array).
"""

from __future__ import annotations

import builtins
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core.multiarray import scalar as _numpy_scalar

from .feature_io import FeatureFileError

# (module, name) a pickle of plain NumPy arrays references (numpy 1 and 2 module paths), and the
# bytes decoder Python 3 writes at protocol 2 (a Python 2 file such as MUStARD's has no need of it).
NUMPY_ARRAY_GLOBALS = frozenset({
    *((m, "_reconstruct") for m in ("numpy.core.multiarray", "numpy._core.multiarray")),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})
# (module, name) a released feature pickle may reference: NumPy's array and scalar
# reconstruction and plain containers (Python 2 names included, since MELD's and MUStARD's
# pickles were written by Python 2).
ALLOWED_GLOBALS = NUMPY_ARRAY_GLOBALS | frozenset({
    *((m, "scalar") for m in ("numpy.core.multiarray", "numpy._core.multiarray")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    *((m, n) for m in ("builtins", "__builtin__")
      for n in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "complex")),
    ("collections", "OrderedDict"),
})


class ReleasedFeatureError(FeatureFileError):
    """A released feature file cannot be used: names the file and the reason."""


# Bounds on what one pickle may build, checked before each thing is built (see ``SafeUnpickler``).
# A protocol-2 dict of 14,000 float32 vectors (MELD's size) takes 0.42 M opcodes; each opcode builds
# at most one small object, so this bounds the containers a pickle may build.
MAX_OPCODES = 4_000_000
MAX_DEPTH = 32  # the released layouts nest 4 deep (dict > split > list/array > item)


class _Bounded:
    """The pickle file, read so that a length field cannot ask for more bytes than the file holds."""

    def __init__(self, fh, path: str):
        self.fh, self.path = fh, path
        self.left = os.fstat(fh.fileno()).st_size

    def _take(self, n: int) -> None:
        if n > self.left:
            raise ReleasedFeatureError(f"{self.path}: not a readable feature pickle: a field claims {n} bytes, "
                                       f"{self.left} are left in the file")

    def read(self, n: int = -1) -> bytes:
        self._take(max(n, 0))
        data = self.fh.read(n)
        self.left -= len(data)
        return data

    def readinto(self, buf) -> int:
        self._take(len(buf))
        got = self.fh.readinto(buf)
        self.left -= got
        return got

    def readline(self) -> bytes:
        data = self.fh.readline()
        self.left -= len(data)
        return data


class _NdarrayType:
    """Stands for ``numpy.ndarray`` in a pickle: NumPy's ``_reconstruct`` names it as the array type,
    but calling it (``ndarray(shape, dtype, buffer, offset, strides)``: zero strides over a small
    buffer) would build views of any size."""

    def __init__(self, refuse):
        self.refuse = refuse

    def __call__(self, *args: Any) -> Any:
        raise self.refuse("a call of numpy.ndarray: it may only be named as _reconstruct's array type")


class SafeUnpickler(pickle._Unpickler):
    """An unpickler that rebuilds only what ``allowed`` names (by default NumPy arrays and plain
    containers, ``ALLOWED_GLOBALS``); ``object_arrays=False`` also refuses object-dtype arrays
    (their items would be arbitrary objects, not numbers).

    Memory safety, not only code safety: every admitted callable is a guard that checks its
    arguments before NumPy or Python builds anything (dtypes from a type string only, no structured
    or object-field dtype rebuilt by ``BUILD``, array shapes whose bytes match the data the file
    holds, no strides, containers only from containers), a length field cannot exceed the file,
    the opcodes are counted (``MAX_OPCODES``) and the result's nesting is bounded (``MAX_DEPTH``).
    It is Python's pure-Python unpickler so that ``BUILD`` can be checked; the released files are
    a few large arrays, so its speed does not matter. Any refusal is a ``ReleasedFeatureError``."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: str | os.PathLike, allowed: frozenset = ALLOWED_GLOBALS,
                 object_arrays: bool = True):
        self.path, self.allowed, self.object_arrays = str(path), allowed, object_arrays
        self.bounded = _Bounded(file, self.path)
        super().__init__(self.bounded, encoding="latin1")  # Python 2 NumPy pickles need latin1
        self.opcodes = 0

    def refuse(self, reason: str) -> ReleasedFeatureError:
        return ReleasedFeatureError(f"{self.path}: refused {reason}")

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            what = "NumPy arrays" if self.allowed == NUMPY_ARRAY_GLOBALS else "NumPy arrays and plain containers"
            raise ReleasedFeatureError(f"{self.path}: refused to load {module}.{name}: this file may hold only {what}")
        return _NdarrayType(self.refuse) if name == "ndarray" else getattr(self, _GUARDS.get(name, "_container"))(name)

    # ---------------------------------------------------------------- guards for admitted callables

    def _max_bytes(self) -> int:
        """No array may hold more bytes than the file (its data is in the file, or the items are)."""
        return max(os.fstat(self.bounded.fh.fileno()).st_size, 1 << 16)

    def _checked_dtype(self, dtype: Any) -> np.dtype:
        if not isinstance(dtype, np.dtype):
            raise self.refuse(f"a {type(dtype).__name__} where a dtype belongs")
        if dtype.hasobject and (not self.object_arrays or dtype.fields or dtype.subdtype):
            raise self.refuse(f"an array of dtype {dtype}: only numeric arrays here")
        return dtype

    def _array_bytes(self, shape: Any, dtype: np.dtype) -> int:
        if not (isinstance(shape, tuple) and len(shape) <= 32
                and all(type(n) is int and 0 <= n for n in shape)):
            raise self.refuse(f"array shape {shape!r:.80}: not a tuple of sizes")
        size = int(np.prod(shape, dtype=object))
        if size * max(dtype.itemsize, 1) > self._max_bytes():
            raise self.refuse(f"an array of shape {shape} of {dtype}: larger than the file")
        return size

    def _dtype(self, _name: str):
        def dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
            if not isinstance(spec, str) or len(spec) > 16:
                raise self.refuse(f"a dtype built from {type(spec).__name__} {spec!r:.40}: only a type code")
            result = self._checked_dtype(np.dtype(spec, bool(align), bool(copy)))
            if result.itemsize > self._max_bytes():
                raise self.refuse(f"dtype {result}: larger than the file")
            return result
        return dtype

    def _reconstruct(self, _name: str):
        def reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
            if not isinstance(subtype, _NdarrayType):  # a subclass would run its own code
                raise self.refuse(f"_reconstruct of {type(subtype).__name__}: only numpy.ndarray")
            if typecode not in (b"b", "b"):
                raise self.refuse(f"_reconstruct with type code {typecode!r:.40}")
            self._array_bytes(shape, np.dtype("b"))
            return np.ndarray.__new__(np.ndarray, shape, "b")
        return reconstruct

    def _scalar(self, _name: str):
        def scalar(dtype: Any, data: Any = None) -> Any:
            dtype = self._checked_dtype(dtype)
            if dtype.hasobject:
                return data
            data = data.encode("latin1") if isinstance(data, str) else data
            if not isinstance(data, bytes) or len(data) != dtype.itemsize:
                raise self.refuse(f"a {dtype} scalar from {len(data) if isinstance(data, bytes) else data!r:.40} bytes")
            return _numpy_scalar(dtype, data)
        return scalar

    def _frombuffer(self, _name: str):
        def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
            dtype = self._checked_dtype(dtype)
            if dtype.hasobject or order not in ("C", "F"):
                raise self.refuse(f"_frombuffer of {dtype} in order {order!r:.20}")
            size = self._array_bytes(shape, dtype)
            if memoryview(buf).nbytes != size * dtype.itemsize:
                raise self.refuse(f"an array of shape {shape} of {dtype} over a buffer of another size")
            return np.frombuffer(buf, dtype).reshape(shape, order=order)
        return frombuffer

    def _encode(self, _name: str):
        def encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
            if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
                raise self.refuse(f"_codecs.encode of {type(text).__name__} as {encoding!r:.20}")
            return text.encode("latin1")
        return encode

    def _container(self, name: str):
        """``list``/``dict``/``set``/... from another container (a pickle never needs more: a string
        or a count would let a few bytes build a large object), ``bytearray`` from bytes/text,
        ``complex`` from numbers."""
        build = {"OrderedDict": OrderedDict, **{n: getattr(builtins, n) for n in (
            "list", "dict", "tuple", "set", "frozenset", "bytearray", "complex")}}[name]
        kinds = {"bytearray": (bytes, str), "complex": (int, float)}.get(name, (list, tuple, dict))

        def container(*args: Any) -> Any:
            if name == "bytearray" and len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
                return bytearray(args[0], "latin1")
            if len(args) > (2 if name == "complex" else 1) or not all(isinstance(a, kinds) for a in args):
                raise self.refuse(f"{name} built from {', '.join(type(a).__name__ for a in args)}")
            return build(*args)
        return container

    # ---------------------------------------------------------------- opcodes

    def load_build(self) -> None:
        """``BUILD`` sets an array's or a dtype's state; both are checked first (a dtype's state can
        declare object fields with their flags cleared, so raw bytes would be read as pointers)."""
        inst, state = self.stack[-2], self.stack[-1]
        if type(inst) is np.ndarray:
            self._check_array_state(inst, state)
        elif isinstance(inst, np.dtype):
            self._check_dtype_state(inst, state)
        else:
            raise self.refuse(f"setting the state of a {type(inst).__name__}")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self) -> None:
        """``BYTEARRAY8`` allocates its length before reading: bound the length by the file first."""
        size = int.from_bytes(self.read(8), "little")
        if size > self._max_bytes():
            raise self.refuse(f"a bytearray of {size} bytes: larger than the file")
        self.append(bytearray(self.read(size)))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def _check_dtype_state(self, dtype: np.dtype, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) in (8, 9)):
            raise self.refuse(f"the dtype state {state!r:.80}")
        _, order, subarray, names, fields, elsize, alignment, flags, *metadata = state
        if (subarray, names, fields, *metadata) != (None, None, None, *([None] * len(metadata))) \
                or flags != dtype.flags or elsize not in (-1, dtype.itemsize) \
                or alignment not in (-1, dtype.alignment) or order not in ("<", ">", "|", "="):
            raise self.refuse(f"dtype {dtype} rebuilt with fields or flags of its own: {state!r:.120}")

    def _check_array_state(self, array: np.ndarray, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise self.refuse(f"the array state {state!r:.80}")
        shape, dtype, _fortran, data = state[-4:]
        dtype = self._checked_dtype(dtype)
        size = self._array_bytes(shape, dtype)
        if dtype.hasobject:
            ok = isinstance(data, list) and len(data) == size
        else:
            ok = isinstance(data, (bytes, bytearray, str)) and len(data) == size * dtype.itemsize
        if not ok:
            raise self.refuse(f"an array of shape {shape} of {dtype} with {type(data).__name__} data of another size")

    def load(self) -> Any:
        self.dispatch = _CountedDispatch(type(self).dispatch, self.refuse)
        result = super().load()
        _check_depth(result, self.refuse)
        return result


class _CountedDispatch(dict):
    """The opcode table, counting lookups (the pure-Python loop looks every opcode up here): a file
    of a few bytes per opcode cannot build more than ``MAX_OPCODES`` small objects."""

    def __init__(self, table: dict, refuse):
        super().__init__(table)
        self.left, self.refuse = MAX_OPCODES, refuse

    def __getitem__(self, key: int):
        self.left -= 1
        if self.left < 0:
            raise self.refuse(f"a pickle of more than {MAX_OPCODES} opcodes")
        return dict.__getitem__(self, key)


_GUARDS = {"dtype": "_dtype", "_reconstruct": "_reconstruct", "scalar": "_scalar", "_frombuffer": "_frombuffer",
           "encode": "_encode"}


def _check_depth(obj: Any, refuse) -> None:
    """Refuse containers nested deeper than ``MAX_DEPTH`` (walked without recursion; an item shared
    by several containers is walked again only when reached deeper, so at most ``MAX_DEPTH`` times,
    and a container holding itself stops at the bound)."""
    deepest: dict[int, int] = {}
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = list(item)
        elif isinstance(item, np.ndarray) and item.dtype.hasobject:
            children = list(item.flat)
        else:
            continue
        if depth > MAX_DEPTH:
            raise refuse(f"containers nested more than {MAX_DEPTH} deep")
        if deepest.get(id(item), 0) >= depth:
            continue
        deepest[id(item)] = depth
        stack.extend((child, depth + 1) for child in children)


def load_pickle(path: str | os.PathLike, allowed: frozenset = ALLOWED_GLOBALS, object_arrays: bool = True) -> Any:
    """The object in a released pickle, rebuilt by ``SafeUnpickler`` with ``allowed`` and ``object_arrays``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return SafeUnpickler(fh, path, allowed, object_arrays).load()
    except ReleasedFeatureError:
        raise
    except OSError as exc:
        raise ReleasedFeatureError(f"{path}: cannot read the released feature file: {exc}") from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... from a damaged file
        raise ReleasedFeatureError(f"{path}: not a readable feature pickle: {type(exc).__name__}: {exc}") from exc
