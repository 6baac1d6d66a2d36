"""The released-feature reader (``released_pickle``) against hostile pickles (issue 26 item 3): no dtype or array that can
carry object pointers, nothing built larger than the file before it is refused, bounded nesting,
and every refusal a ``ReleasedFeatureError``; a fuzz of mutated pickles of the three layouts runs
in a subprocess, so a crash or a memory blow-up is seen."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lcaffect_ml import released_pickle
from lcaffect_ml.released import read_released
from lcaffect_ml.released_pickle import ReleasedFeatureError, load_pickle

RECONSTRUCT = np._core.multiarray._reconstruct


class _Reduce:
    """Pickles as ``func(*args)`` with an optional ``BUILD`` state: hand-built hostile pickles."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _object_field_dtype():
    """A void dtype whose state declares an object field with the flags cleared."""
    return _Reduce(np.dtype, ("V16", False, True), (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 16, 1, 0))


HOSTILE = {
    # raw bytes read as object pointers: SIGSEGV on the earlier reader
    "object_field_dtype": _Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"),
                                  (1, (2,), _object_field_dtype(), False, b"A" * 32)),
    "bytearray_count": _Reduce(bytearray, (2 << 30,)),  # 48 bytes -> 2 GiB
    "zero_strides": _Reduce(np.ndarray, ((1 << 28,), np.dtype("f8"), b"\0" * 8, 0, (0,))),  # 8 bytes -> 2 GiB view
    "huge_shape": _Reduce(RECONSTRUCT, (np.ndarray, (1 << 40,), b"b")),
    "short_data": _Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (1 << 20,), np.dtype("f4"), False, b"\0" * 8)),
    "list_from_bytes": _Reduce(list, (b"x" * 1000,)),
    "subclass": _Reduce(RECONSTRUCT, (np.ma.MaskedArray, (0,), b"b")),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_constructions_are_refused_before_building(tmp_path: Path, name: str):
    path = tmp_path / "audio_features.p"
    path.write_bytes(pickle.dumps({"1_1": HOSTILE[name]}, protocol=2))
    with pytest.raises(ReleasedFeatureError, match=rf"^{path}: refused"):
        load_pickle(path)


def test_big_length_fields_and_deep_nesting_are_refused(tmp_path: Path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b".")  # BINBYTES8 of 1 TiB
    with pytest.raises(ReleasedFeatureError, match=r"claims 1099511627776 bytes, 1 are left in the file"):
        load_pickle(path)
    path.write_bytes(b"\x80\x05\x96" + (3 << 30).to_bytes(8, "little") + b".")  # BYTEARRAY8 allocates first
    with pytest.raises(ReleasedFeatureError, match=r"refused a bytearray of 3221225472 bytes: larger than the file"):
        load_pickle(path)
    depth = 200_000  # EMPTY_LIST x n, APPEND x n-1: a list nested 200k deep in 400 KB
    path.write_bytes(b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")
    with pytest.raises(ReleasedFeatureError, match=rf"nested more than {released_pickle.MAX_DEPTH} deep"):
        load_pickle(path)


def test_opcode_budget(tmp_path: Path, monkeypatch):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"1_1": np.ones((2, 3))}, protocol=2))
    assert load_pickle(path)["1_1"].shape == (2, 3)
    monkeypatch.setattr(released_pickle, "MAX_OPCODES", 10)
    with pytest.raises(ReleasedFeatureError, match=r"refused a pickle of more than 10 opcodes"):
        load_pickle(path)


def test_content_that_does_not_fit_the_layout_is_a_released_feature_error(tmp_path: Path):
    path = tmp_path / "audio_features.p"
    ragged = np.empty(2, dtype=object)
    ragged[:] = [[1.0, 2.0], [3.0]]
    path.write_bytes(pickle.dumps({"1_1": ragged}, protocol=2))
    with pytest.raises(ReleasedFeatureError, match=r"mustard file whose content does not fit"):
        read_released(path, "audio")
    path.write_bytes(pickle.dumps({"train": {"id": 5, "audio": np.ones((1, 2, 3))}}, protocol=2))
    with pytest.raises(ReleasedFeatureError, match=r"mmsa file whose content does not fit"):
        read_released(path, "audio")


def test_object_dtype_refused_where_numbers_only(tmp_path: Path):
    path = tmp_path / "split_indices.p"
    path.write_bytes(pickle.dumps([np.array(["a", 1], dtype=object)], protocol=2))
    with pytest.raises(ReleasedFeatureError, match=r"refused an array of dtype object"):
        load_pickle(path, released_pickle.NUMPY_ARRAY_GLOBALS, object_arrays=False)


_FUZZ = r"""
import json, pickle, random, sys
from collections import OrderedDict
from pathlib import Path
import numpy as np
from lcaffect_ml.released import read_released
from lcaffect_ml.released_pickle import ReleasedFeatureError

rng = np.random.default_rng(0)
f32 = lambda *s: rng.normal(size=s).astype(np.float32)
valid = [
    {"train": {"id": np.array(["v1$_$1", "v1$_$2"], dtype=object), "audio": f32(2, 4, 3),
               "audio_lengths": [4, 2], "text": f32(2, 3, 2), "vision": f32(2, 2, 2)},
     "valid": {"id": ["v2$_$1"], "audio": f32(1, 4, 3), "audio_lengths": [3]}},
    OrderedDict([("1_60", f32(5, 3).astype(np.float64)), ("2_7", f32(5, 2).astype(np.float64))]),
    ({"0_1": f32(4), "1_2": f32(4)}, {"0_0": f32(4)}, {"3_1": np.float32(1.5) * f32(4)}),
]
blobs = [pickle.dumps(v, protocol=p) for v in valid for p in (2, 4, 5)]
n, out, path = int(sys.argv[1]), {"ok": 0, "refused": 0}, Path(sys.argv[2])
r = random.Random(1)
for case in range(n):
    data = bytearray(r.choice(blobs))
    for _ in range(r.randint(1, 6)):
        i = r.randrange(len(data))
        kind = r.random()
        if kind < 0.6:
            data[i] = r.randrange(256)
        elif kind < 0.8:
            data[i:i] = bytes([r.randrange(256)])
        else:
            del data[i]
    path.write_bytes(bytes(data))
    try:
        read_released(path, "audio")
        out["ok"] += 1
    except ReleasedFeatureError:
        out["refused"] += 1
    except BaseException as exc:
        print(json.dumps({"case": case, "error": f"{type(exc).__name__}: {exc}"[:300]}))
        sys.exit(1)
# this process's peak (VmHWM: ru_maxrss would carry over the forking pytest's peak across exec)
out["maxrss_mib"] = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))) / 1024
print(json.dumps(out))
"""


def _fuzz(tmp_path: Path, cases: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _FUZZ, str(cases), str(tmp_path / "fuzz.p")],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])  # < 0: a signal
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["ok"] + result["refused"] == cases and result["refused"] > cases // 4
    assert result["maxrss_mib"] < 512
    return result


def test_fuzzed_pickles_only_load_or_raise_released_feature_error(tmp_path: Path):
    _fuzz(tmp_path, 300)


@pytest.mark.slow
def test_fuzz_ten_thousand(tmp_path: Path):
    _fuzz(tmp_path, 10_000)
