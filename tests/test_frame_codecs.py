"""Compressed frames in the training shards: the codecs of the shard contract, old raw shards
still read, the default clips options' bytes on real footage, the codec in the fingerprint."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import fixture_path, index_shards, need_ffmpeg

from lcaffect_ml.contracts import shards as layout
from lcaffect_ml.data import SegmentStream, ShardSampleError, ShardSpec, decode_frames
from lcaffect_pipeline import clips
from lcaffect_pipeline.segments import segment_video
from lcaffect_pipeline.shards import verify_shards

MIN_PSNR_DB = 38.0  # the bar the default codec was chosen by (docs/OPERATIONS.md, "Frame codec")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.fixture(scope="module")
def real_segments():
    """The exact frames of the fixture's two 8-frame, 224-px segments (H.264, 640x480)."""
    need_ffmpeg()
    table, frames = segment_video(fixture_path("video", "example.mp4"), size=224, frames_per_segment=8, video_id="ex")
    return table, frames


def test_default_codec_round_trip_on_real_frames(real_segments):
    _, frames = real_segments
    for seg in frames:
        member, data = layout.encode_frames(seg)
        assert member == "frames.jpg" and len(data) * 5 <= seg.nbytes
        back = layout.decode_frames_member(member, data)
        assert back.shape == seg.shape and back.dtype == np.uint8
        assert psnr(back, seg) >= MIN_PSNR_DB
    webp = layout.decode_frames_member(*layout.encode_frames(frames[0], "webp", 90))
    assert webp.shape == frames[0].shape and psnr(webp, frames[0]) > 25


def test_webdataset_reads_the_jpeg_member_as_one_image(real_segments, tmp_path):
    """WebDataset's own image decoder reads the member; reshaping by its width gives the frames."""
    table, frames = real_segments
    path = tmp_path / "s.tar"
    with wds.TarWriter(str(path), encoder=False) as tw:
        tw.write(layout.encode_sample({**table.to_pylist()[0], "comments": ["x"], "comment_ids": ["1"]}, frames[0]))
    (sample,) = list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False).decode("rgb8"))
    tile = sample["frames.jpg"]
    assert tile.shape == (8 * 224, 224, 3)
    assert np.array_equal(tile.reshape(frames[0].shape), layout.decode_frames_member(
        "frames.jpg", layout.encode_frames(frames[0])[1]))


