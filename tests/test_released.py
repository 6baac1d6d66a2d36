"""Released benchmark features (``lcaffect_ml.released``): files written here in the benchmarks'
own layouts (MMSA / CH-SIMS v2 pickle, MUStARD's ``audio_features.p``, MELD's feature pickles),
read in place of the encoders, and a restricted unpickler that refuses anything but arrays and
plain containers (a pickle that tries to run code is refused before it runs)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from lcaffect_ml.extract_features import ExtractConfig, extract, main
from lcaffect_ml.released import read_released
from lcaffect_ml.released_pickle import ReleasedFeatureError, load_pickle
from lcaffect_ml.options import ConfigError
from lcaffect_ml.contracts.tables import UTTERANCES_SCHEMA

from test_features import _checkpoint, _frames, _sine, _write_npz

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _RunsCode:
    """Unpickling this calls ``os.system`` with a command that leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Subprocess:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return subprocess.call, (["touch", str(self.marker)],)


@pytest.mark.parametrize("payload, cls", [(_RunsCode, r"(posix|os)\.system"),
                                          (_Subprocess, r"(subprocess|commands)\.call")])
def test_a_pickle_that_runs_code_is_refused_before_it_runs(tmp_path: Path, payload, cls):
    marker = tmp_path / "ran"
    path = tmp_path / "audio_features.p"
    # hidden inside an ordinary-looking features dict, after a real array
    path.write_bytes(pickle.dumps({"1_60": np.ones((3, 4)), "1_70": payload(marker)}, protocol=2))
    with pytest.raises(ReleasedFeatureError, match=rf"{path}: refused to load {cls}: .*only NumPy arrays"):
        load_pickle(path)
    assert not marker.exists()  # refused, not run
    pickle.loads(path.read_bytes())  # the same bytes through plain pickle do run it: the test means something
    assert marker.exists()


def test_damaged_and_foreign_files_are_refused_naming_the_file(tmp_path: Path):
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"a": np.ones(3)})[:-10])
    with pytest.raises(ReleasedFeatureError, match=rf"{truncated}: not a readable feature pickle"):
        load_pickle(truncated)
    with pytest.raises(ReleasedFeatureError, match=r"cannot read the released feature file"):
        load_pickle(tmp_path / "absent.pkl")
    other = tmp_path / "list.pkl"
    other.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ReleasedFeatureError, match=rf"{other}: not a released feature layout"):
        read_released(other, "audio")
    nan = tmp_path / "nan.p"
    nan.write_bytes(pickle.dumps({"1_1": np.full((4, 2), np.nan)}, protocol=2))
    with pytest.raises(ReleasedFeatureError, match=r"utterance '1_1' has NaN or infinite features"):
        read_released(nan, "audio")


def _mmsa_split(ids: list[str], rng, text_lengths: list[int], audio_lengths: list[int]) -> dict:
    """One split of an MMSA-FET feature pickle (padded sequences + lengths, text_bert masks)."""
    n, lt, la, lv = len(ids), 10, 12, 6
    text = rng.normal(size=(n, lt, 8)).astype(np.float32)
    mask = np.zeros((n, lt), np.float32)
    for i, length in enumerate(text_lengths):
        text[i, length:] = 0.0
        mask[i, :length] = 1.0
    audio = rng.normal(size=(n, la, 5)).astype(np.float32)
    audio[0, 1, 2] = -np.inf  # MMSA's missing acoustic value
    return {"id": ids, "raw_text": ["好"] * n, "text": text, "text_bert": np.stack([mask * 7, mask, 0 * mask], 1),
            "audio": audio, "audio_lengths": audio_lengths, "vision": rng.normal(size=(n, lv, 3)).astype(np.float32),
            "vision_lengths": [lv, 2][:n] + [lv] * (n - 2), "regression_labels": np.zeros(n, np.float32),
            "annotations": ["Neutral"] * n}


