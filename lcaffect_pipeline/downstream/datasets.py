"""Loaders for the downstream benchmarks, each from the folder its authors distribute.

Every loader returns one table in ``schema.UTTERANCES_SCHEMA`` (one row per utterance):

* CH-SIMS v2 (``load_chsims2``): ``label.csv`` (MMSA's name; the CH-SIMS v2 release calls it
  ``meta.csv`` or ``meta(s).csv``, all accepted, the first found in that order) with ``video_id, clip_id, text, label, label_T,
  label_A, label_V, annotation, mode``; media ``Raw/{video_id}/{clip_id}.mp4``. ``utterance_id`` is
  ``{video_id}_{clip_id}``; ``label`` the regression target in [-1, 1]; ``extra_labels`` JSON of
  ``label_T/label_A/label_V`` and ``annotation``. ``clip_id`` is read as text (its leading zeros
  are part of the file name); a ``label.csv`` re-saved by a spreadsheet without them is matched to
  the zero-padded file (4 or 5 digits).
* MELD (``load_meld``): ``{train,dev,test}_sent_emo.csv``; media ``dia{D}_utt{U}.mp4`` in the
  folders of the MELD.Raw release (``train_splits/``, ``dev_splits_complete/``,
  ``output_repeated_splits_test/``, each also accepted one level down under ``train/``, ``dev/``,
  ``test/``), or a plain ``{train,dev,test}/`` layout. ``utterance_id`` is
  ``{official split}_dia{D}_utt{U}`` (``dev_...`` for the dev file, whose ``split`` is ``valid``);
  ``label`` the index in ``MELD_EMOTIONS``; ``extra_labels`` has the sentiment and the episode
  coordinates; ``context`` the earlier turns of the same dialogue in the same split file (lower
  ``Utterance_ID``, oldest first; never a later turn).
* MUStARD (``load_mustard``): ``sarcasm_data.json``; media ``utterances_final/{id}.mp4``;
  ``label`` 1 sarcastic / 0 not; ``split`` "all" (the protocols are folds over speaker/show);
  ``context`` the entry's context utterances. Where the folder also has MUStARD's official 5
  stratified folds, ``fold`` is the fold that tests each utterance: from ``split_indices.p`` as
  MUStARD ships it (positions in sarcasm_data.json's key order, read by ``lcaffect_ml.released``'s
  restricted unpickler admitting only numeric NumPy arrays) and/or ``split_indices.json`` (the
  same written out as ids: ``{"folds": [{"train": [...], "test": [...]}, ...]}``). With both, they
  must give the same folds. The folds must partition the utterances (each tested once, trained on
  in the others); ``extra_labels["folds_file"]`` names the file they came from.

Text encoding (MELD's quirks): the annotation files are read as UTF-8 (a BOM is dropped); a file
that is not UTF-8 is read as cp1252 (MELD copies saved on Windows) or GB18030 (CH-SIMS). Text is
then repaired by two narrow rules, hand-written because ftfy (the general tool) is not a
dependency: C1 control characters such as ``"\\x92"`` (cp1252 bytes that went through latin-1)
become their cp1252 characters (``"\\x92"`` -> ``'’'``), and a string that reads as UTF-8 decoded
as cp1252 (``"â€™"``) is decoded back when that round trip is exact. The copy of MELD in
``../shared/data`` is clean UTF-8 (``’`` is U+2019, CRLF line ends): the rules change nothing there.

Media: a loader never fails for a missing media file; the row gets ``media_status`` "missing" and
``check_media`` applies the caller's policy. A media path that resolves outside the dataset folder
(``utterances_final`` or ``1_60.mp4`` symlinked elsewhere) is a ``DatasetError`` unless the caller
passes ``follow_symlinks`` (``DownstreamResource.follow_symlinks``). MELD's ``context`` keeps at
most ``protocols.MAX_CONTEXT_TURNS`` earlier turns, capped while it is collected; ids have at
most ``MAX_ID_DIGITS`` digits; an id listed twice in one fold of ``split_indices`` is refused. A malformed annotation file raises ``DatasetError``
naming the file, the row (or JSON entry) and the reason: a value that is not what its column
holds, an id that would put a media path outside the dataset folder (``../../etc/passwd``), a
duplicate CSV column, JSON key or utterance id, JSON nested too deeply. A split without any
utterance is reported (a warning naming the file, and ``lcaffect.empty_splits`` in the table's
schema metadata); a dataset without any utterance is an error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from lcaffect_ml.contracts.tables import UTTERANCES_SCHEMA
from .protocols import FoldsError, mustard_folds, with_preceding_turns

log = logging.getLogger(__name__)

MELD_EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
MELD_SENTIMENTS = ("neutral", "positive", "negative")
# Official split file -> the table's split, and the media folders each release layout uses.
MELD_SPLITS = {"train": "train", "dev": "valid", "test": "test"}
MELD_MEDIA_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
MELD_COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
                "Season", "Episode", "StartTime", "EndTime")
# The CH-SIMS v2 label file under the names its releases use: MMSA's, then the v2 release's.
CHSIMS_LABEL_FILES = ("label.csv", "meta.csv", "meta(s).csv")
CHSIMS_COLUMNS = ("video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode")
CHSIMS_MODES = {"train": "train", "valid": "valid", "val": "valid", "dev": "valid", "test": "test"}
MUSTARD_KEYS = ("utterance", "speaker", "context", "context_speakers", "show", "sarcasm")
SPLITS = ("train", "valid", "test", "all")
MEDIA_STATUSES = ("ok", "missing", "unreadable")
MEDIA_POLICIES = ("skip", "keep", "fail")  # what check_media does with media that are not ok
MAX_ID_DIGITS = 18  # an id column's integer fits int64 (MELD's are below 10,000)


class DatasetError(ValueError):
    """A downstream dataset cannot be used: names the dataset, the file and the reason."""

    def __init__(self, dataset: str, path: str | os.PathLike | None, reason: str):
        self.dataset, self.path, self.reason = dataset, None if path is None else str(path), reason
        where = f" ({self.path})" if self.path else ""
        super().__init__(f"{dataset}{where}: {reason}")


# ------------------------------------------------------------------------------ text


_C1 = re.compile("[\u0080-\u009f]")
_MOJIBAKE_HINT = re.compile("[ÂÃâ][\u0080-\u00ff\u0152-\u0192\u02c6-\u2122]")


def repair_text(text: str) -> str:
    """Undo the two encoding accidents seen in MELD copies (module doc); clean text is unchanged."""
    if _MOJIBAKE_HINT.search(text):
        try:
            text = text.encode("cp1252").decode("utf-8")
        except UnicodeError:
            pass  # not an exact round trip: the text is what it says
    if _C1.search(text):
        text = _C1.sub(_c1_to_cp1252, text)
    return text


def _c1_to_cp1252(m: re.Match) -> str:
    try:
        return bytes([ord(m.group())]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: undefined in cp1252
        return ""


def read_text_file(dataset: str, path: Path, fallback: str) -> str:
    """The file's text: UTF-8 (BOM dropped), else ``fallback`` with a warning."""
    if not path.is_file():
        raise DatasetError(dataset, path, "annotation file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning("%s is not UTF-8 (%s): reading it as %s", path, exc.reason, fallback)
    try:
        return data.decode(fallback)
    except UnicodeDecodeError as exc:
        raise DatasetError(dataset, path, f"neither UTF-8 nor {fallback}: {exc}") from None


def read_csv_rows(dataset: str, path: Path, columns: Iterable[str], fallback: str) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of strings; every column in ``columns`` must be in the header."""
    reader = csv.DictReader(io.StringIO(read_text_file(dataset, path, fallback), newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:  # DictReader would silently keep the last of them
        raise DatasetError(dataset, path, f"columns {twice} appear more than once in the header")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(dataset, path, f"missing columns {missing} (header: {header})")
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise DatasetError(dataset, path, f"CSV error at line {reader.line_num}: {exc}") from None
    for i, row in enumerate(rows):
        if None in row or any(row[c] is None for c in columns):  # too many / too few fields
            raise DatasetError(dataset, path, f"row {i + 2}: {len(header)} columns expected")
    return rows


# ------------------------------------------------------------------------------ table


def media_inside(dataset: str, root: Path, media: Path, follow_symlinks: bool) -> Path:
    """``media`` as it is, refusing (``DatasetError``) a path that resolves outside the dataset
    folder ``root`` (a media file or folder symlinked out of it) unless ``follow_symlinks``."""
    if not follow_symlinks:
        target, inside = media.resolve(), root.resolve()
        if not target.is_relative_to(inside):
            raise DatasetError(dataset, media, f"resolves to {target}, outside the dataset folder {inside}: a symlink "
                                               "out of the folder is refused (follow_symlinks: true allows it)")
    return media


def _media_status(path: Path) -> str:
    return "ok" if path.is_file() else "missing"


def utterance_row(dataset: str, utterance_id: str, split: str, text: str, label: float, media: Path, *,
                  label_name: str | None = None, extra: dict[str, Any] | None = None, speaker: str | None = None,
                  show: str | None = None, context: list[str] | None = None) -> dict[str, Any]:
    return {
        "dataset": dataset, "utterance_id": utterance_id, "split": split, "text": text, "label": float(label),
        "label_name": label_name, "extra_labels": None if extra is None else json.dumps(extra, ensure_ascii=False),
        "speaker": speaker, "show": show, "context": context, "media_path": str(media),
        "media_status": _media_status(media), "media_npz": None, "fold": None,
    }


def utterance_table(dataset: str, path: Path, rows: list[dict[str, Any]],
                    splits: dict[str, Path] | None = None) -> pa.Table:
    """The table of ``rows``; ``splits`` maps each split the dataset should have to its file."""
    ids = [r["utterance_id"] for r in rows]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise DatasetError(dataset, path, f"utterance id {dup!r} appears more than once")
    if not rows:
        raise DatasetError(dataset, path, "no utterances: every split is empty")
    present = {r["split"] for r in rows}
    empty = [s for s in (splits or {}) if s not in present]
    for split in empty:
        log.warning("%s (%s): split %r is empty (no utterances)", dataset, splits[split], split)
    table = pa.Table.from_pylist(rows, schema=UTTERANCES_SCHEMA)
    return table.replace_schema_metadata({b"lcaffect.empty_splits": json.dumps(empty).encode()}) if empty else table


def _unique_ids(dataset: str, path: Path, rows: list[dict[str, Any]], first_row: int = 2) -> None:
    """Refuse an utterance id seen twice in one annotation file, naming both rows."""
    seen: dict[str, int] = {}
    for i, r in enumerate(rows, start=first_row):
        if r["utterance_id"] in seen:
            raise DatasetError(dataset, path, f"row {i}: utterance id {r['utterance_id']!r} appears more than once "
                                              f"(first in row {seen[r['utterance_id']]})")
        seen[r["utterance_id"]] = i


def _path_part(dataset: str, path: Path, where: str, name: str, value: str) -> str:
    """``value`` as one file or folder name inside the dataset folder, or a ``DatasetError``."""
    if value in ("", ".", "..") or any(c in value for c in "/\\\0") or os.path.isabs(value):
        raise DatasetError(dataset, path, f"{where}: {name} {value!r} would put a media path outside the dataset folder")
    return value


def _number(dataset: str, path: Path, row: int, name: str, value: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DatasetError(dataset, path, f"row {row}: {name} {value!r} is not a number") from None
    if x != x:
        raise DatasetError(dataset, path, f"row {row}: {name} is NaN")
    return x


def _int_text(dataset: str, path: Path, row: int, name: str, value: str) -> str:
    """An id column holding an integer, as its canonical text ("07" -> "7", "3.0" is refused)."""
    value = value.strip()
    if not (value.isascii() and value.isdigit()):  # "²".isdigit() is true, int("²") fails
        raise DatasetError(dataset, path, f"row {row}: {name} {value[:40]!r} is not a non-negative integer")
    if len(value.lstrip("0")) > MAX_ID_DIGITS:  # int() refuses over 4,300 digits, untyped
        raise DatasetError(dataset, path, f"row {row}: {name} has {len(value)} digits, more than {MAX_ID_DIGITS}")
    return str(int(value))


# ------------------------------------------------------------------------------ CH-SIMS v2


def chsims2_label_file(root: Path) -> Path:
    """The label file of a CH-SIMS v2 folder, the first of ``CHSIMS_LABEL_FILES`` present."""
    found = [root / name for name in CHSIMS_LABEL_FILES if (root / name).is_file()]
    if not found:
        raise DatasetError("chsims2", root, f"no label file: none of {list(CHSIMS_LABEL_FILES)} in the folder")
    if len(found) > 1:
        log.warning("chsims2 (%s): several label files %s; reading %s", root, [p.name for p in found], found[0].name)
    return found[0]


def load_chsims2(root: str | os.PathLike, follow_symlinks: bool = False) -> pa.Table:
    """CH-SIMS v2 (supervised) from its folder: the label file + ``Raw/{video_id}/{clip_id}.mp4``."""
    root = Path(root)
    path = chsims2_label_file(root)
    rows = []
    for i, r in enumerate(read_csv_rows("chsims2", path, CHSIMS_COLUMNS, "gb18030"), start=2):
        vid, clip = r["video_id"].strip(), r["clip_id"].strip()
        if not vid or not clip:
            raise DatasetError("chsims2", path, f"row {i}: empty video_id or clip_id")
        _path_part("chsims2", path, f"row {i}", "video_id", vid)
        _path_part("chsims2", path, f"row {i}", "clip_id", clip)
        mode = CHSIMS_MODES.get(r["mode"].strip().lower())
        if mode is None:
            raise DatasetError("chsims2", path, f"row {i}: mode {r['mode']!r} is not train/valid/test")
        labels = {k: _number("chsims2", path, i, k, r[k]) for k in ("label", "label_T", "label_A", "label_V")}
        out_of_range = [k for k, v in labels.items() if not -1.0 <= v <= 1.0]
        if out_of_range:
            raise DatasetError("chsims2", path, f"row {i}: {out_of_range} outside [-1, 1]")
        extra = {k: labels[k] for k in ("label_T", "label_A", "label_V")} | {"annotation": r["annotation"].strip()}
        rows.append(utterance_row("chsims2", f"{vid}_{clip}", mode, repair_text(r["text"]), labels["label"],
                                  media_inside("chsims2", root, _chsims_media(root, vid, clip), follow_symlinks),
                                  label_name=r["annotation"].strip() or None,
                                  extra=extra))
    _unique_ids("chsims2", path, rows)
    return utterance_table("chsims2", path, rows, {s: path for s in ("train", "valid", "test")})


def _chsims_media(root: Path, video_id: str, clip_id: str) -> Path:
    official = root / "Raw" / video_id / f"{clip_id}.mp4"
    if official.is_file() or not clip_id.isdigit():
        return official
    for width in (4, 5):  # leading zeros lost by a spreadsheet round trip
        padded = root / "Raw" / video_id / f"{clip_id.zfill(width)}.mp4"
        if padded.is_file():
            return padded
    return official


# ------------------------------------------------------------------------------ MELD


def load_meld(root: str | os.PathLike, follow_symlinks: bool = False) -> pa.Table:
    """MELD from the MELD.Raw folder: the three ``*_sent_emo.csv`` and the split media folders."""
    root = Path(root)
    rows: list[dict[str, Any]] = []
    files = {split: root / f"{official}_sent_emo.csv" for official, split in MELD_SPLITS.items()}
    for official, split in MELD_SPLITS.items():
        path = files[split]
        media_dir = meld_media_dir(root, official)
        split_rows = [_meld_row(path, i, r, official, split, media_dir, follow_symlinks)
                      for i, r in enumerate(read_csv_rows("meld", path, MELD_COLUMNS, "cp1252"), start=2)]
        _unique_ids("meld", path, split_rows)
        rows += with_preceding_turns(split_rows)
    return utterance_table("meld", root, rows, files)


def meld_media_dir(root: Path, official: str) -> Path:
    """The folder holding a split's ``dia*_utt*.mp4`` (the release's name when none exists)."""
    name = MELD_MEDIA_DIRS[official]
    for candidate in (root / name, root / official / name, root / official):
        if candidate.is_dir():
            return candidate
    return root / name


def _meld_row(path: Path, i: int, r: dict[str, str], official: str, split: str, media_dir: Path,
              follow_symlinks: bool) -> dict[str, Any]:
    dia = _int_text("meld", path, i, "Dialogue_ID", r["Dialogue_ID"])
    utt = _int_text("meld", path, i, "Utterance_ID", r["Utterance_ID"])
    emotion, sentiment = r["Emotion"].strip().lower(), r["Sentiment"].strip().lower()
    if emotion not in MELD_EMOTIONS:
        raise DatasetError("meld", path, f"row {i}: emotion {r['Emotion']!r} is not one of {MELD_EMOTIONS}")
    if sentiment not in MELD_SENTIMENTS:
        raise DatasetError("meld", path, f"row {i}: sentiment {r['Sentiment']!r} is not one of {MELD_SENTIMENTS}")
    extra = {"sentiment": sentiment, "dialogue_id": int(dia), "utterance_id": int(utt), "season": r["Season"].strip(),
             "episode": r["Episode"].strip(), "start_time": r["StartTime"].strip(), "end_time": r["EndTime"].strip()}
    return utterance_row("meld", f"{official}_dia{dia}_utt{utt}", split, repair_text(r["Utterance"]),
                         MELD_EMOTIONS.index(emotion),
                         media_inside("meld", path.parent, media_dir / f"dia{dia}_utt{utt}.mp4", follow_symlinks),
                         label_name=emotion,
                         extra=extra, speaker=repair_text(r["Speaker"]).strip() or None)


# ------------------------------------------------------------------------------ MUStARD


def load_mustard(root: str | os.PathLike, follow_symlinks: bool = False) -> pa.Table:
    """MUStARD from its folder: ``sarcasm_data.json`` + ``utterances_final/{id}.mp4``."""
    root = Path(root)
    path = root / "sarcasm_data.json"
    try:
        data = json.loads(read_text_file("mustard", path, "cp1252"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise DatasetError("mustard", path, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise DatasetError("mustard", path, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise DatasetError("mustard", path, "not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise DatasetError("mustard", path, f"top level is a {type(data).__name__}, expected an object of utterances")
    rows = [_mustard_row(root, path, uid, entry, follow_symlinks) for uid, entry in data.items()]
    try:
        folds, source = mustard_folds(root, [r["utterance_id"] for r in rows])
    except FoldsError as exc:
        raise DatasetError("mustard", exc.path, str(exc)) from None
    for r in rows:
        r["fold"] = None if folds is None else folds[r["utterance_id"]]
        if source:  # per row, so the table's content (and version) says where its folds came from
            r["extra_labels"] = json.dumps({**json.loads(r["extra_labels"]), "folds_file": source}, ensure_ascii=False)
    return utterance_table("mustard", path, rows, {"all": path})


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key that appears twice (``json`` would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"key {key!r} appears more than once in one object")
        out[key] = value
    return out


def _mustard_row(root: Path, path: Path, uid: str, e: Any, follow_symlinks: bool) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise DatasetError("mustard", path, f"entry {uid!r} is a {type(e).__name__}, expected an object")
    _path_part("mustard", path, f"entry {uid!r}", "id", uid)
    missing = [k for k in MUSTARD_KEYS if k not in e]
    if missing:
        raise DatasetError("mustard", path, f"entry {uid!r} lacks {missing}")
    if not isinstance(e["sarcasm"], (bool, int)) or e["sarcasm"] not in (0, 1):
        raise DatasetError("mustard", path, f"entry {uid!r}: sarcasm {e['sarcasm']!r} is not true/false")
    texts = [e["utterance"], e["speaker"], e["show"], *e["context"], *e["context_speakers"]] \
        if isinstance(e["context"], list) and isinstance(e["context_speakers"], list) else None
    if texts is None or not all(isinstance(t, str) for t in texts):
        raise DatasetError("mustard", path, f"entry {uid!r}: utterance, speaker, show and context must be text")
    sarcastic = bool(e["sarcasm"])
    return utterance_row(
        "mustard", uid, "all", repair_text(e["utterance"]), 1.0 if sarcastic else 0.0,
        media_inside("mustard", root, root / "utterances_final" / f"{uid}.mp4", follow_symlinks), label_name="sarcastic" if sarcastic else "not_sarcastic",
        extra={"context_speakers": e["context_speakers"]}, speaker=e["speaker"], show=e["show"],
        context=[repair_text(t) for t in e["context"]])


# ------------------------------------------------------------------------------ dispatch + policy


LOADERS: dict[str, Callable[[str | os.PathLike, bool], pa.Table]] = {
    "chsims2": load_chsims2, "meld": load_meld, "mustard": load_mustard,
}


def load_dataset(name: str, root: str | os.PathLike, follow_symlinks: bool = False) -> pa.Table:
    """The loader for ``name`` (one of ``schema.DOWNSTREAM_TASKS``) applied to ``root``;
    ``follow_symlinks`` admits media symlinked out of the folder."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise DatasetError(name, None, f"unknown dataset (known: {sorted(LOADERS)})") from None
    if not Path(root).is_dir():
        raise DatasetError(name, root, "dataset folder not found")
    return loader(root, follow_symlinks)


