"""Feature files on disk: the inputs of extraction (the utterance table, prepared media, cache
fingerprints) and the features folder it writes, read back with its versions checked
(``lcaffect_ml.contracts.tables`` §1-§3). ``lcaffect_ml.features`` re-exports every name here.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .contracts.hashing import sha256_file
from .contracts.tables import BASE_FILE, EXTRACT_COLUMNS, LC_FILE, MEDIA_ARRAYS, META_FILE, SAMPLE_RATE


class MediaFormatError(ValueError):
    """A prepared media file (npz) is unreadable or does not follow the contract."""


class FeatureFileError(ValueError):
    """A features folder is incomplete, or its files come from different extractions."""


# ------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Utterance:
    utterance_id: str
    text: str
    media_npz: str | None  # resolved path, None when the media could not be prepared
    media_status: str
    context: tuple[str, ...] = ()  # the text before the utterance, oldest first (contracts.tables §1)


@dataclass(frozen=True)
class Media:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB
    frame_times_ms: np.ndarray  # int64 (T,)
    audio: np.ndarray  # float32 (N,), 16 kHz mono; N may be 0 (no audio track)
    sr: int


def read_utterances(path: str | os.PathLike) -> list[Utterance]:
    """The utterance table (Parquet; ``lcaffect_ml.contracts.tables`` §1, docs/ARCHITECTURE.md), in file order.

    A relative ``media_npz`` is resolved against the table's folder, so a dataset folder can move.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=[*EXTRACT_COLUMNS, *(["context"] if "context" in names else [])])
    except (OSError, ValueError, KeyError) as exc:  # pyarrow raises ArrowInvalid (a ValueError)
        raise FeatureFileError(f"{path}: cannot read the utterance table: {exc}") from exc
    rows = table.to_pylist()
    ids = [r["utterance_id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise FeatureFileError(f"{path}: duplicate utterance_id(s) {dup}")
    out = []
    for r in rows:
        npz = r["media_npz"]
        if npz is not None and not Path(npz).is_absolute():
            npz = str(path.parent / npz)
        out.append(Utterance(r["utterance_id"], r["text"] or "", npz, r["media_status"] or "",
                             tuple(t or "" for t in r.get("context") or ())))
    return out


def load_media(path: str | os.PathLike) -> Media:
    """Read and validate one prepared media file (``lcaffect_ml.contracts.tables`` §2); never unpickles."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in MEDIA_ARRAYS if k not in npz.files]
            if missing:
                raise MediaFormatError(f"{path}: missing array(s) {missing}")
            frames, times, audio, sr = (npz[k] for k in MEDIA_ARRAYS)
    except MediaFormatError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise MediaFormatError(f"{path}: not a readable npz file ({exc})") from exc
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise MediaFormatError(f"{path}: frames must be uint8 (T>0, H, W, 3), got {frames.dtype} {frames.shape}")
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise MediaFormatError(f"{path}: audio must be a 1-D float array, got {audio.dtype} {audio.shape}")
    if int(sr) != SAMPLE_RATE:
        raise MediaFormatError(f"{path}: audio sample rate {int(sr)} Hz, expected {SAMPLE_RATE}")
    if audio.size and not np.isfinite(audio).all():
        raise MediaFormatError(f"{path}: audio holds NaN/inf samples")
    return Media(frames, times.astype(np.int64), audio.astype(np.float32, copy=False), int(sr))


def media_fingerprint(path: str | None) -> str:
    """Size and modification time of a media file: a cheap cache key (re-reading every npz to hash
    it would cost as much I/O as extraction); files are written atomically, so a rewrite changes it."""
    if path is None:
        return "none"
    try:
        st = os.stat(path)
    except OSError:
        return "absent"
    return f"{st.st_size}:{st.st_mtime_ns}"


def digest(obj: Any) -> str:
    """sha256 of a JSON-serialisable object (sorted keys): cache keys and versions."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def local_weights_digest(name: str) -> str | None:
    """For a model given as a local folder, a hash of its weight files (so retrained weights under
    the same path invalidate the cache); None for hub names (their revision is the name)."""
    folder = Path(name)
    if not folder.is_dir():
        return None

    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    return digest([[p.name, sha256_file(p)] for p in files])


# -------------------------------------------------------------------------------- reading




def load_features(features_dir: str | os.PathLike, with_lc: bool = True) -> dict[str, Any]:
    """Read a features folder and check that its files belong together.

    Each safetensors file records the version it was written for (its one metadata key,
    ``version``); a reader that races a re-extraction, or a folder assembled by hand, would
    otherwise pair rows of one extraction with the ids of another. Returns ``features.json``'s
    content plus ``"base"`` (and ``"lc"``): dicts of tensors.
    """
    from safetensors import safe_open

    folder = Path(features_dir)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatureFileError(f"{meta_path}: cannot read ({exc})") from exc
    parts = [("base", BASE_FILE, meta.get("base_version"))]
    if with_lc:
        parts.append(("lc", LC_FILE, meta.get("lc_version")))
    n = len(meta.get("utterance_ids", []))
    for key, name, version in parts:
        path = folder / name
        try:
            with safe_open(str(path), framework="pt") as fh:
                written = (fh.metadata() or {}).get("version")
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own error types and OSError
            raise FeatureFileError(f"{path}: cannot read ({exc})") from exc
        if written != version:
            raise FeatureFileError(f"{path}: written for version {written}, but {meta_path} says {version} "
                                   "(an extraction is in progress or the folder is mixed)")
        bad = {k: tuple(v.shape) for k, v in tensors.items() if v.shape[0] != n}
        if bad:
            raise FeatureFileError(f"{path}: {bad} rows, {meta_path} lists {n} utterances")
        meta[key] = tensors
    return meta
