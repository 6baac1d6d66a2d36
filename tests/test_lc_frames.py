"""The synthetic live-comment features' frame sampling, chosen on purpose: V2LC sees an utterance at
the frame rate it was trained at (its config.json, recorded by train_v2lc from the shards), looped
for an utterance shorter than a training clip; ``spread`` keeps the frames spread over the
utterance (the behaviour before the option)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lcaffect_ml.data import clip_timing, load_shard_index
from lcaffect_ml.synthetic import write_synthetic_shards
from lcaffect_ml.lc_features import effective_fps, lc_frame_indices, lc_frame_spacing
from lcaffect_pipeline.segments import frame_times


def _prepared_times(duration_ms: int, frames: int) -> np.ndarray:
    """The frame times media preparation stores: centres of equal slices of the utterance."""
    return frame_times([(0, duration_ms)], frames)[0]


def test_a_short_utterance_gets_frames_at_the_training_spacing_looped():
    times = _prepared_times(2500, 16)  # a 2.5-s MELD line prepared with 16 frames
    idx = lc_frame_indices(times, 8, spacing_s=1.0)
    chosen = times[idx]
    # 3 targets 1 s apart centred on 1.25 s (0.25, 1.25, 2.25 s), each the nearest prepared frame, looped to 8
    assert len(idx) == 8 and list(idx) == list(idx[:3]) * 2 + list(idx[:2])
    assert np.abs(chosen[:3] - np.array([250, 1250, 2250])).max() <= 2500 / 16 / 2 + 1  # half a slice (+ ms rounding)
    assert effective_fps(times, idx) == pytest.approx(1.0, abs=0.1)
    # the old behaviour, on request: 8 frames spread over 2.5 s, 2.8 frames a second
    spread = lc_frame_indices(times, 8, spacing_s=None)
    assert list(spread) == np.linspace(0, 15, 8).round().astype(int).tolist()
    assert effective_fps(times, spread) > 2.5


def test_a_training_length_utterance_is_the_training_clip_and_a_long_one_its_centred_window():
    times = _prepared_times(8000, 8)  # exactly a training clip: exactly its frames
    assert lc_frame_indices(times, 8, 1.0).tolist() == list(range(8))
    long = _prepared_times(20_000, 40)  # 20 s: the 8-s window in the middle, 1 s apart
    chosen = long[lc_frame_indices(long, 8, 1.0)]
    assert np.allclose(np.diff(chosen), 1000, atol=1) and abs((chosen[0] + chosen[-1]) / 2 - 10_000) <= 250
    one = _prepared_times(400, 4)  # shorter than one spacing: its middle frame, 8 times
    assert len(set(lc_frame_indices(one, 8, 1.0).tolist())) == 1 and effective_fps(one, lc_frame_indices(one, 8, 1.0)) is None


def test_the_training_rate_comes_from_the_checkpoint_or_a_said_fallback(tmp_path: Path, caplog):
    index = write_synthetic_shards(tmp_path / "shards", n_videos=2, segments_per_video=2, frames=4, size=8)
    assert clip_timing(load_shard_index(index)) == (8.0, 4)  # the synthetic clips: 8 s, 4 frames
    ckpt = tmp_path / "v2lc"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"train_segment_s": 8.0, "train_frames": 4}))
    assert lc_frame_spacing(ckpt) == (2.0, "checkpoint")
    (ckpt / "config.json").write_text(json.dumps({"video_encoder": "tiny"}))  # a checkpoint from before
    spacing, source = lc_frame_spacing(ckpt)
    assert spacing == 1.0 and source.startswith("fallback") and "records no training clip timing" in caplog.text


def test_the_ablation_says_how_lc_frames_were_sampled_and_which_released_splits_were_left_out():
    from lcaffect_pipeline.downstream.ablation import describe_setup, evaluation_setup

    features = {"models": {"audio": {"name": "released", "ignored_splits": {"train_mix": "semi-supervised"}},
                           "v2lc": {"frame_sampling": {"mode": "training_rate", "effective_fps": 0.98}}}}
    setup = evaluation_setup({"protocol": "official"}, features)
    assert setup["ignored_splits"] == {"train_mix": "semi-supervised"} and setup["lc_frames"]["mode"] == "training_rate"
    assert describe_setup({**setup, "context": {"used": False}}) == \
        "protocol official, context off, LC frames training_rate (0.98 fps), released splits not used: train_mix"
