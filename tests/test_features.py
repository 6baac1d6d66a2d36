"""Downstream feature extraction and the nearest-live-comment view, on tiny models built here.

The V2LC checkpoints are tiny TimeSformer/BERT models saved with ``save_pretrained``; the prepared
media are npz files written per ``lcaffect_ml.contracts.tables`` §2 (random frames, sine audio); the utterance table
follows ``UTTERANCES_SCHEMA``. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lcaffect_ml.extract_features import ExtractConfig, extract, main
from lcaffect_ml.features import AudioFeaturizer, TextFeaturizer, VisualFeaturizer, log_mel, pool_frames
from lcaffect_ml.feature_io import FeatureFileError, MediaFormatError, load_features, load_media
from lcaffect_ml.lc_features import lc_frame_indices
from lcaffect_ml.nearest import build_comment_bank, nearest_comments, nearest_comments_for_media
from lcaffect_ml.tokenizer import build_char_tokenizer
from lcaffect_ml.v2lc import V2LCConfig, V2LCModel
from lcaffect_ml.contracts.tables import UTTERANCES_SCHEMA

from conftest import pipes_env

SR = 16_000
COMMENTS = ["红火热", "燃爆了", "蓝天", "海洋好冷静", "哈哈", "绿草", "好看", "前方高能", "泪目", "awsl"]
TEXTS = {"u0": "今天天气很好", "u1": "我不喜欢这个", "u2": "没有视频", "u3": "安静的画面",
         "u4": "坏掉的文件", "u5": "非常开心"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sine(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _write_npz(path: Path, frames: np.ndarray, audio: np.ndarray, sr: int = SR) -> None:
    np.savez(path, frames=frames, frame_times_ms=np.linspace(0, 1000, len(frames)).astype(np.int64),
             audio=audio, sr=np.int64(sr))


def _frames(t: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, size, size, 3), dtype=np.uint8)


def _checkpoint(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    tok = build_char_tokenizer(COMMENTS)
    model = V2LCModel.build(V2LCConfig(embed_dim=16, max_comments=3, text_max_length=12), tokenizer=tok)
    model.save_pretrained(folder)
    return folder


def _table(folder: Path, texts: dict[str, str]) -> Path:
    media = {"u0": str(folder / "media" / "u0.npz"), "u1": str(folder / "media" / "u1.npz"), "u2": None,
             "u3": str(folder / "media" / "u3.npz"), "u4": str(folder / "media" / "u4.npz"),
             "u5": "media/u5.npz"}  # relative: resolved against the table's folder
    rows = [{"dataset": "chsims2", "utterance_id": u, "split": "train", "text": texts[u], "label": 0.2 * i - 0.4,
             "label_name": None, "extra_labels": None, "speaker": None, "show": None, "context": None,
             "media_path": None, "media_status": "missing" if media[u] is None else "ok", "media_npz": media[u]}
            for i, u in enumerate(texts)]
    path = folder / "utterances.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=UTTERANCES_SCHEMA), path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Six utterances: four with media (one silent, one smaller and 48 px), one without media, one
    whose npz is corrupt; two V2LC checkpoints; a comment bank."""
    root = tmp_path_factory.mktemp("features")
    (root / "media").mkdir()
    _write_npz(root / "media" / "u0.npz", _frames(8, 32, 0), _sine(1.0))
    _write_npz(root / "media" / "u1.npz", _frames(6, 48, 1), _sine(0.3, 1000.0))
    _write_npz(root / "media" / "u3.npz", _frames(8, 32, 3), np.zeros(0, np.float32))
    (root / "media" / "u4.npz").write_bytes(b"PK\x03\x04 not really a zip")
    _write_npz(root / "media" / "u5.npz", _frames(8, 32, 5), _sine(2.0, 220.0))
    pq.write_table(pa.table({"text": COMMENTS + COMMENTS[:3] + [""]}), root / "comments.parquet")
    return {"root": root, "table": _table(root, TEXTS), "ckpt_a": _checkpoint(root / "v2lc_a", 0),
            "ckpt_b": _checkpoint(root / "v2lc_b", 1), "bank": root / "comments.parquet"}