def test_bad_codec_options_and_members_are_refused():
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="frame_codec 'png'"):
        layout.encode_frames(frames, "png")
    with pytest.raises(ValueError, match="frame_quality 0"):
        clips.ClipOptions(frame_quality=0)
    with pytest.raises(ValueError, match="square"):
        layout.encode_frames(np.zeros((2, 16, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="over WebP's"):
        layout.encode_frames(np.zeros((1100, 16, 16, 3), np.uint8), "webp")
    with pytest.raises(ValueError, match="frames.jpg is not a readable image"):
        layout.decode_frames_member("frames.jpg", b"not a jpeg")
    wide = io.BytesIO()
    from PIL import Image
    Image.new("RGB", (16, 24)).save(wide, "JPEG")
    with pytest.raises(ValueError, match="not a stack of square frames"):
        layout.decode_frames_member("frames.jpg", wide.getvalue())
    with pytest.raises(ShardSampleError, match=r"k: sample has no frames member \(one of frames.npy"):
        decode_frames({"__key__": "k", "__url__": "u", "json": b"{}"})


def _old_shard(path: Path, video_id: str, frames: np.ndarray) -> None:
    """A shard as the writer made it before frame codecs: ``{key}.frames.npy`` and ``{key}.json``."""
    with tarfile.open(path, "w") as tar:
        for i, stack in enumerate(frames):
            buf = io.BytesIO()
            np.save(buf, stack, allow_pickle=False)
            meta = {"video_id": video_id, "segment_index": i, "start_ms": 8000 * i, "end_ms": 8000 * (i + 1),
                    "comments": [f"c{i}"], "comment_ids": [str(i)], "comment_count": 1,
                    "frame_times_ms": [8000 * i + 1000 * j for j in range(len(stack))]}
            for name, data in ((f"{video_id}_{i:06d}.frames.npy", buf.getvalue()),
                               (f"{video_id}_{i:06d}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_raw_npy_shards_and_compressed_ones_load_together(tmp_path):
    rng = np.random.default_rng(0)
    old_frames = rng.integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
    _old_shard(tmp_path / "old.tar", "old", old_frames)
    new_frames = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, None, :, None], (2, 4, 32, 1, 3))
    with wds.TarWriter(str(tmp_path / "new.tar"), encoder=False) as tw:
        for i, stack in enumerate(new_frames):
            tw.write(layout.encode_sample({"video_id": "new", "segment_index": i, "start_ms": 0, "end_ms": 8000,
                                           "comments": ["n"], "comment_ids": ["n"], "comment_count": 1,
                                           "frame_times_ms": [0, 1, 2, 3]}, stack))
    shards = [ShardSpec(str(tmp_path / "old.tar"), "old"), ShardSpec(str(tmp_path / "new.tar"), "new")]
    got = {}
    for batch in SegmentStream(shards, batch_size=2, shuffle=False, infinite=False, on_error="raise"):
        for vid, idx, frames in zip(batch["video_id"], batch["segment_index"].tolist(), batch["frames"].numpy()):
            got[(vid, idx)] = frames
    assert sorted(got) == [("new", 0), ("new", 1), ("old", 0), ("old", 1)]
    assert all(np.array_equal(got[("old", i)], old_frames[i]) for i in range(2))  # raw frames: exact
    assert all(psnr(got[("new", i)], new_frames[i]) >= MIN_PSNR_DB for i in range(2))


def _segment(root: Path, opts: clips.ClipOptions):
    probe = {"status": "done", "output_hash": "h", "fingerprint": "f",
             "metrics": {"path": str(fixture_path("video", "example.mp4"))}}
    return clips.segment_one({"video_id": "ex", "platform": "local"}, None, root=root, probe=probe,
                             comments_hash=None, opts=opts)


def test_default_clips_options_write_a_fifth_of_the_raw_bytes_on_real_footage(tmp_path, real_segments):
    need_ffmpeg()
    result = _segment(tmp_path, clips.ClipOptions())
    tars = list((tmp_path / "shards").rglob("*.tar"))
    table = clips.segments_of(tmp_path, "ex", result.output_hash)
    raw_bytes = table.num_rows * clips.ClipOptions().frames_per_segment * 224 * 224 * 3
    assert table.num_rows == 2 and sum(p.stat().st_size for p in tars) * 5 <= raw_bytes
    index_shards(tmp_path / "shards", table)
    assert verify_shards(table, tmp_path / "shards", check_hashes=True) == []  # the check reads jpeg members
    _, exact = real_segments
    for row, seg in zip(table.to_pylist(), exact):
        with tarfile.open(tmp_path / "shards" / row["shard"]) as tar:
            data = tar.extractfile(f"{row['sample_key']}.frames.jpg").read()
        assert psnr(layout.decode_frames_member("frames.jpg", data), seg) >= MIN_PSNR_DB


def test_the_codec_is_part_of_the_shard_fingerprint(tmp_path):
    need_ffmpeg()
    base = clips.ClipOptions(size=32, frames_per_segment=2)
    assert set(clips.ClipOptions.SHARD_FIELDS) <= {f.name for f in dataclasses.fields(clips.ClipOptions)}
    prints = {_segment(tmp_path, dataclasses.replace(base, **change)).fingerprint
              for change in ({}, {"frame_codec": "npy"}, {"frame_quality": 80}, {"frame_codec": "webp"})}
    assert len(prints) == 4
    # Options that do not shape the shards leave it as it is.
    assert _segment(tmp_path / "b", dataclasses.replace(base, cookie_file="c.txt", max_height=720)).fingerprint in prints
    folders = sorted(p.parent.name for p in (tmp_path / "shards").rglob("*.tar"))
    assert len(set(folders)) == 4  # one version folder per codec setting, none replaced


@pytest.mark.slow  # a real (tiny) training run, ~8 s; the fast test above covers the reading
def test_a_lake_of_raw_npy_shards_trains(tmp_path):
    """Shards of codec ``npy`` (exact frames, ``frames.npy``) train V2LC as the compressed ones do."""
    from lcaffect_ml.train_v2lc import TrainConfig, train

    rng = np.random.default_rng(1)
    urls = []
    for v in range(4):
        _old_shard(tmp_path / f"old{v}.tar", f"old{v}", rng.integers(0, 256, (4, 4, 32, 32, 3), dtype=np.uint8))
        urls.append(str(tmp_path / f"old{v}.tar"))
    metrics = train(TrainConfig(shards=urls, output_dir=str(tmp_path / "out"), max_steps=2, batch_size=4,
                                num_workers=0, warmup_steps=1, checkpoint_every=2, eval_fraction=0.0, embed_dim=16,
                                progress=False, on_error="raise"))
    assert metrics["steps"] == 2 and metrics["clips_seen"] == 8 and np.isfinite(metrics["final_loss"])