def test_mmsa_pickle_layout(tmp_path: Path):
    rng = np.random.default_rng(0)
    data = {"train": _mmsa_split(["video_0001$_$0001", "video_0001$_$0002"], rng, [4, 10], [12, 3]),
            "valid": _mmsa_split(["video_0002$_$0001", "video_0002$_$0003"], rng, [2, 3], [5, 6]),
            "test": _mmsa_split(["video_0003$_$0010", "video_0003$_$0011"], rng, [6, 1], [1, 12])}
    path = tmp_path / "ch-simsv2s.pkl"
    path.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    fmt, text = read_released(path, "text")
    _, audio = read_released(path, "audio")
    _, visual = read_released(path, "visual")
    assert fmt == "mmsa" and sorted(text) == ["video_0001_0001", "video_0001_0002", "video_0002_0001",
                                              "video_0002_0003", "video_0003_0010", "video_0003_0011"]
    assert [text[u].shape for u in ("video_0001_0001", "video_0001_0002", "video_0003_0011")] == [(4, 8), (10, 8), (1, 8)]
    np.testing.assert_array_equal(text["video_0001_0001"], data["train"]["text"][0, :4])
    assert audio["video_0001_0002"].shape == (3, 5) and audio["video_0003_0010"].shape == (1, 5)
    assert audio["video_0001_0001"][1, 2] == 0.0  # -inf -> 0, as MMSA's loader does
    assert visual["video_0001_0002"].shape == (2, 3) and visual["video_0001_0001"].shape == (6, 3)


def test_mustard_audio_features_layout(tmp_path: Path):
    rng = np.random.default_rng(1)
    data = {"1_60": rng.normal(size=(283, 11)), "2_101": rng.normal(size=(283, 9))}
    path = tmp_path / "audio_features.p"
    path.write_bytes(pickle.dumps(data, protocol=2))  # as MUStARD wrote it
    fmt, audio = read_released(path, "audio")
    assert fmt == "mustard" and audio["1_60"].shape == (11, 283) and audio["1_60"].dtype == np.float32
    np.testing.assert_allclose(audio["2_101"], data["2_101"].T.astype(np.float32))


def test_meld_feature_pickle_layout(tmp_path: Path):
    rng = np.random.default_rng(2)
    train = OrderedDict({"0_0": rng.normal(size=1611), "0_1": rng.normal(size=1611)})
    val, test = {"3_2": rng.normal(size=1611)}, {"10_0": list(rng.normal(size=1611))}
    path = tmp_path / "audio_embeddings_feature_selection_emotion.pkl"
    path.write_bytes(pickle.dumps((train, val, test), protocol=2))
    fmt, audio = read_released(path, "audio")
    assert fmt == "meld" and sorted(audio) == ["dev_dia3_utt2", "test_dia10_utt0", "train_dia0_utt0",
                                               "train_dia0_utt1"]
    assert audio["train_dia0_utt1"].shape == (1, 1611)
    np.testing.assert_allclose(audio["dev_dia3_utt2"][0], val["3_2"].astype(np.float32))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(({"dia0": np.ones(3)}, {}, {}), protocol=2))
    with pytest.raises(ReleasedFeatureError, match=r"key 'dia0' is not '\{dialogue\}_\{utterance\}'"):
        read_released(bad, "audio")


def _mustard_world(tmp_path: Path) -> tuple[Path, Path, dict]:
    (tmp_path / "media").mkdir()
    rows = []
    for i, uid in enumerate(("1_60", "1_70", "2_5")):
        npz = tmp_path / "media" / f"{uid}.npz"
        _write_npz(npz, _frames(4, 32, i), _sine(0.5))
        rows.append({"dataset": "mustard", "utterance_id": uid, "split": "all", "text": "oh great", "label": 1.0,
                     "label_name": None, "extra_labels": None, "speaker": None, "show": "FRIENDS", "context": [],
                     "media_path": None, "media_status": "ok", "media_npz": str(npz)})
    table = tmp_path / "utterances.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=UTTERANCES_SCHEMA), table)
    rng = np.random.default_rng(3)
    released = {"1_60": rng.normal(size=(283, 11)), "2_5": rng.normal(size=(283, 7))}  # no 1_70
    path = tmp_path / "audio_features.p"
    path.write_bytes(pickle.dumps(released, protocol=2))
    return table, path, released