def _config(world, out: Path, **options) -> dict:
    return {"utterances": str(world["table"]), "output_dir": str(out), "v2lc_checkpoint": str(world["ckpt_a"]),
            "device": "cpu", "precision": "fp32", "batch_size": 3, "progress": False, **options}


@pytest.fixture(scope="module")
def first_run(world, tmp_path_factory):
    """The command line, launched as Dagster Pipes launches it (real dagster_pipes message file)."""
    folder = tmp_path_factory.mktemp("run")
    out = folder / "features"
    cfg = folder / "features.json"
    cfg.write_text(json.dumps(_config(world, out, comment_bank=str(world["bank"]), nearest_k=3,
                                      pipes_asset_key="chsims2_features")))
    env, messages = pipes_env(folder, "chsims2_features")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert main(["--config", str(cfg)]) == 0
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    msgs = [json.loads(line) for line in messages.read_text().splitlines() if line.strip()]
    return out, msgs


# ---------------------------------------------------------------------------- extraction


def test_extraction_writes_the_contract_files(world, first_run):
    out, _ = first_run
    meta = json.loads((out / "features.json").read_text())
    assert meta["utterance_ids"] == ["u0", "u1", "u3", "u5"]  # table order, rows without media left out
    assert meta["skipped"] == ["u2", "u4"]
    assert "no prepared media" in meta["skip_reasons"]["u2"]
    assert "u4.npz" in meta["skip_reasons"]["u4"] and "npz" in meta["skip_reasons"]["u4"]
    assert meta["no_audio"] == ["u3"]
    assert meta["dims"] == {"text": 32, "audio": 80, "visual": 32, "lc": 16}
    assert meta["lc_source"] == "post_projection" and meta["base_recomputed"] and meta["lc_recomputed"]
    assert meta["v2lc_sha256"] == hashlib.sha256((world["ckpt_a"] / "model.safetensors").read_bytes()).hexdigest()

    base, lc = load_file(str(out / "base_features.safetensors")), load_file(str(out / "lc_features.safetensors"))
    # character tokenizer: one token per character plus [CLS] and [SEP]
    assert base["text_len"].tolist() == [len(TEXTS[u]) + 2 for u in meta["utterance_ids"]]
    assert base["text"].shape == (4, max(base["text_len"]), 32)
    # 25 ms / 10 ms log-mel: 1 s -> 101 frames and 2 s -> 201, pooled to 64; 0.3 s -> 31; silent -> 0
    assert base["audio_len"].tolist() == [64, 31, 0, 64] and base["audio"].shape == (4, 64, 80)
    assert base["visual_len"].tolist() == [8, 6, 8, 8] and base["visual"].shape == (4, 8, 32)
    assert lc["lc"].shape == (4, 1, 16) and lc["lc_len"].tolist() == [1, 1, 1, 1]
    for name in ("text", "audio", "visual"):
        values, lengths = base[name], base[f"{name}_len"]
        for i, n in enumerate(lengths.tolist()):
            assert torch.all(values[i, n:] == 0), f"{name} row {i} padding is not zero"
            assert n == 0 or values[i, :n].abs().sum() > 0
        assert values.dtype == torch.float32 and lengths.dtype == torch.int64
    # the LC rows are the V2LC video embeddings of those utterances' frames at the training rate (this
    # checkpoint records none: the clip defaults' 1 s, said), in that order
    sampling = meta["models"]["v2lc"]["frame_sampling"]
    assert (sampling["mode"], sampling["spacing_s"]) == ("training_rate", 1.0) and sampling["spacing_from"].startswith("fallback")
    model = V2LCModel.from_pretrained(world["ckpt_a"]).eval()
    with torch.no_grad():
        for i, u in enumerate(meta["utterance_ids"]):
            media = load_media(world["root"] / "media" / f"{u}.npz")
            frames = torch.from_numpy(media.frames[lc_frame_indices(media.frame_times_ms, model.num_frames, 1.0)])[None]
            assert torch.allclose(lc["lc"][i, 0], model.encode_video(frames)[0], atol=1e-5), u
    loaded = load_features(out)
    assert torch.equal(loaded["lc"]["lc"], lc["lc"]) and loaded["utterance_ids"] == meta["utterance_ids"]
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_pipes_materialization_and_nearest_comments(world, first_run):
    out, msgs = first_run
    meta = json.loads((out / "features.json").read_text())
    assert msgs[0]["method"] == "opened" and msgs[-1]["method"] == "closed"
    (mat,) = [m["params"] for m in msgs if m["method"] == "report_asset_materialization"]
    assert mat["asset_key"] == "chsims2_features" and mat["data_version"] == meta["data_version"]
    assert mat["metadata"]["n_utterances"] == {"raw_value": 4, "type": "int"}
    assert mat["metadata"]["n_skipped"] == {"raw_value": 2, "type": "int"}
    assert mat["metadata"]["dim_lc"] == {"raw_value": 16, "type": "int"}
    assert mat["metadata"]["v2lc_sha256"]["raw_value"] == meta["v2lc_sha256"]
    assert mat["metadata"]["nearest_comments"]["type"] == "md"
    # the nearest comments in features.json are the top-3 cosine neighbours of each LC feature
    model = V2LCModel.from_pretrained(world["ckpt_a"]).eval()
    bank, texts = build_comment_bank(model, COMMENTS)
    lc = load_file(str(out / "lc_features.safetensors"))["lc"][:, 0]
    sim = lc @ bank.T
    for i, item in enumerate(meta["nearest_comments"]):
        expected = [texts[j] for j in sim[i].argsort(descending=True)[:3].tolist()]
        assert [t for t, _ in item["comments"]] == expected
        assert item["comments"][0][1] == pytest.approx(float(sim[i].max()), abs=1e-4)


