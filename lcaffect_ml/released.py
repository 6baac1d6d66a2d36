"""The features the benchmarks release, read in place of the project's text, acoustic and visual
encoders (``extract_features`` option ``released_features``); the live-comment features still come
from the videos through V2LC.

Most work on CH-SIMS v2, MELD and MUStARD starts from these files, so reading them lets the
project's baselines be compared with the published ones. Three layouts, told apart by content:

* ``mmsa``: the MMSA / MMSA-FET feature pickle (CH-SIMS v2's ``ch-simsv2s.pkl``, MMSA's
  ``unaligned.pkl``): ``{"train"|"valid"|"test": {"id": ["{video_id}$_${clip_id}", ...],
  "text": (N, L, Dt), "audio": (N, La, Da), "vision": (N, Lv, Dv), "audio_lengths",
  "vision_lengths", "text_bert": (N, 3, L) (token ids, attention mask, segment ids), ...}}``. Ids
  become the loader's ``{video_id}_{clip_id}``; sequences are cut to their lengths (text: the
  attention mask of ``text_bert``, else up to the last non-zero row); ``-inf`` (MMSA's missing
  audio) becomes 0 as MMSA's own loader does.
* ``mustard``: MUStARD's ``data/audio_features.p``: ``{utterance_id: (283, T)}`` (librosa features
  over time, features first) -> ``(T, 283)``.
* ``meld``: MELD's utterance-level feature pickles (``audio_embeddings_feature_selection_emotion.pkl``,
  ``text_glove_average_emotion.pkl``, ...): a triple ``(train, val, test)`` of ``{"{dia}_{utt}":
  vector}`` -> ``{split}_dia{D}_utt{U}`` (``val`` is the ``dev`` file), one token each.

These are pickles, and unpickling a file can run any code its author chose. ``SafeUnpickler``
admits only what these layouts need to rebuild NumPy arrays and plain containers, and refuses
anything else with an error naming the file and the class, before it can be called. A caller
that expects less narrows it further (``load_pickle(allowed=..., object_arrays=False)``: MUStARD's
``split_indices.p`` admits only ``NUMPY_ARRAY_GLOBALS`` and no object-dtype array).

The CH-SIMS v2 pickle (``ch-simsv2s.pkl``) also has a ``train_mix`` split: the authors' loader
(thuiar/ch-sims-v2 ``data/load_data.py``) feeds it to their semi-supervised AV-MC(Semi) only,
as the labelled train clips followed by the unlabelled CH-SIMS v2(u) clips with a ``mask``
marking the labelled ones. The supervised benchmark this project runs uses train/valid/test, so
``train_mix`` is read past and not used; ``features.json`` records that (``ignored_splits``).
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

from .contracts.hashing import sha256_file
from .feature_io import FeatureFileError

MODALITIES = ("text", "audio", "visual")
FORMATS = ("mmsa", "mustard", "meld")
MMSA_SPLITS = ("train", "valid", "test")
# MMSA-layout splits read past, with the reason features.json records (see the module doc)
MMSA_IGNORED_SPLITS = {"train_mix": "CH-SIMS v2's semi-supervised split (the labelled train clips plus the "
                                    "unlabelled CH-SIMS v2(u) clips, for AV-MC(Semi)): not used by the supervised "
                                    "benchmark, whose train/valid/test splits are read"}
MMSA_KEYS = {"text": "text", "audio": "audio", "visual": "vision"}
MELD_SPLITS = ("train", "dev", "test")  # the order of the released triples (train, val, test)

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
MAX_OPCODES = 4_000_000  # MELD's largest feature pickle runs ~0.4 M; each opcode builds at most one small object
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


# ------------------------------------------------------------------------------ layouts


def detect_format(obj: Any) -> str | None:
    if isinstance(obj, dict) and set(obj) & set(MMSA_SPLITS) and set(obj) <= {*MMSA_SPLITS, *MMSA_IGNORED_SPLITS} \
            and all(isinstance(v, dict) and "id" in v for v in obj.values()):
        return "mmsa"
    if isinstance(obj, (tuple, list)) and len(obj) == 3 and all(isinstance(v, dict) for v in obj):
        return "meld"
    if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        return "mustard"
    return None


def _matrix(path: Path, uid: str, x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ReleasedFeatureError(f"{path}: utterance {uid!r} has features of shape {x.shape}, not (length, dim)")
    x[np.isneginf(x)] = 0.0
    if not np.isfinite(x).all():
        raise ReleasedFeatureError(f"{path}: utterance {uid!r} has NaN or infinite features")
    return x


def _mmsa_length(part: dict, key: str, i: int, x: np.ndarray) -> int:
    if key == "text":
        if "text_bert" in part:
            return int(np.asarray(part["text_bert"][i])[1].sum())
        nonzero = np.flatnonzero(np.abs(x).sum(axis=1) > 0)
        return int(nonzero[-1]) + 1 if len(nonzero) else 1
    lengths = part.get(f"{key}_lengths")
    return x.shape[0] if lengths is None else int(lengths[i])  # aligned data has no lengths


def read_mmsa(path: Path, obj: dict, modality: str) -> dict[str, np.ndarray]:
    key = MMSA_KEYS[modality]
    out: dict[str, np.ndarray] = {}
    for split, part in obj.items():
        if split in MMSA_IGNORED_SPLITS:
            continue
        if key not in part:
            raise ReleasedFeatureError(f"{path}: split {split!r} has no {key!r} features (keys: {sorted(part)})")
        features = np.asarray(part[key])
        if features.ndim != 3 or len(features) != len(part["id"]):
            raise ReleasedFeatureError(f"{path}: {split}/{key} has shape {features.shape} for {len(part['id'])} ids")
        for i, raw_id in enumerate(part["id"]):
            uid = str(raw_id).replace("$_$", "_")
            length = _mmsa_length(part, key, i, features[i])
            if not 0 < length <= features.shape[1]:
                raise ReleasedFeatureError(f"{path}: {split}/{key} utterance {uid!r} has length {length}")
            out[uid] = _matrix(path, uid, features[i][:length])
    return out


def read_mustard(path: Path, obj: dict) -> dict[str, np.ndarray]:
    return {str(uid): _matrix(path, str(uid), np.asarray(x).T) for uid, x in obj.items()}


def read_meld(path: Path, obj) -> dict[str, np.ndarray]:
    out = {}
    for split, part in zip(MELD_SPLITS, obj):
        for key, x in part.items():
            dia, sep, utt = str(key).partition("_")
            if not (sep and dia.isdigit() and utt.isdigit()):
                raise ReleasedFeatureError(f"{path}: key {key!r} is not '{{dialogue}}_{{utterance}}'")
            uid = f"{split}_dia{int(dia)}_utt{int(utt)}"
            out[uid] = _matrix(path, uid, x)
    return out


def read_released(path: str | os.PathLike, modality: str,
                  cache: dict | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """(layout, ``{utterance_id: (length, dim) float32}``) for one modality of a released feature
    file; ``cache`` (path -> unpickled object) lets several modalities share one read."""
    if modality not in MODALITIES:
        raise ReleasedFeatureError(f"{path}: modality must be one of {MODALITIES}, not {modality!r}")
    path = Path(path)
    cache = {} if cache is None else cache
    if path not in cache:
        cache[path] = load_pickle(path)
    obj = cache[path]
    fmt = detect_format(obj)
    if fmt is None:
        raise ReleasedFeatureError(f"{path}: not a released feature layout this project reads ({', '.join(FORMATS)}; "
                                   f"found a {type(obj).__name__})")
    try:
        out = read_mmsa(path, obj, modality) if fmt == "mmsa" else \
            read_mustard(path, obj) if fmt == "mustard" else read_meld(path, obj)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError, OverflowError) as exc:
        # the content does not fit the layout (object arrays of lists, ragged ids, ...)
        raise ReleasedFeatureError(f"{path}: a {fmt} file whose content does not fit the layout: "
                                   f"{type(exc).__name__}: {exc}") from exc
    dims = {x.shape[1] for x in out.values()}
    if len(dims) > 1:
        raise ReleasedFeatureError(f"{path}: {modality} features of several widths {sorted(dims)}")
    if not out:
        raise ReleasedFeatureError(f"{path}: no utterance in the file")
    return fmt, out


class ReleasedFeaturizer:
    """One modality's released features, looked up by utterance id (the extractor's featurizer API)."""

    input = "ids"  # what ``extract_features._run_pass`` hands it

    def __init__(self, modality: str, path: str | os.PathLike, cache: dict | None = None):
        self.modality, self.path = modality, Path(path)
        cache = {} if cache is None else cache
        self.format, self.features = read_released(self.path, modality, cache)
        self.sha256 = sha256_file(self.path)
        obj = cache[self.path]
        self.ignored_splits = {s: MMSA_IGNORED_SPLITS[s] for s in MMSA_IGNORED_SPLITS
                               if self.format == "mmsa" and isinstance(obj, dict) and s in obj}

    @property
    def dim(self) -> int:
        return int(next(iter(self.features.values())).shape[1])

    def spec(self) -> dict[str, Any]:
        return {"name": "released", "file": str(self.path.resolve()), "sha256": self.sha256, "format": self.format,
                "dim": self.dim, **({"ignored_splits": self.ignored_splits} if self.ignored_splits else {})}

    def __call__(self, ids) -> list[np.ndarray]:
        return [self.features[i] for i in ids]
