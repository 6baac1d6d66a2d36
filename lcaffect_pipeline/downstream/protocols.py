"""The benchmarks' protocols as the loaders (``datasets``) record them in the utterance table:
MUStARD's official cross-validation folds (``fold``) and MELD's dialogue context (``context``).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any

from lcaffect_ml.contracts.tables import MAX_CONTEXT_TURNS

MUSTARD_FOLDS_FILE = "split_indices.json"
# The folds as MUStARD ships them (``data/split_indices.p``): a Python 2 protocol-2 pickle of a
# list of (train, test) pairs of int64 NumPy arrays, positions in the key order of sarcasm_data.json.
MUSTARD_FOLDS_PICKLE = "split_indices.p"


def with_preceding_turns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's ``context``: the texts of the earlier turns of its dialogue, oldest first, at
    most the last ``MAX_CONTEXT_TURNS``.

    Ordered by ``Utterance_ID``, not by row position, so a file whose rows are not in dialogue
    order still never gives an utterance a later turn."""
    dialogues: dict[int, list[tuple[int, str]]] = {}
    keys = []
    for r in rows:
        extra = json.loads(r["extra_labels"])
        keys.append((extra["dialogue_id"], extra["utterance_id"]))
        dialogues.setdefault(extra["dialogue_id"], []).append((extra["utterance_id"], r["text"]))
    for turns in dialogues.values():
        turns.sort()
    for r, (dia, utt) in zip(rows, keys):
        turns = dialogues[dia]
        end = bisect.bisect_left(turns, (utt,))  # the first turn at or after this one
        r["context"] = [text for _utt, text in turns[max(0, end - MAX_CONTEXT_TURNS):end]]
    return rows


class FoldsError(ValueError):
    """A folds file that does not give each utterance exactly one test fold (the reason; ``path``
    the file, where known)."""

    def __init__(self, reason: str, path: Path | None = None):
        super().__init__(reason)
        self.path = path


FOLDS_SHAPE = '{"folds": [{"train": [ids], "test": [ids]}, ...]}'


def mustard_official_folds(data: Any, ids: list[str]) -> dict[str, int]:
    """utterance id -> the official fold that tests it, from the parsed ``split_indices.json``.
    Refuses (``FoldsError``) folds that do not partition ``ids``: an id missing, tested twice,
    unknown, or trained on in its own test fold."""
    folds = data.get("folds") if isinstance(data, dict) else None
    if not isinstance(folds, list) or len(folds) < 2:
        raise FoldsError(f"not a folds file {FOLDS_SHAPE} with at least 2 folds")
    known, fold_of = set(ids), {}
    for k, fold in enumerate(folds):
        if not isinstance(fold, dict) or not all(isinstance(fold.get(p), list) for p in ("train", "test")):
            raise FoldsError(f"fold {k}: needs `train` and `test` lists of utterance ids")
        train, test = [str(u) for u in fold["train"]], [str(u) for u in fold["test"]]
        for part, listed in (("train", train), ("test", test)):
            if len(set(listed)) != len(listed):
                seen: set[str] = set()
                dup = next(u for u in listed if u in seen or seen.add(u))
                raise FoldsError(f"fold {k}: {part} lists utterance {dup!r} more than once")
        unknown = sorted((set(train) | set(test)) - known)
        if unknown:
            raise FoldsError(f"fold {k}: ids not in sarcasm_data.json: {unknown[:5]}")
        for uid in test:
            if uid in fold_of:
                raise FoldsError(f"utterance {uid!r} is tested in folds {fold_of[uid]} and {k}")
            fold_of[uid] = k
        if set(train) != known - set(test):
            raise FoldsError(f"fold {k}: train is not every utterance outside its test set")
    if len(fold_of) != len(known):
        raise FoldsError(f"{len(known) - len(fold_of)} utterances are tested in no fold, "
                         f"e.g. {sorted(known - set(fold_of))[:5]}")
    return fold_of


def mustard_pickle_folds(obj: Any, ids: list[str]) -> dict[str, Any]:
    """The parsed ``split_indices.p`` (``[(train positions, test positions), ...]``) as the
    ``split_indices.json`` structure of utterance ids, ``ids`` being sarcasm_data.json's keys in
    file order; ``FoldsError`` for another shape or a position outside ``ids``."""
    import numpy as np

    if not isinstance(obj, (list, tuple)):
        raise FoldsError(f"not a list of (train, test) index arrays (found a {type(obj).__name__})")
    folds = []
    for k, pair in enumerate(obj):
        arrays = [np.asarray(a) for a in pair] if isinstance(pair, (list, tuple)) and len(pair) == 2 else []
        if not arrays or not all(a.ndim == 1 and a.dtype.kind in "iu" for a in arrays):
            raise FoldsError(f"fold {k}: not a (train, test) pair of 1-D integer index arrays")
        bad = [int(i) for a in arrays for i in a if not 0 <= i < len(ids)]
        if bad:
            raise FoldsError(f"fold {k}: positions {bad[:5]} outside sarcasm_data.json's {len(ids)} utterances")
        folds.append({part: [ids[int(i)] for i in a] for part, a in zip(("train", "test"), arrays)})
    return {"folds": folds}


def mustard_folds(root: Path, ids: list[str]) -> tuple[dict[str, int] | None, str | None]:
    """MUStARD's official folds and the file they came from (``split_indices.p`` where present,
    checked against ``split_indices.json`` where both are), else (None, None)."""
    pickled, listed = root / MUSTARD_FOLDS_PICKLE, root / MUSTARD_FOLDS_FILE
    folds = {p.name: _folds_from(p, ids) for p in (pickled, listed) if p.is_file()}
    if len(folds) == 2 and folds[pickled.name] != folds[listed.name]:
        differ = sorted(u for u in ids if folds[pickled.name][u] != folds[listed.name][u])
        raise FoldsError(f"gives other folds than {listed} for {len(differ)} utterances (e.g. {differ[:3]}): "
                         "remove the one that is not MUStARD's", pickled)
    source = next(iter(folds), None)
    return (folds[source], source) if source else (None, None)


def _folds_from(path: Path, ids: list[str]) -> dict[str, int]:
    """utterance id -> test fold, from ``split_indices.p`` or ``split_indices.json``."""
    from lcaffect_ml.released_pickle import NUMPY_ARRAY_GLOBALS, ReleasedFeatureError, load_pickle

    try:
        if path.name == MUSTARD_FOLDS_PICKLE:
            data = mustard_pickle_folds(load_pickle(path, NUMPY_ARRAY_GLOBALS, object_arrays=False), ids)
        else:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        return mustard_official_folds(data, ids)
    except FoldsError as exc:
        raise FoldsError(str(exc), path) from None
    except ReleasedFeatureError as exc:  # its message starts with the path
        raise FoldsError(f"not a folds pickle: {str(exc).removeprefix(f'{path}: ')}", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FoldsError(f"not a folds file: not valid JSON ({exc})", path) from None
