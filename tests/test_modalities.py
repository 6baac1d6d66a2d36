"""Any subset of the modalities, text pooled per sentence or per turn, and model selection where a
protocol has no validation split: the pieces a text-only run on real annotations relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lcaffect_ml.extract_features import ExtractConfig, extract, hub_models
from lcaffect_ml.features import TextFeaturizer
from lcaffect_ml.fusion_data import DownstreamDataError, load_data, make_splits
from lcaffect_ml.train_fusion import train
from lcaffect_ml.fusion_data import FusionTrainConfig
from lcaffect_ml.options import ConfigError
from lcaffect_pipeline.defs.resources import DownstreamResource
from lcaffect_ml.contracts.tables import UTTERANCES_SCHEMA
from test_fusion import write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORDS = {0: ["great", "lovely", "happy", "wonderful"], 1: ["awful", "terrible", "sad", "horrible"]}


def _text_table(folder: Path, n: int = 80) -> Path:
    """MUStARD-shaped rows whose label is in the words, with no media at all (as ../shared ships
    the annotations without the videos), each with two turns of context."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = i % 2
        text = f"this is {rng.choice(WORDS[label])} and {rng.choice(WORDS[label])}"
        rows.append(dict(dataset="mustard", utterance_id=f"u{i:03d}", split="all", text=text, label=float(label),
                         label_name=None, extra_labels=None, speaker="S", show="BBT", context=[f"turn a {i}", "turn b"],
                         media_path=None, media_status="missing", media_npz=None, fold=i % 5))
    path = folder / "utterances.parquet"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=UTTERANCES_SCHEMA), path)
    return path


def _extract(table: Path, out: Path, **options) -> dict:
    return extract(ExtractConfig.from_dict({"utterances": str(table), "output_dir": str(out), "modalities": ["text"],
                                            "progress": False, "device": "cpu", **options}))


def test_text_only_keeps_utterances_without_media_and_needs_no_v2lc(tmp_path):
    table = _text_table(tmp_path / "data")
    meta = _extract(table, tmp_path / "feats")
    assert len(meta["utterance_ids"]) == 80 and meta["skipped"] == []
    assert meta["modalities"] == ["text"] and meta["lc_version"] is None and meta["v2lc_sha256"] is None
    assert not (tmp_path / "feats" / "lc_features.safetensors").exists()
    # the same table with every modality drops them all: no media to read
    with pytest.raises(ConfigError, match="v2lc_checkpoint"):
        ExtractConfig.from_dict({"utterances": str(table), "output_dir": str(tmp_path / "x")})
    with pytest.raises(ConfigError, match="at least one|non-empty"):
        ExtractConfig.from_dict({"utterances": str(table), "output_dir": "x", "modalities": ["lc"],
                                 "v2lc_checkpoint": "c"})
    # the encoders of modalities not extracted are not required at launch
    refs = hub_models({"modalities": ["text"], "text_model": "org/text", "audio_model": "org/audio"})
    assert [r.name for r in refs] == ["org/text"]


