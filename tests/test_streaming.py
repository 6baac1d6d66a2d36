"""Long videos stream: frames reach the shards one segment at a time in bounded memory, a stream
failing part-way keeps the previous shards, and ``max_duration_s`` holds for local videos."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import ROOT, fixture_path, index_shards, need_ffmpeg

from lcaffect_pipeline import clips
from lcaffect_pipeline.clips import ClipOptions
from lcaffect_pipeline.schema import SEGMENTS_SCHEMA
from lcaffect_pipeline.shards import verify_shards, write_shard_stream

V = "a" * 16  # the version folder the stream tests write in
from lcaffect_pipeline.stages import run_stage

# Runs the clips stage's segment step on one video in a fresh process and reports how far its
# resident memory rose above what the imports take.
CHILD = r'''
import json, resource, sys
import av, duckdb, numpy  # noqa: F401  (imported before the baseline)
import lcaffect_pipeline.segments, lcaffect_pipeline.shards  # noqa: F401
from lcaffect_pipeline import clips

def status_kib(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))

video, root, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
probe = {"status": "done", "output_hash": "h", "fingerprint": "f", "metrics": {"path": video}}
opts = clips.ClipOptions(size=size, frames_per_segment=8, max_shard_bytes=40_000_000, frame_codec="npy")  # raw: known sizes
base = status_kib("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # restart the peak (VmHWM) from here
    peak_key = "VmHWM"
except OSError:
    peak_key = None
result = clips.segment_one({"video_id": "long", "platform": "local"}, None, root=root, probe=probe,
                           comments_hash=None, opts=opts)
peak = status_kib(peak_key) if peak_key else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": peak - base, "segments": result.rows, "frames_bytes": result.metrics["frames_bytes"],
                  "output_hash": result.output_hash}))
'''


@pytest.fixture(scope="module")
def hour_long_video(tmp_path_factory) -> Path:
    need_ffmpeg()
    path = tmp_path_factory.mktemp("long") / "hour.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=32x32:rate=1:duration=3600",
                    "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_hour_long_video_streams_into_shards_in_bounded_memory(hour_long_video, tmp_path):
    root = tmp_path / "lake"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(hour_long_video), str(root), "112"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["segments"] == 450
    assert report["frames_bytes"] == 450 * 8 * 112 * 112 * 3  # 135 MB of frames went through
    assert report["growth_kib"] < 48 * 1024, report  # holding them all would take 135 MB or more
    table = clips.segments_of(root, "long", report["output_hash"])
    index_shards(clips.shards_dir(root), table)
    assert verify_shards(table, clips.shards_dir(root), check_hashes=True) == []
    assert len(set(table.column("shard").to_pylist())) == 4  # split at 40 MB while streaming


def _table(n: int) -> pa.Table:
    return pa.table({
        "video_id": ["v"] * n, "segment_index": list(range(n)), "start_ms": [8000 * i for i in range(n)],
        "end_ms": [8000 * (i + 1) for i in range(n)], "comments": [["好看"]] * n, "comment_ids": [["1"]] * n,
        "comment_count": [1] * n, "frame_times_ms": [[8000 * i + 500, 8000 * i + 4500] for i in range(n)],
        "shard": [None] * n, "sample_key": [None] * n,
    }, schema=SEGMENTS_SCHEMA)


def _stacks(n: int, seed: int, fail_at: int | None = None):
    rng = np.random.default_rng(seed)
    for i in range(n):
        if i == fail_at:
            raise RuntimeError("decoder gave up")
        yield rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8), [8000 * i + 400, 8000 * i + 4400]


def test_stream_failing_part_way_keeps_the_previous_shards(lake_root):
    root = lake_root / "shards"
    first = write_shard_stream(_table(3), _stacks(3, seed=0), root, "v", version=V, max_shard_bytes=4000)
    assert first.column("frame_times_ms").to_pylist()[1] == [8400, 12400]  # the times taken are recorded
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert len([p for p in before if p.suffix == ".tar"]) == 3
    with pytest.raises(RuntimeError, match="decoder gave up"):
        write_shard_stream(_table(3), _stacks(3, seed=1, fail_at=2), root, "v", version=V, max_shard_bytes=4000)
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before  # no shard of the failed run replaced one, no temporary file left
    index_shards(root, first)
    assert verify_shards(first, root, check_hashes=True) == []


def test_stream_with_fewer_stacks_than_segments_is_refused(lake_root):
    with pytest.raises(ValueError, match="frame stacks ended before segment 2"):
        write_shard_stream(_table(3), _stacks(2, seed=0), lake_root / "shards", "v", version=V)
    assert not list((lake_root / "shards").rglob("*.tar"))


def test_max_duration_applies_to_local_videos(lake_root):
    need_ffmpeg()
    video = {"video_id": "ex", "platform": "local", "video": str(fixture_path("video", "example.mp4"))}  # 16 s
    with pytest.raises(ValueError, match=r"16\.0 s long, over max_duration_s = 10 s") as err:
        clips.fetch_video(video, None, root=lake_root, opts=ClipOptions(max_duration_s=10))
    assert "example.mp4" in str(err.value)
    assert not clips.videos_dir(lake_root).exists() or not list(clips.videos_dir(lake_root).iterdir())
    done = clips.fetch_video(video, None, root=lake_root, opts=ClipOptions(max_duration_s=60))
    assert done.status == "done" and Path(done.metrics["path"]).exists()


def test_a_local_file_that_is_not_a_video_is_refused_not_copied(lake_root, tmp_path):
    """``video: /etc/passwd`` (any local file) is probed before it is copied: the video fails with
    ffprobe's reason, and nothing enters the lake."""
    need_ffmpeg()
    text = tmp_path / "notes.mp4"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 50)
    videos = [{"video_id": "v4", "platform": "local", "video": str(text)},
              {"video_id": "ok", "platform": "local", "video": str(fixture_path("video", "example.mp4"))}]
    fetch = functools.partial(clips.fetch_video, root=lake_root, opts=ClipOptions())
    bad, good = run_stage(lake_root, "fetch", videos, fetch)
    assert bad.status == "failed" and "VideoDecodeError" in bad.reason and str(text) in bad.reason
    assert good.status == "done"
    assert [p.name for p in clips.videos_dir(lake_root).iterdir() if p.name.startswith("v4")] == []