def test_extraction_reads_released_audio_and_still_adds_lc_from_the_videos(tmp_path: Path):
    table, path, released = _mustard_world(tmp_path)
    ckpt = _checkpoint(tmp_path / "v2lc", 0)
    cfg = {"utterances": str(table), "output_dir": str(tmp_path / "features"), "v2lc_checkpoint": str(ckpt),
           "device": "cpu", "precision": "fp32", "progress": False, "released_features": {"audio": str(path)}}
    meta = extract(ExtractConfig.from_dict(cfg))
    assert meta["utterance_ids"] == ["1_60", "2_5"]
    assert meta["skip_reasons"]["1_70"] == f"not in the released audio features {path}"
    assert meta["models"]["audio"]["name"] == "released" and meta["models"]["audio"]["format"] == "mustard"
    assert meta["models"]["text"]["name"] == "tiny" and meta["dims"] == {"text": 32, "audio": 283, "visual": 32,
                                                                          "lc": 16}
    base = load_file(str(tmp_path / "features" / "base_features.safetensors"))
    assert base["audio_len"].tolist() == [11, 7]
    np.testing.assert_allclose(base["audio"][1, :7].numpy(), released["2_5"].T.astype(np.float32))
    lc = load_file(str(tmp_path / "features" / "lc_features.safetensors"))
    assert lc["lc"].shape[0] == 2 and float(lc["lc"].abs().sum()) > 0  # V2LC over the videos
    # unchanged file: cached; a changed file: the base features are extracted again
    assert extract(ExtractConfig.from_dict(cfg))["base_recomputed"] is False
    path.write_bytes(pickle.dumps({k: v * 2 for k, v in released.items()}, protocol=2))
    again = extract(ExtractConfig.from_dict(cfg))
    assert again["base_recomputed"] is True and again["base_version"] != meta["base_version"]


def test_the_command_line_refuses_a_hostile_released_file_with_exit_2(tmp_path: Path, capsys):
    table, path, _ = _mustard_world(tmp_path)
    marker = tmp_path / "ran"
    path.write_bytes(pickle.dumps({"1_60": _RunsCode(marker)}, protocol=2))
    cfg = tmp_path / "features.json"
    cfg.write_text(json.dumps({"utterances": str(table), "output_dir": str(tmp_path / "out"),
                               "v2lc_checkpoint": str(_checkpoint(tmp_path / "v2lc", 0)), "device": "cpu",
                               "progress": False, "released_features": str(path)}))
    assert main(["--config", str(cfg)]) == 2
    assert "refused to load" in capsys.readouterr().err and not marker.exists()
    with pytest.raises(ConfigError, match="released_features must be a file or a mapping"):
        ExtractConfig.from_dict({"utterances": "u", "output_dir": "o", "v2lc_checkpoint": "c",
                                 "released_features": {"lc": "x.p"}})


def test_released_features_normalised_however_the_config_is_built():
    built = ExtractConfig(utterances="u", output_dir="o", v2lc_checkpoint="c", released_features="ch-simsv2s.pkl")
    assert built.released_features == {"text": "ch-simsv2s.pkl", "audio": "ch-simsv2s.pkl", "visual": "ch-simsv2s.pkl"}
    assert ExtractConfig(utterances="u", output_dir="o", v2lc_checkpoint="c").released_features == {}


def test_chsims2_pickle_with_train_mix_is_read_and_train_mix_ignored(tmp_path: Path):
    """CH-SIMS v2's ch-simsv2s.pkl as its authors ship it: train/valid/test plus the semi-supervised
    train_mix (the train clips again followed by unlabelled ones, with a mask). Read, train_mix
    left out, and features.json says so."""
    rng = np.random.default_rng(4)
    train = _mmsa_split(["video_0001$_$0001", "video_0001$_$0002"], rng, [4, 10], [12, 3])
    mix = _mmsa_split(["video_0001$_$0001", "video_0001$_$0002", "aqgy_0001$_$0001"], rng, [4, 10, 3], [12, 3, 5])
    mix["mask"] = np.array([1, 1, 0])
    data = {"train": train, "train_mix": mix, "valid": _mmsa_split(["video_0002$_$0001", "video_0002$_$0003"], rng,
                                                                   [2, 3], [5, 6]),
            "test": _mmsa_split(["video_0003$_$0010", "video_0003$_$0011"], rng, [6, 1], [1, 12])}
    path = tmp_path / "ch-simsv2s.pkl"
    path.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    fmt, audio = read_released(path, "audio")
    assert fmt == "mmsa" and len(audio) == 6 and "aqgy_0001_0001" not in audio  # the unlabelled clip: not read
    np.testing.assert_array_equal(audio["video_0001_0002"], train["audio"][1, :3])  # train's, not train_mix's
    from lcaffect_ml.released import ReleasedFeaturizer

    spec = ReleasedFeaturizer("audio", path).spec()
    assert set(spec["ignored_splits"]) == {"train_mix"} and "semi-supervised" in spec["ignored_splits"]["train_mix"]
    del data["train_mix"]
    path.write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    assert "ignored_splits" not in ReleasedFeaturizer("audio", path).spec()
    path.write_bytes(pickle.dumps({"train_mix": mix}, protocol=pickle.HIGHEST_PROTOCOL))  # train_mix alone: no layout
    with pytest.raises(ReleasedFeatureError, match="not a released feature layout"):
        read_released(path, "audio")
