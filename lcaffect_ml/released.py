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

These are pickles, read through ``released_pickle.load_pickle``: a restricted unpickler that admits
only NumPy arrays and plain containers and bounds what a pickle may build.

The CH-SIMS v2 pickle (``ch-simsv2s.pkl``) also has a ``train_mix`` split: the authors' loader
(thuiar/ch-sims-v2 ``data/load_data.py``) feeds it to their semi-supervised AV-MC(Semi) only,
as the labelled train clips followed by the unlabelled CH-SIMS v2(u) clips with a ``mask``
marking the labelled ones. The supervised benchmark this project runs uses train/valid/test, so
``train_mix`` is read past and not used; ``features.json`` records that (``ignored_splits``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .contracts.hashing import sha256_file
from .released_pickle import ReleasedFeatureError, load_pickle

MODALITIES = ("text", "audio", "visual")
FORMATS = ("mmsa", "mustard", "meld")
MMSA_SPLITS = ("train", "valid", "test")
# MMSA-layout splits read past, with the reason features.json records (see the module doc)
MMSA_IGNORED_SPLITS = {"train_mix": "CH-SIMS v2's semi-supervised split (the labelled train clips plus the "
                                    "unlabelled CH-SIMS v2(u) clips, for AV-MC(Semi)): not used by the supervised "
                                    "benchmark, whose train/valid/test splits are read"}
MMSA_KEYS = {"text": "text", "audio": "audio", "visual": "vision"}
MELD_SPLITS = ("train", "dev", "test")  # the order of the released triples (train, val, test)

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