def test_two_runs_give_identical_files(world, first_run, tmp_path):
    out, _ = first_run
    again = extract(ExtractConfig.from_dict(_config(world, tmp_path / "again", comment_bank=str(world["bank"]),
                                                    nearest_k=3)))
    first = json.loads((out / "features.json").read_text())
    for name in ("base_features.safetensors", "lc_features.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again["data_version"] == first["data_version"] and again["base_version"] == first["base_version"]
    assert again["nearest_comments"] == first["nearest_comments"]


def test_cache_recomputes_only_what_changed(world, tmp_path, caplog):
    out = tmp_path / "features"
    base_file, lc_file = out / "base_features.safetensors", out / "lc_features.safetensors"

    def run(**options):
        return extract(ExtractConfig.from_dict(_config(world, out, **options)))

    def stamps():
        return base_file.stat().st_mtime_ns, lc_file.stat().st_mtime_ns

    first = run()
    assert first["base_recomputed"] and first["lc_recomputed"]
    before = stamps()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lcaffect_ml"):
        same = run()
    assert not same["base_recomputed"] and not same["lc_recomputed"] and stamps() == before
    assert not [r for r in caplog.messages if r.startswith("computing")]
    assert same["data_version"] == first["data_version"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lcaffect_ml"):
        new_ckpt = run(v2lc_checkpoint=str(world["ckpt_b"]))
    assert not new_ckpt["base_recomputed"] and new_ckpt["lc_recomputed"]
    assert base_file.stat().st_mtime_ns == before[0] and lc_file.stat().st_mtime_ns != before[1]
    computed = [r for r in caplog.messages if r.startswith("computing")]
    assert len(computed) == 1 and computed[0].startswith("computing synthetic live-comment features")
    assert new_ckpt["base_version"] == first["base_version"] and new_ckpt["lc_version"] != first["lc_version"]
    model_b = V2LCModel.from_pretrained(world["ckpt_b"]).eval()
    media = load_media(world["root"] / "media" / "u0.npz")
    frames = torch.from_numpy(media.frames[lc_frame_indices(media.frame_times_ms, model_b.num_frames, 1.0)])[None]
    with torch.no_grad():
        assert torch.allclose(load_file(str(lc_file))["lc"][0, 0], model_b.encode_video(frames)[0], atol=1e-5)

    assert load_features(out)["lc_version"] == new_ckpt["lc_version"]

    # the other frame sampling is part of the LC key: LC re-extracted, base kept; "spread" is what
    # encode_video does with all the prepared frames (the behaviour before the option)
    spread = run(v2lc_checkpoint=str(world["ckpt_b"]), lc_frame_sampling="spread")
    assert not spread["base_recomputed"] and spread["lc_recomputed"] and spread["lc_version"] != new_ckpt["lc_version"]
    assert spread["models"]["v2lc"]["frame_sampling"]["mode"] == "spread"
    with torch.no_grad():
        assert torch.allclose(load_file(str(lc_file))["lc"][0, 0],
                              model_b.encode_video(torch.from_numpy(media.frames)[None])[0], atol=1e-5)

    # pre-projection features: [CLS] + one token per TimeSformer frame at the encoder width; base kept
    pre = run(v2lc_checkpoint=str(world["ckpt_b"]), lc_source="pre_projection")
    assert not pre["base_recomputed"] and pre["lc_recomputed"]
    lc = load_file(str(lc_file))
    assert lc["lc"].shape == (4, 1 + model_b.num_frames, 64) and pre["dims"]["lc"] == 64

    # a changed text recomputes the base features only; the LC file is left as it was
    lc_stamp = lc_file.stat().st_mtime_ns
    table = pq.read_table(world["table"])
    texts = table.column("text").to_pylist()
    texts[0] = "今天天气很糟糕啊"
    changed = world["root"] / "utterances_changed.parquet"  # same folder: u5's relative path resolves alike
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)), changed)
    new_text = run(v2lc_checkpoint=str(world["ckpt_b"]), lc_source="pre_projection", utterances=str(changed))
    assert new_text["base_recomputed"] and not new_text["lc_recomputed"]
    assert lc_file.stat().st_mtime_ns == lc_stamp and new_text["lc_version"] == pre["lc_version"]
    assert load_file(str(base_file))["text_len"][0] == len(texts[0]) + 2
    assert load_features(out)["base_version"] == new_text["base_version"]


