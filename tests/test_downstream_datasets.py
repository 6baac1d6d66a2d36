"""Downstream datasets: loaders on the real annotation files, the media policy, media preparation
(real ffmpeg/PyAV on generated clips, a corrupt and a silent one) and the demo stand-ins."""

from __future__ import annotations

import collections
import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lcaffect_pipeline.demo_world import MOODS, MOSAIC, SCENES
from lcaffect_pipeline.downstream import (
    MELD_EMOTIONS,
    DatasetError,
    check_media,
    SCENE_SPLITS,
    demo_label,
    generate_demo_downstream,
    load_chsims2,
    load_dataset,
    load_meld,
    load_mustard,
    prepare_media,
    repair_text,
    text_cue,
)
from lcaffect_pipeline.downstream.datasets import CHSIMS_COLUMNS, MELD_COLUMNS
from lcaffect_pipeline.downstream.demo_datasets import grid
from lcaffect_ml.contracts.tables import UTTERANCES_SCHEMA
from lcaffect_pipeline.frames import sample_frames
from conftest import data_path, need_ffmpeg

MELD_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}


def render(path: Path, colour: str = "red", seconds: float = 1.0, tone_hz: int | None = 440) -> Path:
    """A tiny H.264 clip of one colour, with a sine tone or without any audio track."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"color=c={colour}:s=64x48:r=10:d={seconds}"]
    if tone_hz:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=16000:duration={seconds}", "-c:a", "aac"]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest", str(path)],
                   check=True, capture_output=True)
    return path


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def by_id(table) -> dict[str, dict]:
    return {r["utterance_id"]: r for r in table.to_pylist()}


# ------------------------------------------------------------------------------ MELD (real CSVs)


@pytest.fixture
def meld_root(tmp_path: Path) -> Path:
    root = tmp_path / "MELD.Raw"
    root.mkdir()
    for name in MELD_FILES.values():
        (root / name).symlink_to(data_path("meld", name))
    return root


def test_meld_real_annotations_ids_labels_and_media_policy(meld_root: Path):
    need_ffmpeg()
    clip = render(meld_root / "train_splits" / "dia0_utt0.mp4")
    for folder in ("dev_splits_complete", "output_repeated_splits_test"):
        (meld_root / folder).mkdir()
        os.link(clip, meld_root / folder / "dia0_utt0.mp4")
    table = load_meld(meld_root)
    assert table.schema == UTTERANCES_SCHEMA
    rows = by_id(table)

    expected = {official: csv_rows(meld_root / name) for official, name in MELD_FILES.items()}
    split_of = {"train": "train", "dev": "valid", "test": "test"}
    counts = collections.Counter(table.column("split").to_pylist())
    assert counts == {split_of[s]: len(r) for s, r in expected.items()}
    assert counts == {"train": 9989, "valid": 1109, "test": 2610}  # MELD's published statistics
    assert len(rows) == table.num_rows
    for official, records in expected.items():  # every row: id, label index, text as in the CSV
        for rec in records:
            row = rows[f"{official}_dia{rec['Dialogue_ID']}_utt{rec['Utterance_ID']}"]
            assert row["label"] == MELD_EMOTIONS.index(rec["Emotion"]) and row["label_name"] == rec["Emotion"]
            assert row["text"] == rec["Utterance"]  # the shared copy is clean UTF-8: no repair applies
            assert json.loads(row["extra_labels"])["sentiment"] == rec["Sentiment"]

    first = rows["train_dia0_utt0"]
    assert first["media_path"] == str(meld_root / "train_splits" / "dia0_utt0.mp4")
    assert first["text"].startswith("also I was the point person on my company\u2019s transition")
    assert (first["speaker"], first["label"], first["split"]) == ("Chandler", 0.0, "train")
    assert rows["train_dia0_utt4"]["label"] == MELD_EMOTIONS.index("surprise") == 2
    assert rows["dev_dia0_utt0"]["split"] == "valid"
    assert rows["dev_dia0_utt0"]["media_path"] == str(meld_root / "dev_splits_complete" / "dia0_utt0.mp4")
    assert rows["test_dia0_utt0"]["media_path"] == str(meld_root / "output_repeated_splits_test" / "dia0_utt0.mp4")
    ok = {u for u, r in rows.items() if r["media_status"] == "ok"}
    assert ok == {"train_dia0_utt0", "dev_dia0_utt0", "test_dia0_utt0"}

    kept, report = check_media(table, "skip")
    assert set(kept.column("utterance_id").to_pylist()) == ok
    assert len(report.missing) == table.num_rows - 3 and report.kept == 3
    assert report.per_split["valid"] == {"ok": 1, "missing": 1108, "unreadable": 0}
    assert check_media(table, "keep")[0].num_rows == table.num_rows
    with pytest.raises(DatasetError) as err:
        check_media(table, "fail")
    assert "meld" in str(err.value) and f"{table.num_rows - 3} of {table.num_rows}" in str(err.value)
    assert "dia0_utt1.mp4" in str(err.value)  # the first missing files are named
    assert check_media(kept, "fail")[1].missing == []


def test_meld_plain_split_layout_and_nested_release_layout(tmp_path: Path):
    need_ffmpeg()
    clip = render(tmp_path / "clip.mp4")
    for layout, folders in (("plain", {"train": "train", "dev": "dev", "test": "test"}),
                            ("nested", {"train": "train/train_splits", "dev": "dev/dev_splits_complete",
                                        "test": "test/output_repeated_splits_test"})):
        root = tmp_path / layout
        for official, name in MELD_FILES.items():
            records = csv_rows(data_path("meld", name))[:3]
            _write_csv(root / name, MELD_COLUMNS, [[r[c] for c in MELD_COLUMNS] for r in records])
            (root / folders[official]).mkdir(parents=True)
            os.link(clip, root / folders[official] / f"dia{records[0]['Dialogue_ID']}_utt{records[0]['Utterance_ID']}.mp4")
        table = load_meld(root)
        statuses = collections.Counter(table.column("media_status").to_pylist())
        assert statuses == {"ok": 3, "missing": 6}, layout


def test_meld_encoding_quirks_are_repaired(tmp_path: Path):
    header = list(MELD_COLUMNS)

    def row(i: int, text: str) -> list:
        return [i + 1, text, "Joey", "joy", "positive", 0, i, 1, 1, "00:00:01,000", "00:00:02,000"]

    # a cp1252 file (MELD saved on Windows): byte 0x92 is the apostrophe
    _write_csv(tmp_path / "train_sent_emo.csv", header, [row(0, "You must\u2019ve had your hands full.")], "cp1252")
    assert b"\x92" in (tmp_path / "train_sent_emo.csv").read_bytes()
    # UTF-8 with a C1 control character and with double-encoded UTF-8 (mojibake)
    _write_csv(tmp_path / "dev_sent_emo.csv", header, [row(0, "Let\x92s go"), row(1, "It\u00e2\u20ac\u2122s me"),
                                                       row(2, "Caf\u00e9 S\u00c3O")])
    _write_csv(tmp_path / "test_sent_emo.csv", header, [])
    texts = by_id(load_meld(tmp_path))
    assert texts["train_dia0_utt0"]["text"] == "You must\u2019ve had your hands full."
    assert texts["dev_dia0_utt0"]["text"] == "Let\u2019s go"
    assert texts["dev_dia0_utt1"]["text"] == "It\u2019s me"
    assert texts["dev_dia0_utt2"]["text"] == "Caf\u00e9 S\u00c3O"  # no exact round trip: left alone
    assert repair_text("plain \u2019 text \u2014 ok") == "plain \u2019 text \u2014 ok"


def test_meld_malformed_files_name_file_and_reason(tmp_path: Path):
    rows = [[1, "Hi.", "Joey", "joy", "positive", 0, 0, 1, 1, "a", "b"],
            [2, "Hm.", "Joey", "boredom", "neutral", 0, 1, 1, 1, "a", "b"]]
    _write_csv(tmp_path / "train_sent_emo.csv", MELD_COLUMNS, rows)
    with pytest.raises(DatasetError, match=r"train_sent_emo\.csv.*row 3: emotion 'boredom'"):
        load_meld(tmp_path)
    _write_csv(tmp_path / "train_sent_emo.csv", [c for c in MELD_COLUMNS if c != "Emotion"], [])
    with pytest.raises(DatasetError, match=r"missing columns \['Emotion'\]"):
        load_meld(tmp_path)
    (tmp_path / "train_sent_emo.csv").unlink()
    with pytest.raises(DatasetError, match=r"train_sent_emo\.csv.*not found"):
        load_meld(tmp_path)


def _write_csv(path: Path, columns, rows, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


# ------------------------------------------------------------------------------ MUStARD (real JSON)


def test_mustard_real_annotations_and_missing_media(tmp_path: Path):
    need_ffmpeg()
    source = data_path("mustard", "sarcasm_data.json")
    data = json.loads(source.read_text(encoding="utf-8"))
    (tmp_path / "sarcasm_data.json").symlink_to(source)
    render(tmp_path / "utterances_final" / "1_60.mp4")
    table = load_mustard(tmp_path)
    rows = by_id(table)
    assert table.num_rows == len(data) == 690
    assert sum(r["label"] for r in rows.values()) == sum(bool(e["sarcasm"]) for e in data.values()) == 345
    for uid, entry in data.items():
        row = rows[uid]
        assert row["label"] == float(entry["sarcasm"]) and row["context"] == entry["context"]
        assert (row["speaker"], row["show"], row["split"]) == (entry["speaker"], entry["show"], "all")
        assert json.loads(row["extra_labels"])["context_speakers"] == entry["context_speakers"]
    assert rows["1_60"]["label_name"] == "sarcastic" and rows["1_60"]["media_status"] == "ok"
    assert rows["1_60"]["media_path"] == str(tmp_path / "utterances_final" / "1_60.mp4")
    assert {"FRIENDS", "BBT"} <= set(table.column("show").to_pylist())
    kept, report = check_media(table, "skip")
    assert kept.column("utterance_id").to_pylist() == ["1_60"] and report.per_split["all"]["missing"] == 689
    with pytest.raises(DatasetError, match=r"mustard: 689 of 690 media files missing"):
        check_media(table, "fail")


def test_mustard_malformed_json(tmp_path: Path):
    path = tmp_path / "sarcasm_data.json"
    path.write_text('{"1_1": {"utterance": "x"', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"sarcasm_data\.json.*not valid JSON"):
        load_mustard(tmp_path)
    path.write_text(json.dumps({"1_1": {"utterance": "x", "speaker": "A", "context": [], "context_speakers": [],
                                        "show": "BBT"}}), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"entry '1_1' lacks \['sarcasm'\]"):
        load_mustard(tmp_path)


# ------------------------------------------------------------------------------ CH-SIMS v2


def _chsims_row(video, clip, label="0.6", mode="train", text="他说，今天真开心") -> list[str]:
    return [video, clip, text, label, "0.8", "0.4", "0.6", "Positive", mode]


def test_chsims2_loader_official_columns(tmp_path: Path):
    need_ffmpeg()
    rows = [_chsims_row("aqgy3_0001", "00001"), _chsims_row("aqgy3_0001", "00002", "-0.4", "valid"),
            _chsims_row("video_0002", "3", "0", "test")]
    _write_csv(tmp_path / "label.csv", CHSIMS_COLUMNS, rows, "utf-8-sig")  # with a BOM
    render(tmp_path / "Raw" / "aqgy3_0001" / "00001.mp4")
    render(tmp_path / "Raw" / "video_0002" / "0003.mp4", tone_hz=None)  # clip_id lost its zeros
    table = load_dataset("chsims2", tmp_path)
    rows = by_id(table)
    assert list(rows) == ["aqgy3_0001_00001", "aqgy3_0001_00002", "video_0002_3"]
    first = rows["aqgy3_0001_00001"]
    assert (first["label"], first["split"], first["label_name"]) == (0.6, "train", "Positive")
    assert first["text"] == "他说，今天真开心"
    extra = json.loads(first["extra_labels"])
    assert extra == {"label_T": 0.8, "label_A": 0.4, "label_V": 0.6, "annotation": "Positive"}
    assert first["media_path"] == str(tmp_path / "Raw" / "aqgy3_0001" / "00001.mp4") and first["media_status"] == "ok"
    assert rows["aqgy3_0001_00002"]["split"] == "valid" and rows["aqgy3_0001_00002"]["media_status"] == "missing"
    assert rows["video_0002_3"]["media_path"].endswith("Raw/video_0002/0003.mp4")
    assert rows["video_0002_3"]["media_status"] == "ok"


@pytest.mark.parametrize("row, reason", [
    (_chsims_row("v", "1", label="abc"), r"row 2: label 'abc' is not a number"),
    (_chsims_row("v", "1", label="1.5"), r"row 2: \['label'\] outside \[-1, 1\]"),
    (_chsims_row("v", "1", mode="training"), r"row 2: mode 'training'"),
    (_chsims_row("v", "1")[:-1], r"row 2: 9 columns expected"),
])
def test_chsims2_malformed_rows(tmp_path: Path, row, reason):
    _write_csv(tmp_path / "label.csv", CHSIMS_COLUMNS, [row])
    with pytest.raises(DatasetError, match=r"chsims2 \(.*label\.csv\): " + reason):
        load_chsims2(tmp_path)


def test_load_dataset_rejects_unknown_names_and_folders(tmp_path: Path):
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("mosi", tmp_path)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_dataset("meld", tmp_path / "absent")


# ------------------------------------------------------------------------------ media preparation


def _mustard_table(root: Path, ids):
    entry = {"utterance": "Oh, great.", "speaker": "CHANDLER", "context": ["Hi."], "context_speakers": ["ROSS"],
             "show": "FRIENDS", "sarcasm": True}
    (root / "sarcasm_data.json").write_text(json.dumps({uid: entry for uid in ids}), encoding="utf-8")
    return load_mustard(root)


def test_prepare_media_frames_audio_corrupt_silent_missing_and_incremental(tmp_path: Path):
    need_ffmpeg()
    media = tmp_path / "ds" / "utterances_final"
    red = render(media / "red.mp4", "red", 2.0, tone_hz=440)
    render(media / "silent.mp4", "blue", 1.0, tone_hz=None)
    (media / "corrupt.mp4").write_bytes(red.read_bytes()[:1500])  # truncated: no moov atom
    table = _mustard_table(tmp_path / "ds", ["red", "silent", "corrupt", "absent"])
    out = tmp_path / "npz"

    prepared, report = prepare_media(table, out, frames=4, size=16)
    rows = by_id(prepared)
    assert {u: r["media_status"] for u, r in rows.items()} == {
        "red": "ok", "silent": "ok", "corrupt": "unreadable", "absent": "missing"}
    assert sorted(report.prepared) == ["red", "silent"] and report.missing == ["absent"]
    assert "corrupt.mp4" in report.unreadable["corrupt"] and rows["corrupt"]["media_npz"] is None
    assert sorted(p.name for p in out.iterdir()) == ["red.npz", "silent.npz"]  # no zeros for the corrupt one

    with np.load(rows["red"]["media_npz"]) as z:
        frames, times, audio, sr = z["frames"], z["frame_times_ms"], z["audio"], int(z["sr"])
    assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8
    r, g, b = frames.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 50 and b < 50  # the red clip's picture
    assert times.dtype == np.int64 and times.tolist() == [250, 750, 1250, 1750]  # centres of 4 slices of 2 s
    assert sr == 16000 and audio.dtype == np.float32 and abs(audio.size - 32000) < 2048
    assert 0.1 < np.abs(audio).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * sr / audio.size - 440) < 5  # the tone survived the decoding
    with np.load(rows["silent"]["media_npz"]) as z:
        assert z["audio"].shape == (0,) and z["frames"].reshape(-1, 3).mean(axis=0)[2] > 200

    # incremental: same sources and parameters -> nothing rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again, report2 = prepare_media(table, out, frames=4, size=16, workers=2)
    assert sorted(report2.reused) == ["red", "silent"] and report2.prepared == []
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    assert again.column("media_status").to_pylist() == prepared.column("media_status").to_pylist()
    # a changed source file is prepared again, the other one is not
    render(red, "lime", 2.0, tone_hz=440)
    third, report3 = prepare_media(table, out, frames=4, size=16)
    assert report3.prepared == ["red"] and report3.reused == ["silent"]
    with np.load(by_id(third)["red"]["media_npz"]) as z:
        assert z["frames"].reshape(-1, 3).mean(axis=0)[1] > 200  # green now
    # changed parameters rewrite every file
    _, report4 = prepare_media(table, out, frames=2, size=16)
    assert sorted(report4.prepared) == ["red", "silent"]
    # decord frames: a parameter too (the same pictures, decoded and resized by another library)
    decorded, report5 = prepare_media(table, out, frames=2, size=16, backend="decord")
    assert sorted(report5.prepared) == ["red", "silent"] and report5.unreadable.keys() == {"corrupt"}
    with np.load(by_id(decorded)["red"]["media_npz"]) as z:
        assert z["frames"].shape == (2, 16, 16, 3) and z["frames"].reshape(-1, 3).mean(axis=0)[1] > 200
        assert json.loads(str(z["prep"]))["backend"] == "decord"
    with pytest.raises(ValueError, match="unknown frame backend"):
        prepare_media(table, out, backend="opencv")
    with pytest.raises(DatasetError, match=r"1 of 4 media files missing and 1 unreadable"):
        check_media(third, "fail")


# ------------------------------------------------------------------------------ demo stand-ins


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    need_ffmpeg()
    root = tmp_path_factory.mktemp("downstream-demo")
    generate_demo_downstream(root)
    return root


def _scene_of(path: Path) -> int:
    """The scene a clip shows: the nearest scene by its 4 x 4 block colours."""
    frame = sample_frames(path, np.array([500]), 32)[0].astype(np.float64)
    blocks = frame.reshape(MOSAIC, 32 // MOSAIC, MOSAIC, 32 // MOSAIC, 3).mean(axis=(1, 3)).reshape(-1, 3)
    palettes = np.array([[[int(c[2 + 2 * i:4 + 2 * i], 16) for i in range(3)] for c in s.blocks] for s in SCENES])
    return int(np.argmin(((palettes - blocks) ** 2).sum(axis=(1, 2))))


@pytest.mark.parametrize("task", ["chsims2", "meld", "mustard"])
def test_demo_datasets_load_and_labels_follow_text_and_scene(demo_root: Path, task: str):
    table = load_dataset(task, demo_root / task)
    assert set(table.column("media_status").to_pylist()) == {"ok"}
    splits = collections.Counter(table.column("split").to_pylist())
    assert splits == ({"all": 176} if task == "mustard" else {"train": 96, "valid": 32, "test": 48})
    scenes: dict[tuple[int, int], int] = {}  # decode each distinct (hard-linked) clip once
    by_cue, by_scene = collections.defaultdict(set), collections.defaultdict(set)
    scenes_by_split = collections.defaultdict(set)
    for row in table.to_pylist():
        st = os.stat(row["media_path"])
        key = (st.st_dev, st.st_ino)
        if key not in scenes:
            scenes[key] = _scene_of(Path(row["media_path"]))
        scene, cue = scenes[key], text_cue(task, row["text"])
        label = {"chsims2": row["label"], "meld": row["label_name"], "mustard": bool(row["label"])}[task]
        assert label == demo_label(task, cue, scene), row
        by_cue[cue].add(label)
        by_scene[scene].add(label)
        split = ("test" if row["show"] == "FRIENDS" else "train") if task == "mustard" else row["split"]
        scenes_by_split[split].add(scene)
    # the label needs both: neither the text cue nor the scene alone determines it
    assert any(len(v) > 1 for v in by_cue.values()) and any(len(v) > 1 for v in by_scene.values())
    assert len(scenes) <= 2 * len(SCENES)  # clips are shared, not re-encoded per utterance
    # no test utterance shows a scene a training utterance shows
    assert scenes_by_split["test"] <= set(SCENE_SPLITS["test"]) and not scenes_by_split["test"] & scenes_by_split["train"]
    if task == "mustard":
        shows = collections.Counter(table.column("show").to_pylist())
        assert shows["FRIENDS"] > 30 and len(shows) >= 3
        assert len(set(r["speaker"] for r in table.to_pylist() if r["show"] == "FRIENDS")) >= 3
        assert 30 < sum(table.column("label").to_pylist()) < 90


def test_demo_rule_instances():
    by_mood = {MOODS[s.mood].name: i for i, s in enumerate(SCENES)}  # one scene of each mood
    assert demo_label("mustard", "praise", by_mood["scary"]) is True
    assert demo_label("mustard", "complaint", by_mood["scary"]) is False
    assert demo_label("mustard", "praise", by_mood["funny"]) is False
    assert demo_label("chsims2", 1, by_mood["amazing"]) == 1.0 and demo_label("chsims2", -1, by_mood["infuriating"]) == -1.0
    assert demo_label("chsims2", 1, by_mood["scary"]) == -0.2 == grid(0.4 - 0.6)
    assert {demo_label("meld", "neutral", s) for s in range(len(SCENES))} == {"neutral"}
    assert {demo_label("meld", "emotional", s) for s in range(len(SCENES))} == {"joy", "surprise", "fear", "anger"}


def test_demo_official_formats_idempotent_and_deterministic(demo_root: Path, tmp_path: Path):
    meld_csv = demo_root / "meld" / "train_sent_emo.csv"
    assert meld_csv.read_bytes().startswith(",".join(MELD_COLUMNS).encode() + b"\r\n")
    assert (demo_root / "chsims2" / "label.csv").read_text(encoding="utf-8").startswith(",".join(CHSIMS_COLUMNS))
    assert all(p.suffix == ".mp4" for p in (demo_root / "meld" / "output_repeated_splits_test").iterdir())
    before = meld_csv.stat().st_mtime_ns
    generate_demo_downstream(demo_root)  # same parameters: nothing written
    assert meld_csv.stat().st_mtime_ns == before
    other = generate_demo_downstream(tmp_path, with_media=False)
    for rel in ("chsims2/label.csv", "meld/dev_sent_emo.csv", "mustard/sarcasm_data.json"):
        assert (tmp_path / rel).read_bytes() == (demo_root / rel).read_bytes(), rel
    assert not (other["mustard"] / "utterances_final").exists()