def test_text_pooling_shapes_and_the_turns_are_encoded_alone(tmp_path):
    texts = ["ab", "cd", "ef"]
    tokens = TextFeaturizer("tiny", texts)
    mean = TextFeaturizer("tiny", texts, pooling="mean")
    turns = TextFeaturizer("tiny", texts, pooling="turns")
    full = tokens(["ab"])[0]
    assert full.shape[0] == 4 and mean(["ab"])[0].shape == (1, full.shape[1])  # [CLS] a b [SEP] -> one row
    np.testing.assert_allclose(mean(["ab"])[0][0], full.mean(0), rtol=1e-5, atol=1e-6)
    out = turns([["ab", "cd", "ef"], ["cd"]])
    assert out[0].shape == (3, full.shape[1]) and out[1].shape == (1, full.shape[1])
    np.testing.assert_allclose(out[0][1], out[1][0], rtol=1e-5, atol=1e-6)  # a turn's row is the sentence's alone
    np.testing.assert_allclose(out[0][0], mean(["ab"])[0][0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        TextFeaturizer("tiny", texts, pooling="max")


def test_turns_features_hold_the_utterance_then_its_context_most_recent_first(tmp_path):
    table = _text_table(tmp_path / "data", n=10)
    meta = _extract(table, tmp_path / "feats", text_pooling="turns", context_turns=1)
    from lcaffect_ml.feature_io import load_features

    base = load_features(tmp_path / "feats", with_lc=False)["base"]
    assert base["text_len"].tolist() == [2] * 10  # the utterance and its last turn ("turn b")
    assert torch.allclose(base["text"][0, 1], base["text"][5, 1])  # the same sentence, the same row
    assert meta["models"]["text"]["pooling"] == "turns"


def test_fusion_reads_the_modalities_asked_for_and_refuses_what_the_features_lack(tmp_path):
    table, feats = write_dataset(tmp_path / "data", "meld", n=60, missing_media=10)
    common = dict(task="meld", utterances=str(table), features_dir=str(feats), epochs=2, seeds=[0])
    data = load_data(FusionTrainConfig.from_dict({**common, "output_dir": "o", "use_lc": False,
                                                  "modalities": ["text"]}))
    assert data.base_modalities == ("text",) and set(data.input_dims) == {"text"}
    # text alone reads no media: rows whose media are missing are kept when they have features
    assert data.skipped["media_not_ok"] == 0 and len(data.ids) == 60
    full = load_data(FusionTrainConfig.from_dict({**common, "output_dir": "o"}))
    assert full.skipped["media_not_ok"] == 10 and full.base_modalities == ("text", "audio", "visual")
    metrics = train(FusionTrainConfig.from_dict({**common, "output_dir": str(tmp_path / "out"), "use_lc": False,
                                                 "modalities": ["visual", "text"]}))
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["base_modalities"] == ["text", "visual"] and saved["use_lc"] is False
    assert metrics["counts"]["utterances_used"] == 50
    meta = json.loads((feats / "features.json").read_text())
    (feats / "features.json").write_text(json.dumps({**meta, "modalities": ["text"]}))
    with pytest.raises(DownstreamDataError, match="no live-comment features"):
        load_data(FusionTrainConfig.from_dict({**common, "output_dir": "o", "modalities": ["text"]}))
    with pytest.raises(DownstreamDataError, match=r"hold modalities \['text'\]"):
        load_data(FusionTrainConfig.from_dict({**common, "output_dir": "o", "use_lc": False,
                                               "modalities": ["audio"]}))
    with pytest.raises(ConfigError, match="modalities"):
        FusionTrainConfig.from_dict({**common, "output_dir": "o", "modalities": ["text", "smell"]})


def test_valid_fraction_holds_out_a_stratified_share_the_same_for_every_seed(tmp_path):
    table, feats = write_dataset(tmp_path / "data", "mustard", n=100)
    cfg = FusionTrainConfig.from_dict(dict(task="mustard", utterances=str(table), features_dir=str(feats),
                                           output_dir="o", valid_fraction=0.2))
    data = load_data(cfg)
    splits = make_splits(data, cfg)
    assert len(splits) == 5
    for s in splits:
        assert len(s.valid) == 16 and len(s.train) == 64 and not set(s.valid) & set(s.train)
        assert not set(s.valid) & set(s.test)
        assert abs(data.labels[s.valid].mean() - data.labels[np.r_[s.train, s.valid]].mean()) < 0.1
    assert [list(s.valid) for s in splits] == [list(s.valid) for s in make_splits(data, cfg)]
    metrics = train(FusionTrainConfig.from_dict(dict(task="mustard", utterances=str(table), features_dir=str(feats),
                                                     output_dir=str(tmp_path / "out"), valid_fraction=0.2,
                                                     epochs=3)))
    assert all(r["selection"] == "best_valid" and r["n_valid"] == 16 for r in metrics["runs"])
    with pytest.raises(ConfigError, match="valid_fraction"):
        FusionTrainConfig.from_dict(dict(task="mustard", utterances="t", features_dir="f", output_dir="o",
                                         valid_fraction=0.7))


def test_downstream_modalities_reach_both_programs_and_keep_old_folders():
    every = DownstreamResource()
    assert "modalities" not in every.features_options("meld") and "modalities" not in every.fusion_options()
    text = DownstreamResource(modalities=["text", "lc"])
    assert text.features_options("meld")["modalities"] == ["text", "lc"]
    assert text.fusion_options()["modalities"] == ["text"]
    with pytest.raises(Exception, match="modalities"):
        DownstreamResource(modalities=["lc"])
    with pytest.raises(Exception):
        DownstreamResource(modalities=["text", "smell"])
