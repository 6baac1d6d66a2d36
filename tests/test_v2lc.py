"""V2LC model, loss, retrieval metrics, tokenizer and shard reader, on tiny configurations."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lcaffect_ml.data import (SegmentStream, ShardSampleError, ShardSpec, load_shard_index, make_loader,
                              read_comments, split_by_video)
from lcaffect_ml.synthetic import write_synthetic_shards
from lcaffect_ml.losses import multi_positive_infonce, v2lc_loss
from lcaffect_ml.retrieval import best_positive_ranks, metrics_from_similarity, retrieval_metrics
from lcaffect_ml.tokenizer import build_char_tokenizer, load_tokenizer, tokenize_comments
from lcaffect_ml.trainutil import CheckpointFormatError, load_state, save_state
from lcaffect_ml.v2lc import IMAGENET_MEAN, IMAGENET_STD, V2LCConfig, V2LCModel


pytestmark = pytest.mark.usefixtures("one_torch_thread")


COMMENTS = [["红火热", "燃爆了"], ["蓝天", "海洋好冷静", "哈哈"], ["绿草"]]


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer([c for seg in COMMENTS for c in seg] + ["好看", "abc"])


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    return V2LCModel.build(V2LCConfig(embed_dim=16, max_comments=3, text_max_length=12), tokenizer=tokenizer)


def _frames(batch=3, t=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, t, size, size, 3), dtype=torch.uint8, generator=g)


# ------------------------------------------------------------------------------- model


def _tokens(model: V2LCModel):
    """COMMENTS as the training loader tokenises them for ``model``."""
    return tokenize_comments(model.tokenizer, COMMENTS, model.config.max_comments, model.config.text_max_length)


def test_forward_backward_on_tiny_config(model):
    ids, attn, mask = _tokens(model)
    assert ids.shape[:2] == (3, 3) and mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    out = model(_frames(), ids, attn, mask)
    assert out.video_embeds.shape == (3, 16)
    assert out.comment_embeds.shape == (9, 16)
    assert out.comment_segment.tolist() == [0, 0, -1, 1, 1, 1, 2, -1, -1]
    assert torch.allclose(out.video_embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.all(out.comment_embeds[out.comment_segment < 0] == 0)
    loss = v2lc_loss(*out[:3], out.logit_scale).loss
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert model.logit_scale.grad is not None and model.logit_scale.grad != 0


def test_preprocess_normalises_resizes_and_samples_frames(model):
    white = torch.full((1, 8, 64, 64, 3), 255, dtype=torch.uint8)
    x = model.preprocess_frames(white)
    assert x.shape == (1, 4, 3, 32, 32)  # 8 frames sampled to 4, 64 px resized to 32
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x[0, 0, :, 5, 5], torch.tensor(expected), atol=1e-5)
    # temporal sampling keeps the first and last frame, channel order RGB -> (3, H, W)
    ramp = torch.zeros((1, 8, 32, 32, 3), dtype=torch.uint8)
    ramp[:, :, :, :, 0] = torch.arange(8, dtype=torch.uint8).view(1, 8, 1, 1) * 10
    red = model.preprocess_frames(ramp)[0, :, 0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert torch.allclose(red * 255, torch.tensor([0.0, 20.0, 50.0, 70.0]), atol=1e-3)
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        model.preprocess_frames(torch.zeros((1, 4, 3, 32, 32), dtype=torch.uint8))


def test_encode_video_before_and_after_projection(model):
    model.eval()
    frames = _frames(2)
    raw = model.encode_video(frames, projected=False, normalize=False)
    assert raw.shape == (2, model.video.config.hidden_size)
    projected = model.encode_video(frames)
    assert torch.allclose(projected, F.normalize(model.video_proj(raw), dim=-1), atol=1e-6)


def test_temperature_initialised_like_clip_and_clamped(model):
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert math.isclose(model.scale().item(), 100.0, rel_tol=1e-5)
    model.clamp_logit_scale_()
    assert math.isclose(model.logit_scale.item(), math.log(100), rel_tol=1e-6)


@pytest.mark.parametrize("tower", ["video", "text"])
def test_freezing_a_tower_stops_its_gradients(tokenizer, tower):
    cfg = V2LCConfig(embed_dim=16, max_comments=3, freeze_video=tower == "video", freeze_text=tower == "text")
    model = V2LCModel.build(cfg, tokenizer=tokenizer)
    model.train()
    frozen, live = (model.video, model.text) if tower == "video" else (model.text, model.video)
    assert not frozen.training and live.training  # frozen tower stays in eval mode (no dropout)
    out = model(_frames(), *_tokens(model))
    v2lc_loss(*out[:3], out.logit_scale).loss.backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is not None for p in live.parameters())
    assert model.video_proj.weight.grad is not None and model.text_proj.weight.grad is not None


def test_save_load_round_trip(model, tmp_path):
    model.eval()
    model.save_pretrained(tmp_path)
    assert {"model.safetensors", "config.json", "tokenizer"} <= set(os.listdir(tmp_path))
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary files left
    loaded = V2LCModel.from_pretrained(tmp_path).eval()
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    frames = _frames(2)
    assert torch.equal(model.encode_video(frames), loaded.encode_video(frames))
    assert loaded.tokenizer(["蓝天好看"])["input_ids"] == model.tokenizer(["蓝天好看"])["input_ids"]
    assert json.loads((tmp_path / "config.json").read_text())["video_config"]["hidden_size"] == 64


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/v2lc-pickle-was-executed", "w"))


def test_pickled_payloads_are_refused(model, tmp_path):
    marker = "/tmp/v2lc-pickle-was-executed"
    if os.path.exists(marker):
        os.remove(marker)
    model.save_pretrained(tmp_path)
    # a pickle disguised as model.safetensors
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps({"w": _Exploit()}))
    with pytest.raises(CheckpointFormatError, match="not a safetensors file"):
        V2LCModel.from_pretrained(tmp_path)
    # a classic pickled checkpoint instead of safetensors
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointFormatError, match=r"pickled weights \['pytorch_model.bin'\] are refused"):
        V2LCModel.from_pretrained(tmp_path)
    # trainer state files are safetensors + JSON as well
    save_state(tmp_path, "optimizer", {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]})
    (tmp_path / "optimizer.safetensors").write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointFormatError):
        load_state(tmp_path, "optimizer")
    assert not os.path.exists(marker)


def test_state_round_trip_keeps_types():
    opt_state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(4.0)}},
                 "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.98), "params": [0]}], "rng": np.arange(3)}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_state(d, "s", opt_state)
        back = load_state(d, "s")
    assert list(back["state"]) == [0] and isinstance(back["param_groups"][0]["betas"], tuple)
    assert torch.equal(back["state"][0]["exp_avg"], torch.arange(4.0))
    assert isinstance(back["rng"], np.ndarray) and back["rng"].tolist() == [0, 1, 2]


# -------------------------------------------------------------------------------- loss


def _ce(row, target):
    return -(row[target] - math.log(sum(math.exp(x) for x in row)))


def test_loss_matches_hand_computation_with_two_comments_on_one_segment():
    logits = [[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]]
    seg = [0, 0, 1]
    got = multi_positive_infonce(torch.tensor(logits), torch.tensor(seg))
    cols = [[logits[0][j], logits[1][j]] for j in range(3)]
    c2v = sum(_ce(cols[j], seg[j]) for j in range(3)) / 3
    e = math.exp
    v2c_sum = (-math.log((e(2) + e(1)) / (e(2) + e(1) + e(0))) - math.log(e(3) / (e(0) + e(1) + e(3)))) / 2
    assert math.isclose(float(got.c2v), c2v, rel_tol=1e-6)
    assert math.isclose(float(got.v2c), v2c_sum, rel_tol=1e-6)
    assert math.isclose(float(got.loss), (c2v + v2c_sum) / 2, rel_tol=1e-6)
    mean = multi_positive_infonce(torch.tensor(logits), torch.tensor(seg), positives="mean")
    v2c_mean = ((_ce(logits[0], 0) + _ce(logits[0], 1)) / 2 + _ce(logits[1], 2)) / 2
    assert math.isclose(float(mean.v2c), v2c_mean, rel_tol=1e-6)


def test_loss_reduces_to_clip_with_one_comment_per_segment():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 5, generator=g)
    target = torch.arange(5)
    clip = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    for mode in ("sum", "mean"):
        assert torch.allclose(multi_positive_infonce(logits, target, mode).loss, clip, atol=1e-6)


def test_comments_of_the_same_segment_are_not_negatives():
    seg = torch.tensor([0, 0, 1])
    base = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    sibling_up = base.clone()
    sibling_up[0, 1] = 3.0  # the second comment of segment 0 scores higher for video 0
    negative_up = base.clone()
    negative_up[0, 2] = 3.0  # segment 1's comment scores higher for video 0
    v2c = lambda x: float(multi_positive_infonce(x, seg).v2c)  # noqa: E731
    assert v2c(sibling_up) < v2c(base) < v2c(negative_up)


def test_loss_drops_padding_rows():
    g = torch.Generator().manual_seed(2)
    v = F.normalize(torch.randn(2, 4, generator=g), dim=-1)
    c = F.normalize(torch.randn(4, 4, generator=g), dim=-1)
    padded = torch.cat([c[:2], torch.zeros(1, 4), c[2:], torch.zeros(1, 4)])
    seg_padded = torch.tensor([0, 0, -1, 1, 1, -1])
    a = v2lc_loss(v, padded, seg_padded, torch.tensor(5.0))
    b = multi_positive_infonce(5.0 * v @ c.t(), torch.tensor([0, 0, 1, 1]))
    assert torch.allclose(a.loss, b.loss)


# ---------------------------------------------------------------------------- retrieval


def test_retrieval_metrics_on_a_hand_made_matrix():
    sim = torch.tensor([[0.1, 0.9, 0.5, 0.2],
                        [0.8, 0.1, 0.3, 0.9],
                        [0.2, 0.7, 0.6, 0.5]])
    seg = torch.tensor([0, 0, 1, 2])
    own = seg.unsqueeze(0) == torch.arange(3).unsqueeze(1)
    assert best_positive_ranks(sim, own).tolist() == [1, 3, 3]
    assert best_positive_ranks(sim.t(), own.t()).tolist() == [3, 1, 3, 2]
    m = metrics_from_similarity(sim, seg, ks=(1, 2, 5))
    assert m["v2c_r1"] == pytest.approx(1 / 3) and m["v2c_r2"] == pytest.approx(1 / 3) and m["v2c_r5"] == 1.0
    assert m["v2c_medr"] == 3.0 and m["v2c_meanr"] == pytest.approx(7 / 3)
    assert m["c2v_r1"] == 0.25 and m["c2v_r2"] == 0.5 and m["c2v_medr"] == 2.5
    assert m["chance_r1"] == pytest.approx(1 / 3)
    assert m["eval_segments"] == 3 and m["eval_comments"] == 4


def test_ties_count_against_the_query():
    sim = torch.zeros(4, 8)  # collapsed embeddings
    m = metrics_from_similarity(sim, torch.arange(8) // 2)
    assert m["v2c_r1"] == 0.0 and m["v2c_medr"] == 7.0  # 6 negatives tie ahead of the best positive
    assert m["c2v_r1"] == 0.0 and m["c2v_medr"] == 4.0


def test_retrieval_metrics_from_embeddings_perfect_and_reversed():
    v = torch.eye(4)
    c = torch.cat([torch.eye(4), torch.eye(4)])  # two comments per segment
    seg = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    perfect = retrieval_metrics(v, c, seg)
    assert perfect["v2c_r1"] == 1.0 and perfect["c2v_r1"] == 1.0 and perfect["c2v_medr"] == 1.0
    worst = retrieval_metrics(v, -c, seg)
    assert worst["v2c_medr"] == 7.0 and worst["c2v_medr"] == 4.0
    with pytest.raises(ValueError):
        metrics_from_similarity(torch.zeros(2, 3), torch.tensor([0, 5, 1]))


# ----------------------------------------------------------------------------- tokenizer


def test_char_tokenizer_round_trip_and_padding(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    enc = again(["红火热"])["input_ids"][0]
    assert again.convert_ids_to_tokens(enc) == ["[CLS]", "红", "火", "热", "[SEP]"]
    assert again(["𝔁未知"])["input_ids"][0][1:-1].count(again.unk_token_id) >= 1
    ids, attn, mask = tokenize_comments(again, [["红火热燃爆了"], []], max_comments=2, max_length=5)
    assert ids.shape == (2, 2, 5) and mask.tolist() == [[True, False], [False, False]]
    assert attn[0, 0].tolist() == [1, 1, 1, 1, 1] and ids[0, 0, -1] == again.sep_token_id  # truncated


# ------------------------------------------------------------------------------ shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    index = write_synthetic_shards(root, n_videos=6, segments_per_video=6, seed=3, max_shard_samples=4)
    return load_shard_index(index)


def test_a_grouped_split_keeps_each_group_on_one_side():
    from lcaffect_ml.data import split_grouping

    # 10 series of 2 episodes, and 4 videos without a series (each its own group)
    shards = [ShardSpec(f"v{i}.tar", f"v{i}", 4, catalogue=(("series", f"s{i // 2}"),) if i < 20 else ())
              for i in range(24)]
    for seed in range(5):
        train, test = split_by_video(shards, 0.3, seed=seed, group_by="series")
        series = lambda side: {s.column("series") for s in side} - {None}  # noqa: E731
        assert series(train).isdisjoint(series(test)) and len(train) + len(test) == 24
        assert len(series(test)) + sum(s.column("series") is None for s in test) == round(0.3 * 14)
    assert split_by_video(shards, 0.3, group_by="video") == split_by_video(shards, 0.3)
    assert split_grouping(shards, "auto") == "video" and split_grouping(shards, "series") == "series"
    assert split_grouping([ShardSpec("a.tar", "a", catalogue=(("group", "g"),))], "auto") == "group"
    with pytest.raises(ValueError, match="split_group 'uploader'"):
        split_grouping(shards, "uploader")


def test_index_and_split_are_by_video(shards):
    assert len(shards) == 12 and len({s.video_id for s in shards}) == 6
    assert sum(s.samples for s in shards) == 36
    train, test = split_by_video(shards, 0.34, seed=0)
    assert {s.video_id for s in train}.isdisjoint({s.video_id for s in test})
    assert len({s.video_id for s in test}) == 2 and len(train) + len(test) == len(shards)
    assert split_by_video(list(reversed(shards)), 0.34)[1] == [s for s in reversed(shards) if s in test]
    # a list of bare URLs takes each video from the shard's folder name
    urls = load_shard_index([s.url for s in shards])
    assert [u.video_id for u in urls] == [s.video_id for s in shards]
    # relative URLs: beside the index, or from the lake root above it
    index_dir = Path(shards[0].url).parents[1]
    entries = [{"url": str(Path(s.url).relative_to(index_dir)), "video_id": s.video_id} for s in shards[:2]]
    entries += [{"url": str(Path(s.url).relative_to(index_dir.parent)), "video_id": s.video_id} for s in shards[2:4]]
    rel_index = index_dir / "relative-index.json"
    rel_index.write_text(json.dumps(entries))
    assert [s.url for s in load_shard_index(rel_index)] == [s.url for s in shards[:4]]
    rel_index.unlink()


def _collect(stream, n, workers=0):
    it = iter(make_loader(stream, num_workers=workers))
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resumes_exactly_at_a_batch(shards, tokenizer, workers):
    # the per-video cap is off here (tests/test_batches.py covers it): this checks the epoch and worker bookkeeping
    kw = dict(batch_size=4, tokenizer=tokenizer, seed=7, shuffle_buffer=8, open_shards=2, max_per_video=None)
    full = _collect(SegmentStream(shards, **kw), 14, workers)  # 56 samples: crosses an epoch (about 34 usable)
    resumed = _collect(SegmentStream(shards, start_batch=9, **kw), 5, workers)
    for a, b in zip(full[9:], resumed):
        assert a["video_id"] == b["video_id"] and torch.equal(a["segment_index"], b["segment_index"])
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["input_ids"], b["input_ids"])
    keys = [(v, int(i)) for batch in full[:8] for v, i in zip(batch["video_id"], batch["segment_index"])]
    assert len(set(keys)) == len(keys)  # no segment twice within the first epoch
    assert all(int(n) > 0 for batch in full for n in batch["n_comments"])  # comment-less segments dropped
    assert full[0]["frames"].dtype == torch.uint8 and full[0]["frames"].shape == (4, 4, 32, 32, 3)


def test_shuffled_comments_control_pairs_each_segment_with_another_segments_comments(shards):
    kw = dict(batch_size=6, seed=5, shuffle_buffer=8, open_shards=3, max_per_video=None)
    own = _collect(SegmentStream(shards, **kw), 4)
    shuffled = _collect(SegmentStream(shards, shuffle_comments=True, **kw), 4)
    for a, b in zip(own, shuffled):
        assert a["video_id"] == b["video_id"] and torch.equal(a["frames"], b["frames"])  # same segments, same order
        assert sorted(map(tuple, a["comments"])) == sorted(map(tuple, b["comments"]))  # the batch's comments, moved
        assert all(x != y for x, y in zip(a["comments"], b["comments"]))  # no segment keeps its own
    again = _collect(SegmentStream(shards, shuffle_comments=True, start_batch=2, **kw), 2)
    assert [b["comments"] for b in again] == [b["comments"] for b in shuffled[2:]]  # a resume repeats the pairing


def test_ranks_split_an_epoch_without_overlap(shards):
    seen = []
    for rank in range(2):
        stream = SegmentStream(shards, batch_size=1, seed=1, rank=rank, world_size=2, infinite=False)
        seen.append({(v, int(i)) for batch in stream for v, i in zip(batch["video_id"], batch["segment_index"])})
    everything = {(v, int(i)) for batch in SegmentStream(shards, batch_size=1, infinite=False, shuffle=False)
                  for v, i in zip(batch["video_id"], batch["segment_index"])}
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == everything


def _write_bad_shard(path):
    good = io.BytesIO()
    np.save(good, np.zeros((4, 32, 32, 3), dtype=np.uint8))
    objects = io.BytesIO()
    np.save(objects, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    meta = lambda i: json.dumps({"video_id": "bad", "segment_index": i, "comments": ["好"]}).encode()  # noqa: E731
    members = [("bad_000000.frames.npy", good.getvalue()), ("bad_000000.json", meta(0)),
               ("bad_000001.frames.npy", objects.getvalue()), ("bad_000001.json", meta(1)),
               ("bad_000002.frames.npy", good.getvalue()), ("bad_000002.json", b"{not json"),
               ("bad_000003.frames.npy", good.getvalue()), ("bad_000003.json", meta(3))]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_samples_are_skipped_with_their_names(tmp_path, caplog):
    path = tmp_path / "bad.tar"
    _write_bad_shard(path)
    shard = [ShardSpec(str(path), "bad")]
    with caplog.at_level("WARNING"):
        batches = list(SegmentStream(shard, batch_size=8, shuffle=False, infinite=False))
    assert batches[0]["segment_index"].tolist() == [0, 3]
    text = caplog.text
    assert "bad.tar#bad_000001" in text and "not a plain .npy" in text
    assert "bad.tar#bad_000002" in text and "not UTF-8 JSON" in text
    with pytest.raises(ShardSampleError, match=r"bad_000001: frames.npy is not a plain .npy array"):
        list(SegmentStream(shard, batch_size=8, shuffle=False, infinite=False, on_error="raise"))
    missing = [ShardSpec(str(tmp_path / "gone.tar"), "gone"), *shard]
    with caplog.at_level("WARNING"):
        assert len(list(SegmentStream(missing, batch_size=8, shuffle=False, infinite=False))) == 1
    assert "gone.tar: cannot open shard" in caplog.text


def test_read_comments_for_the_tokenizer(shards):
    texts = read_comments(shards, limit=10)
    assert len(texts) == 10 and all(isinstance(t, str) and t for t in texts)


def test_shards_stream_from_an_fsspec_location(tmp_path) -> None:
    """The shard index and tars are read through fsspec (here memory://, as for s3://)."""
    import json

    import fsspec

    from lcaffect_ml.data import iter_raw_samples, load_shard_index
    from lcaffect_ml.synthetic import write_synthetic_shards

    index = write_synthetic_shards(tmp_path / "shards", n_videos=2, segments_per_video=3)
    fs = fsspec.filesystem("memory")
    entries = json.loads(index.read_text())
    remote = []
    for i, entry in enumerate(entries):
        url = f"memory://lcaffect-test/shards/{i}.tar"
        local = entry["url"] if Path(entry["url"]).is_absolute() else str(index.parent / entry["url"])
        fs.pipe(url.removeprefix("memory://"), Path(local).read_bytes())
        remote.append({**entry, "url": url})
    fs.pipe("lcaffect-test/shards/index.json", json.dumps(remote).encode())
    specs = load_shard_index("memory://lcaffect-test/shards/index.json")
    assert [s.url for s in specs] == [r["url"] for r in remote]
    samples = [s for spec in specs for s in iter_raw_samples(spec.url)]
    assert len(samples) == 6


def test_retrieval_by_group_ranks_each_group_in_its_own_pool():
    from lcaffect_ml.retrieval import retrieval_by_group, retrieval_metrics

    torch.manual_seed(0)
    n = 6  # segments 0-2 are group "a" (perfectly aligned), 3-5 group "b" (comments point elsewhere)
    videos = torch.eye(n, 8)
    comments = torch.cat([torch.eye(n, 8)[:3], torch.eye(n, 8)[[4, 5, 3]]])
    segment = torch.arange(n)
    groups = retrieval_by_group(videos, comments, segment, ["a", "a", "a", "b", "b", "b"])
    assert groups["a"]["v2c_r1"] == 1.0 and groups["b"]["v2c_r1"] == 0.0
    assert groups["a"]["chance_r1"] == pytest.approx(1 / 3) and groups["a"]["eval_segments"] == 3
    assert retrieval_metrics(videos, comments, segment)["v2c_r1"] == pytest.approx(0.5)
    # unnamed segments and one-segment groups are left out; names are not invented
    assert set(retrieval_by_group(videos, comments, segment, ["a", "a", None, "c", None, None])) == {"a"}