def test_corrupt_or_foreign_files_are_refused(world, tmp_path, first_run):
    with pytest.raises(MediaFormatError, match="u4.npz"):
        load_media(world["root"] / "media" / "u4.npz")
    _write_npz(tmp_path / "sr.npz", _frames(2, 8, 0), _sine(0.1), sr=44_100)
    with pytest.raises(MediaFormatError, match="sr.npz: audio sample rate 44100"):
        load_media(tmp_path / "sr.npz")
    np.savez(tmp_path / "obj.npz", frames=np.array([object()], dtype=object), frame_times_ms=np.zeros(1),
             audio=np.zeros(1, np.float32), sr=np.int64(SR))
    with pytest.raises(MediaFormatError, match="obj.npz"):  # object arrays would need pickle: refused
        load_media(tmp_path / "obj.npz")
    # a features folder whose LC file belongs to another extraction is refused
    out, _ = first_run
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("features.json", "base_features.safetensors"):
        (mixed / name).write_bytes((out / name).read_bytes())
    from safetensors.torch import save_file

    save_file({"lc": torch.zeros(4, 1, 16), "lc_len": torch.ones(4, dtype=torch.int64)},
              str(mixed / "lc_features.safetensors"), metadata={"version": "other"})
    with pytest.raises(FeatureFileError, match="written for version other"):
        load_features(mixed)
    assert load_features(mixed, with_lc=False)["base"]["text"].shape[0] == 4
    with pytest.raises(SystemExit):
        main(["--bogus"])
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text(json.dumps({"utterances": "x", "output_dir": "y"}))
    assert main(["--config", str(bad_cfg)]) == 2