@dataclass
class MediaReport:
    """Utterances whose media cannot be used, by status and split."""

    dataset: str
    policy: str
    total: int
    missing: list[str] = field(default_factory=list)  # utterance ids
    unreadable: list[str] = field(default_factory=list)
    per_split: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> status -> count
    kept: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "policy": self.policy, "total": self.total, "kept": self.kept,
                "missing": len(self.missing), "unreadable": len(self.unreadable), "per_split": self.per_split,
                "first_missing": self.missing[:10], "first_unreadable": self.unreadable[:10]}


def check_media(table: pa.Table, policy: str = "skip") -> tuple[pa.Table, MediaReport]:
    """Apply a policy to utterances whose media is "missing" or "unreadable".

    ``skip``: drop them (the table keeps only usable media); ``keep``: keep every row, only report
    (text-only work); ``fail``: raise ``DatasetError`` naming the dataset, how many and the first
    few files when there is any.
    """
    if policy not in MEDIA_POLICIES:
        raise ValueError(f"unknown media policy {policy!r} ({' | '.join(MEDIA_POLICIES)})")
    dataset = ",".join(sorted(set(table.column("dataset").to_pylist()))) or "?"
    rows = table.select(["utterance_id", "split", "media_status", "media_path"]).to_pylist()
    report = MediaReport(dataset, policy, table.num_rows)
    bad_paths = []
    for r in rows:
        counts = report.per_split.setdefault(r["split"], {s: 0 for s in MEDIA_STATUSES})
        counts[r["media_status"]] = counts.get(r["media_status"], 0) + 1
        if r["media_status"] != "ok":
            (report.missing if r["media_status"] == "missing" else report.unreadable).append(r["utterance_id"])
            bad_paths.append(r["media_path"])
    ok = pc.equal(table.column("media_status"), "ok")
    if policy == "fail" and bad_paths:
        raise DatasetError(dataset, None, f"{len(report.missing)} of {table.num_rows} media files missing and "
                                          f"{len(report.unreadable)} unreadable, e.g. {bad_paths[:5]}")
    out = table.filter(ok) if policy == "skip" else table
    report.kept = out.num_rows
    if bad_paths:
        log.warning("%s: %d missing and %d unreadable media of %d (policy %s)", dataset, len(report.missing),
                    len(report.unreadable), table.num_rows, policy)
    return out, report
