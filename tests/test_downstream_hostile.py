"""Downstream loaders on hostile annotation files: every bad value is a DatasetError naming the
file and the row (or entry), never a bare ValueError/RecursionError or a path out of the folder."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lcaffect_pipeline.downstream import DatasetError, load_chsims2, load_meld, load_mustard
from lcaffect_pipeline.downstream.datasets import CHSIMS_COLUMNS, MELD_COLUMNS

MELD_ROW = {"Sr No.": "1", "Utterance": "Hi.", "Speaker": "Joey", "Emotion": "joy", "Sentiment": "positive",
            "Dialogue_ID": "0", "Utterance_ID": "0", "Season": "1", "Episode": "1", "StartTime": "a", "EndTime": "b"}
CHSIMS_ROW = {"video_id": "v1", "clip_id": "0001", "text": "开心", "label": "0.6", "label_T": "0.8", "label_A": "0.4",
              "label_V": "0.6", "annotation": "Positive", "mode": "train"}
MUSTARD_ENTRY = {"utterance": "Sure.", "speaker": "SHELDON", "context": ["Hi"], "context_speakers": ["LEONARD"],
                 "show": "BBT", "sarcasm": True}


def _csv(path: Path, columns, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([[r[c] for c in columns] for r in rows])
    return path


def _meld(root: Path, train: list[dict], dev: list[dict] | None = None, test: list[dict] | None = None) -> Path:
    for name, rows in (("train", train), ("dev", dev or [MELD_ROW]), ("test", test or [MELD_ROW])):
        _csv(root / f"{name}_sent_emo.csv", MELD_COLUMNS, rows)
    return root


def test_a_meld_id_that_is_a_unicode_digit_names_file_and_row(tmp_path: Path) -> None:
    _meld(tmp_path, [MELD_ROW, {**MELD_ROW, "Dialogue_ID": "²"}])
    with pytest.raises(DatasetError, match=r"train_sent_emo\.csv.*row 3: Dialogue_ID '²' is not a non-negative integer"):
        load_meld(tmp_path)


def test_deeply_nested_mustard_json_is_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "sarcasm_data.json").write_text('{"1": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"sarcasm_data\.json.*nested too deeply"):
        load_mustard(tmp_path)


@pytest.mark.parametrize("uid", ["../../../../etc/passwd", "..", "a/b", "/etc/passwd", "a\\..\\b", "x\x00y"])
def test_a_mustard_id_that_leaves_the_folder_is_refused(tmp_path: Path, uid: str) -> None:
    (tmp_path / "sarcasm_data.json").write_text(json.dumps({"1_1": MUSTARD_ENTRY, uid: MUSTARD_ENTRY}), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"sarcasm_data\.json.*entry .*outside the dataset folder"):
        load_mustard(tmp_path)


@pytest.mark.parametrize(("column", "value"), [("video_id", "../../../../etc"), ("clip_id", "../../../etc/passwd"),
                                               ("video_id", ".."), ("clip_id", "a/b")])
def test_a_chsims_id_that_leaves_the_folder_is_refused(tmp_path: Path, column: str, value: str) -> None:
    _csv(tmp_path / "label.csv", CHSIMS_COLUMNS, [CHSIMS_ROW, {**CHSIMS_ROW, column: value}])
    with pytest.raises(DatasetError, match=rf"label\.csv.*row 3: {column} .*outside the dataset folder"):
        load_chsims2(tmp_path)


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "sarcasm_data.json"
    entry = json.dumps(MUSTARD_ENTRY)
    path.write_text(f'{{"1_1": {entry}, "1_1": {entry}}}', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"sarcasm_data\.json.*key '1_1' appears more than once"):
        load_mustard(tmp_path)
    path.write_text('{"1_1": {"utterance": "a", "utterance": "b"}}', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"key 'utterance' appears more than once"):
        load_mustard(tmp_path)
    with open(tmp_path / "label.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([[*CHSIMS_COLUMNS, "label"], [*CHSIMS_ROW.values(), "0.1"]])
    with pytest.raises(DatasetError, match=r"label\.csv.*columns \['label'\] appear more than once"):
        load_chsims2(tmp_path)
    _meld(tmp_path / "meld", [MELD_ROW, MELD_ROW])
    with pytest.raises(DatasetError, match=r"train_sent_emo\.csv.*row 3: utterance id 'train_dia0_utt0' appears more than once \(first in row 2\)"):
        load_meld(tmp_path / "meld")


def test_an_empty_split_is_reported_and_an_empty_dataset_refused(tmp_path: Path, caplog) -> None:
    _csv(tmp_path / "label.csv", CHSIMS_COLUMNS, [CHSIMS_ROW, {**CHSIMS_ROW, "clip_id": "2", "mode": "valid"}])
    with caplog.at_level(logging.WARNING):
        table = load_chsims2(tmp_path)
    assert json.loads(table.schema.metadata[b"lcaffect.empty_splits"]) == ["test"]
    assert any("split 'test' is empty" in r.getMessage() and "label.csv" in r.getMessage() for r in caplog.records)
    _csv(tmp_path / "label.csv", CHSIMS_COLUMNS, [])
    with pytest.raises(DatasetError, match=r"label\.csv.*no utterances"):
        load_chsims2(tmp_path)
    meld = tmp_path / "meld"
    _meld(meld, [MELD_ROW])
    _csv(meld / "dev_sent_emo.csv", MELD_COLUMNS, [])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        table = load_meld(meld)
    assert json.loads(table.schema.metadata[b"lcaffect.empty_splits"]) == ["valid"]
    assert any("dev_sent_emo.csv" in r.getMessage() and "'valid' is empty" in r.getMessage() for r in caplog.records)


_ANY = st.text(max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(MELD_COLUMNS), _ANY)
@example("Utterance_ID", "0")
def test_any_bad_meld_value_names_file_and_row(tmp_path: Path, column: str, value: str) -> None:
    _meld(tmp_path, [MELD_ROW, {**MELD_ROW, "Utterance_ID": "1", column: value}])
    try:
        load_meld(tmp_path)
    except DatasetError as exc:
        assert "train_sent_emo.csv" in str(exc) and "row 3" in str(exc), exc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(CHSIMS_COLUMNS), _ANY)
@example("clip_id", "0001")
def test_any_bad_chsims_value_names_file_and_row(tmp_path: Path, column: str, value: str) -> None:
    _csv(tmp_path / "label.csv", CHSIMS_COLUMNS, [CHSIMS_ROW, {**CHSIMS_ROW, "clip_id": "0002", column: value}])
    try:
        table = load_chsims2(tmp_path)
    except DatasetError as exc:
        assert "label.csv" in str(exc) and "row 3" in str(exc), exc
    else:
        assert all(str(tmp_path) in p for p in table.column("media_path").to_pylist())


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _ANY,
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_ANY, kids, max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_ANY, st.sampled_from([*MUSTARD_ENTRY, "whole"]), _JSON)
def test_any_bad_mustard_value_names_file_and_entry(tmp_path: Path, uid: str, key: str, value) -> None:
    entry = value if key == "whole" else {**MUSTARD_ENTRY, key: value}
    (tmp_path / "sarcasm_data.json").write_text(json.dumps({"1_1": MUSTARD_ENTRY, uid: entry}), encoding="utf-8")
    try:
        table = load_mustard(tmp_path)
    except DatasetError as exc:
        assert "sarcasm_data.json" in str(exc) and ("entry" in str(exc) or "more than once" in str(exc)), exc
    else:
        assert all(p.startswith(str(tmp_path / "utterances_final") + "/") for p in table.column("media_path").to_pylist())


def test_one_long_meld_dialogue_keeps_a_capped_context_in_bounded_memory(tmp_path: Path) -> None:
    """8,000 turns of one dialogue (700 KB): every earlier turn per row reached 5.7 GiB; the cap is
    applied while collecting, so the table holds rows x MAX_CONTEXT_TURNS turns at most."""
    import tracemalloc

    from lcaffect_ml.contracts.tables import MAX_CONTEXT_TURNS

    n = 8_000
    _meld(tmp_path, [{**MELD_ROW, "Sr No.": str(i + 1), "Utterance_ID": str(i), "Utterance": f"turn number {i} " * 4}
                     for i in range(n)])
    tracemalloc.start()
    table = load_meld(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows = {r["utterance_id"]: r["context"] for r in table.select(["utterance_id", "context"]).to_pylist()}
    assert rows["train_dia0_utt0"] == [] and len(rows["train_dia0_utt5"]) == 5
    last = rows[f"train_dia0_utt{n - 1}"]
    assert len(last) == MAX_CONTEXT_TURNS and last[-1].startswith(f"turn number {n - 2} ")  # the most recent turns
    assert table.nbytes < 100 << 20 and peak < 400 << 20, (table.nbytes, peak)


def test_a_meld_id_of_thousands_of_digits_is_a_dataset_error(tmp_path: Path) -> None:
    _meld(tmp_path, [MELD_ROW, {**MELD_ROW, "Dialogue_ID": "7" * 5_000}])
    with pytest.raises(DatasetError, match=r"train_sent_emo\.csv.*row 3: Dialogue_ID has 5000 digits, more than 18"):
        load_meld(tmp_path)


def _outside_video(tmp_path: Path) -> Path:
    secret = tmp_path / "elsewhere" / "secret.mp4"
    secret.parent.mkdir()
    secret.write_bytes(b"not the dataset's")
    return secret


def test_media_symlinked_out_of_the_dataset_folder_is_refused(tmp_path: Path) -> None:
    """``utterances_final`` or one ``1_60.mp4`` symlinked elsewhere was reported as media "ok"."""
    root = tmp_path / "mustard"
    root.mkdir()
    (root / "sarcasm_data.json").write_text(json.dumps({"1_60": MUSTARD_ENTRY}), encoding="utf-8")
    secret = _outside_video(tmp_path)
    (root / "utterances_final").mkdir()
    (root / "utterances_final" / "1_60.mp4").symlink_to(secret)
    with pytest.raises(DatasetError, match=r"1_60\.mp4\): resolves to .*secret\.mp4, outside the dataset folder"):
        load_mustard(root)
    (root / "utterances_final" / "1_60.mp4").unlink()
    (root / "utterances_final").rmdir()
    (root / "utterances_final").symlink_to(secret.parent)
    with pytest.raises(DatasetError, match=r"outside the dataset folder .*follow_symlinks: true allows it"):
        load_mustard(root)
    (secret.parent / "1_60.mp4").write_bytes(b"x")
    assert load_mustard(root, follow_symlinks=True)["media_status"].to_pylist() == ["ok"]  # the documented option
    inside = tmp_path / "meld"
    _meld(inside, [MELD_ROW])
    (inside / "train_splits").mkdir()
    (inside / "train_splits" / "dia0_utt0.mp4").symlink_to(secret)
    with pytest.raises(DatasetError, match=r"dia0_utt0\.mp4\): resolves to .*outside the dataset folder"):
        load_meld(inside)


def test_a_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "mustard"
    (root / "utterances_final").mkdir(parents=True)
    (root / "sarcasm_data.json").write_text(json.dumps({"1_60": MUSTARD_ENTRY}), encoding="utf-8")
    (root / "store.mp4").write_bytes(b"x")
    (root / "utterances_final" / "1_60.mp4").symlink_to(root / "store.mp4")
    assert load_mustard(root)["media_status"].to_pylist() == ["ok"]


@pytest.mark.parametrize("part", ["train", "test"])
def test_an_id_twice_in_one_fold_list_is_refused(tmp_path: Path, part: str) -> None:
    ids = [f"{i}_1" for i in range(4)]
    (tmp_path / "sarcasm_data.json").write_text(json.dumps({u: MUSTARD_ENTRY for u in ids}), encoding="utf-8")
    folds = [{"train": ids[2:], "test": ids[:2]}, {"train": ids[:2], "test": ids[2:]}]
    folds[0][part] = folds[0][part] + folds[0][part][:1]
    (tmp_path / "split_indices.json").write_text(json.dumps({"folds": folds}), encoding="utf-8")
    with pytest.raises(DatasetError, match=rf"split_indices\.json.*fold 0: {part} lists utterance '\d_1' more than once"):
        load_mustard(tmp_path)