# ------------------------------------------------------------------------------ acoustic


def test_log_mel_frames_bands_and_pooling():
    assert log_mel(_sine(1.0)).shape == (101, 80)  # centred 10 ms hop: 1 + 16000 // 160
    assert log_mel(_sine(0.3)).shape == (31, 80)
    assert log_mel(np.zeros(100, np.float32)).shape == (3, 80)  # padded to one 400-sample window: 1 + 400 // 160
    assert log_mel(np.zeros(0, np.float32)).shape == (0, 80)
    # a 1 kHz tone puts its energy in the mel band whose filter peaks nearest 1 kHz
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(num_frequency_bins=257, num_mel_filters=80, min_frequency=0.0, max_frequency=8000,
                              sampling_rate=SR, norm="slaney", mel_scale="slaney")
    peak_hz = filters.argmax(axis=0) * SR / 512
    spec = log_mel(_sine(0.5, 1000.0))
    assert abs(peak_hz[spec.mean(axis=0).argmax()] - 1000.0) < 80
    # window means: a constant stays constant, a ramp stays increasing, short inputs are untouched
    ramp = np.tile(np.arange(101, dtype=np.float32)[:, None], (1, 3))
    pooled = pool_frames(ramp, 64)
    assert pooled.shape == (64, 3) and np.all(np.diff(pooled[:, 0]) > 0)
    assert pooled[0, 0] < 2 and pooled[-1, 0] > 99
    assert np.allclose(pool_frames(np.full((300, 2), 7.0, np.float32), 64), 7.0)
    assert pool_frames(ramp[:10], 64).shape == (10, 3)
    tiny = AudioFeaturizer("tiny", max_frames=16)
    assert [a.shape for a in tiny([_sine(1.0), np.zeros(0, np.float32)])] == [(16, 80), (0, 80)]


def test_hub_code_path_with_local_model_folders(tmp_path):
    """The AutoModel/AutoTokenizer/AutoFeatureExtractor/AutoImageProcessor path, from local folders."""
    from transformers import (BertConfig, BertModel, ViTConfig, ViTImageProcessor, ViTModel, Wav2Vec2Config,
                              Wav2Vec2FeatureExtractor, Wav2Vec2Model)

    torch.manual_seed(0)
    tok = build_char_tokenizer(TEXTS.values(), model_max_length=32)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=48, max_position_embeddings=32)).save_pretrained(tmp_path / "text")
    tok.save_pretrained(tmp_path / "text")
    ViTModel(ViTConfig(image_size=32, patch_size=16, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=48)).save_pretrained(tmp_path / "vision")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vision")
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
                  ).save_pretrained(tmp_path / "audio")
    Wav2Vec2FeatureExtractor(sampling_rate=SR).save_pretrained(tmp_path / "audio")

    text = TextFeaturizer(str(tmp_path / "text"), [], max_length=32)
    out = text(["今天天气很好", "好"])
    assert [o.shape for o in out] == [(8, 24), (3, 24)] and text.spec()["weights"]
    audio = AudioFeaturizer(str(tmp_path / "audio"), max_frames=64)
    # wav2vec 2.0's front end strides 320 samples: 1 s -> 49 frames; 3 s -> 149, pooled to 64
    assert [a.shape for a in audio([_sine(1.0), _sine(3.0), _sine(0.01)])] == [(49, 24), (64, 24), (1, 24)]
    vision = VisualFeaturizer(str(tmp_path / "vision"))
    feats = vision([_frames(3, 48, 0), _frames(2, 32, 1)])
    assert [f.shape for f in feats] == [(3, 24), (2, 24)] and vision.dim == 24
    # batching does not change an utterance's features
    assert np.allclose(vision([_frames(2, 32, 1)])[0], feats[1], atol=1e-5)


def test_tiny_featurizers_are_deterministic_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = VisualFeaturizer("tiny", seed=0)([_frames(2, 32, 0)])[0]
    t = TextFeaturizer("tiny", TEXTS.values(), seed=0)(["今天"])[0]
    assert torch.equal(torch.rand(1), expected)
    assert np.array_equal(a, VisualFeaturizer("tiny", seed=0)([_frames(2, 32, 0)])[0])
    assert np.array_equal(t, TextFeaturizer("tiny", TEXTS.values(), seed=0)(["今天"])[0])
    assert not np.allclose(a, VisualFeaturizer("tiny", seed=1)([_frames(2, 32, 0)])[0])


# ------------------------------------------------------------------------------- nearest


def test_nearest_comments_on_a_constructed_bank():
    bank = torch.eye(4)
    texts = ["a", "b", "c", "d"]
    queries = torch.tensor([[1.0, 0.0, 3.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    got = nearest_comments(queries, bank, texts, k=2)
    assert [t for t, _ in got[0]] == ["c", "a"]
    assert [s for _, s in got[0]] == pytest.approx([3 / 10**0.5, 1 / 10**0.5])
    assert got[1][0][1] == pytest.approx(0.0) and got[1][1][1] == pytest.approx(0.0)
    assert len(nearest_comments(queries, bank, texts, k=10)[0]) == 4  # k capped at the bank size
    with pytest.raises(ValueError, match="texts"):
        nearest_comments(queries, bank, texts[:3])


def test_each_comment_retrieves_itself_and_media_search_matches(world):
    model = V2LCModel.from_pretrained(world["ckpt_a"]).eval()
    bank, texts = build_comment_bank(model, COMMENTS + ["哈哈", "", "泪目"], batch_size=4)
    assert texts == COMMENTS  # duplicates and empty comments dropped, first-seen order
    assert torch.allclose(bank.norm(dim=1), torch.ones(len(texts)), atol=1e-5)
    enc = model.tokenizer(COMMENTS, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        own = model.encode_text(enc["input_ids"], enc["attention_mask"])
    top = nearest_comments(own, bank, texts, k=1)
    assert [hits[0][0] for hits in top] == COMMENTS
    assert all(hits[0][1] == pytest.approx(1.0, abs=1e-4) for hits in top)

    frames = load_media(world["root"] / "media" / "u1.npz").frames
    found = nearest_comments_for_media(world["ckpt_a"], COMMENTS, [world["root"] / "media" / "u0.npz", frames], k=4,
                                       frame_sampling="spread")  # an npz spread over: the frames encode_video picks
    with torch.no_grad():
        video = torch.cat([model.encode_video(torch.from_numpy(load_media(world["root"] / "media" / "u0.npz")
                                                                .frames)[None]),
                           model.encode_video(torch.from_numpy(frames)[None])])
    sim = F.normalize(video, dim=-1) @ bank.T
    for row, hits in zip(sim, found):
        order = row.argsort(descending=True)[:4].tolist()
        assert [t for t, _ in hits] == [texts[j] for j in order]
        assert [s for _, s in hits] == pytest.approx(row[order].tolist(), abs=1e-5)


def test_bf16_autocast_gives_float32_features_close_to_fp32(world):
    from lcaffect_ml.lc_features import SyntheticLCFeaturizer

    clips = [_frames(8, 32, 0), _frames(6, 48, 1)]
    full = SyntheticLCFeaturizer(world["ckpt_a"], precision="fp32")(clips)
    half = SyntheticLCFeaturizer(world["ckpt_a"], precision="bf16")(clips)
    for a, b in zip(full, half):
        assert b.dtype == np.float32 and b.shape == a.shape == (1, 16)
        assert not np.array_equal(a, b) and float(a[0] @ b[0]) > 0.98  # bf16 ran, and stayed on course
    v32 = VisualFeaturizer("tiny", precision="fp32")(clips)
    v16 = VisualFeaturizer("tiny", precision="bf16")(clips)
    assert all(b.dtype == np.float32 and np.allclose(a, b, atol=0.1) for a, b in zip(v32, v16))
