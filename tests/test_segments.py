"""segments.py: segment plans, frame sampling on every fixture video, comment assignment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import fixture_path, need_ffmpeg

from lcaffect_pipeline import lake
from lcaffect_pipeline.schema import CLEAN_COMMENTS_SCHEMA, COMMENTS_SCHEMA, SEGMENTS_SCHEMA
from lcaffect_pipeline.segments import assign_comments_duckdb, frame_times, plan_segments, segment_video
from lcaffect_pipeline.frames import sample_frames
from lcaffect_pipeline.probe import VideoDecodeError

# ------------------------------------------------------------------------------ plan


@pytest.mark.parametrize("duration_s, expected", [
    (30.003, [(0, 8000), (8000, 16000), (16000, 24000), (24000, 30003)]),  # 6 s tail kept
    (16.0, [(0, 8000), (8000, 16000)]),
    (12.0, [(0, 8000), (8000, 12000)]),  # a tail of exactly half a segment is kept
    (11.9, [(0, 8000)]),  # a shorter tail is dropped
    (17.3, [(0, 8000), (8000, 16000)]),
    (4.938, [(0, 4938)]),  # shorter than a segment: one segment over all of it
    (1.0, [(0, 1000)]),
    (0.5, [(0, 500)]),
    (0.49, []),  # under MIN_VIDEO_S: nothing to learn from
])
def test_plan_segments_tail_policy(duration_s, expected):
    assert plan_segments(duration_s, 8.0) == expected


def test_frame_times_are_inside_their_segment_and_evenly_spaced():
    spans = plan_segments(30.003)
    times = frame_times(spans, 8)
    assert times.shape == (4, 8) and times.dtype == np.int64
    for (start, end), row in zip(spans, times):
        assert start < row[0] and row[-1] < end
        gaps = np.diff(row)
        assert gaps.max() - gaps.min() <= 1  # even, up to integer rounding
    assert times[0].tolist() == [500, 1500, 2500, 3500, 4500, 5500, 6500, 7500]


# ------------------------------------------------------------------------------ fixture videos

# name: segments expected from the tail policy (durations in ../shared/fixtures/README.md)
EXPECTED_SEGMENTS = {
    "big_buck_bunny_0_30.webm": 4,  # 30.0 s: three segments and the 6 s tail
    "example.mp4": 2,  # exactly 16 s
    "no_duration.webm": 1,  # 4.94 s (found from packets)
    "video_with_failing_audio.mp4": 1,  # 11.2 s: the 3.2 s tail is under half a segment
    "big_buck_bunny_432_433.webm": 1,  # 1 s: one short segment
    "clip1024.flv": 2,  # 17.3 s VP6 in FLV: the 1.3 s tail is dropped
    "realshort.mp4": 1,  # 1.2 s
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SEGMENTS))
def test_segment_fixture_video(name):
    need_ffmpeg()
    path = fixture_path("video", name)
    table, frames = segment_video(path, size=32, frames_per_segment=4)
    n = EXPECTED_SEGMENTS[name]
    assert table.schema.equals(SEGMENTS_SCHEMA, check_metadata=False)
    assert table.num_rows == n and frames.shape == (n, 4, 32, 32, 3) and frames.dtype == np.uint8
    rows = table.to_pylist()
    assert [r["segment_index"] for r in rows] == list(range(n))
    assert all(r["video_id"] == path.stem for r in rows)
    assert all(r["shard"] is None and r["sample_key"] is None and r["comments"] == [] for r in rows)
    for r in rows:
        assert len(r["frame_times_ms"]) == 4
        assert all(r["start_ms"] <= t < r["end_ms"] for t in r["frame_times_ms"])
    assert frames.reshape(-1, 32 * 32 * 3).std(axis=0).max() > 0  # content changes across frames
    assert frames.std() > 0


def test_video_shorter_than_min_gives_no_segment(tmp_path):
    need_ffmpeg()
    tiny = tmp_path / "tiny.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10:duration=0.3",
                    "-pix_fmt", "yuv420p", str(tiny)], check=True)
    table, frames = segment_video(tiny, size=16, frames_per_segment=2)
    assert table.num_rows == 0 and frames.shape == (0, 2, 16, 16, 3)


def _copy_cut(tmp_path: Path, name: str, fraction: float) -> Path:
    data = fixture_path("video", name).read_bytes()
    out = tmp_path / f"cut_{name}"
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


@pytest.mark.parametrize("name, fraction, reason", [
    ("example.mp4", 0.5, "truncated"),  # index at the front: ffprobe believes 16 s, frames stop at 8
    ("big_buck_bunny_0_30.webm", 0.5, "truncated"),
    ("example.mp4", 0.0, "empty file"),
    ("realshort.mp4", 0.5, "moov atom not found"),  # index at the end: cut off
])
def test_broken_files_raise_video_decode_error(tmp_path, name, fraction, reason):
    need_ffmpeg()
    path = _copy_cut(tmp_path, name, fraction)
    with pytest.raises(VideoDecodeError) as err:
        segment_video(path, size=16, frames_per_segment=2)
    assert reason in err.value.reason and err.value.path == str(path)


def test_wrong_container_raises(tmp_path):
    need_ffmpeg()
    fake = tmp_path / "fake.webm"
    fake.write_bytes(fixture_path("video", "example.mp4").read_bytes()[4096:8192])  # no header at all
    with pytest.raises(VideoDecodeError, match="ffprobe"):
        segment_video(fake, size=16, frames_per_segment=2)


# ------------------------------------------------------------------------------ frame choice


def _clock_video(path: Path, fps: int = 10, seconds: int = 16, extra: list[str] | None = None) -> Path:
    """Square video whose 8 vertical bands spell the frame number in binary (white = 1)."""
    lum = "if(mod(floor(N/pow(2,floor(X*8/W))),2),235,16)"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    f"nullsrc=s=64x64:r={fps}:d={seconds},geq=lum='{lum}':cb=128:cr=128",
                    "-c:v", "libx264", "-qp", "0", "-g", "25", "-pix_fmt", "yuv420p", *(extra or []), str(path)],
                   check=True)
    return path


def _frame_numbers(frames: np.ndarray) -> list[int]:
    """Read the binary frame number back from 32x32 frames (band centres)."""
    size = frames.shape[-2]
    centres = [int((k + 0.5) * size / 8) for k in range(8)]
    bits = frames[..., size // 2, centres, 0] > 127
    return [int(sum(int(b) << k for k, b in enumerate(row))) for row in bits.reshape(-1, 8)]


@pytest.fixture(scope="module")
def clock(tmp_path_factory):
    need_ffmpeg()
    folder = tmp_path_factory.mktemp("clock")
    return {
        "mp4": _clock_video(folder / "clock.mp4"),
        "ts": _clock_video(folder / "clock.ts", extra=["-f", "mpegts"]),  # starts at 1.4 s, not 0
    }


@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("kind", ["mp4", "ts"])
def test_sampled_frame_is_the_one_on_screen(clock, threads, kind):
    times = np.array([0, 50, 99, 100, 101, 1000, 3333, 7999, 12345, 15950])
    frames = sample_frames(clock[kind], times, 32, threads=threads)
    assert _frame_numbers(frames) == [int(t // 100) for t in times]  # 10 fps: frame k from 100 k ms


def test_segment_video_frames_follow_frame_times(clock):
    table, frames = segment_video(clock["mp4"], size=32, frames_per_segment=5)
    times = np.array(table.column("frame_times_ms").to_pylist())
    assert _frame_numbers(frames) == (times // 100).ravel().tolist()


@pytest.mark.parametrize("kind", ["mp4", "ts"])
def test_decord_frame_is_the_one_on_screen(clock, kind, caplog):
    times = np.array([0, 50, 99, 100, 101, 1000, 3333, 7999, 12345, 15950])
    frames = sample_frames(clock[kind], times, 32, backend="decord")
    assert "decord refused" not in caplog.text  # decord itself decoded them
    assert _frame_numbers(frames) == [int(t // 100) for t in times]


def test_unknown_frame_backend_is_refused():
    with pytest.raises(ValueError, match=r"unknown frame backend .opencv.: one of auto \| pyav \| decord"):
        sample_frames(fixture_path("video", "example.mp4"), np.array([100]), 32, backend="opencv")


def test_resize_keeps_aspect_and_crops_the_centre(tmp_path):
    need_ffmpeg()
    # 128x64: left quarter red, middle half green, right quarter blue. Short side -> 32, crop the
    # centre 32x32 of 64x32: only the green half remains.
    path = tmp_path / "bands.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=32x64:d=1:r=5",
                    "-f", "lavfi", "-i", "color=c=lime:s=64x64:d=1:r=5",
                    "-f", "lavfi", "-i", "color=c=blue:s=32x64:d=1:r=5",
                    "-filter_complex", "[0][1][2]hstack=inputs=3", "-pix_fmt", "yuv444p", "-c:v", "libx264",
                    "-qp", "0", str(path)], check=True)
    frame = sample_frames(path, np.array([100]), 32)[0].astype(int)
    assert frame.shape == (32, 32, 3)
    assert frame[..., 1].min() > 200 and frame[..., 0].max() < 60 and frame[..., 2].max() < 60


# ------------------------------------------------------------------------------ comments


def _comments(rows, schema=COMMENTS_SCHEMA) -> pa.Table:
    """rows: (video_id, comment_id, offset_ms, text)."""
    cols = {f.name: [None] * len(rows) for f in schema}
    cols.update(
        platform=["local"] * len(rows), video_id=[r[0] for r in rows], comment_id=[r[1] for r in rows],
        offset_ms=[r[2] for r in rows], text=[r[3] for r in rows], mode=["scroll"] * len(rows),
        superchat=[False] * len(rows), source_file=["hand-made"] * len(rows),
    )
    return pa.table(cols, schema=schema)


def _segments(video_id: str, spans) -> pa.Table:
    n = len(spans)
    return pa.table({
        "video_id": [video_id] * n, "segment_index": list(range(n)),
        "start_ms": [s for s, _ in spans], "end_ms": [e for _, e in spans],
        "comments": [[]] * n, "comment_ids": [[]] * n, "comment_count": [0] * n,
        "frame_times_ms": [[s] for s, _ in spans], "shard": [None] * n, "sample_key": [None] * n,
    }, schema=SEGMENTS_SCHEMA)


def test_comments_go_to_the_segment_holding_their_offset():
    segs = _segments("v1", [(0, 8000), (8000, 16000), (16000, 20000)])
    comments = _comments([
        ("v1", "a", 0, "第一个镜头"), ("v1", "b", 7999, "最后一刻的弹幕"), ("v1", "c", 8000, "第二段开始了"),
        ("v1", "d", 19999, "尾巴上的评论"), ("v1", "e", 20000, "片尾之后"), ("v1", "f", -5, "片头之前"),
        ("v2", "g", 100, "别的视频"),
    ])
    out = assign_comments_duckdb(comments, segs).to_pylist()
    assert [r["comment_ids"] for r in out] == [["a", "b"], ["c"], ["d"]]  # order of appearance
    assert [r["comment_count"] for r in out] == [2, 1, 1]
    assert [r["frame_times_ms"] for r in out] == [[0], [8000], [16000]]  # passes through


def _busy_segment_comments():
    return _comments([
        ("v", "01", 100, "哈哈哈哈哈哈"), ("v", "02", 200, "233"), ("v", "03", 300, "草"),
        ("v", "04", 400, "这个镜头太美了"), ("v", "05", 500, "这个镜头太美了"),  # exact duplicate
        ("v", "06", 600, "lol"), ("v", "07", 700, "www"), ("v", "08", 800, "画面真好看"),
        ("v", "09", 900, "好"), ("v", "10", 1000, "主角出场！！"), ("v", "11", 1100, "😂😂😂"),
    ], schema=CLEAN_COMMENTS_SCHEMA)


def test_default_keeps_every_comment_in_order_of_appearance_laughter_included():
    segs = _segments("v", [(0, 8000)])
    (row,) = assign_comments_duckdb(_busy_segment_comments(), segs).to_pylist()
    # laughter and filler are the affect signal: kept, in the order viewers wrote them; only the
    # exact duplicate (05) goes
    assert row["comment_ids"] == ["01", "02", "03", "04", "06", "07", "08", "09", "10", "11"]
    assert row["comments"][:3] == ["哈哈哈哈哈哈", "233", "草"]
    (row,) = assign_comments_duckdb(_busy_segment_comments(), segs, k=3).to_pylist()
    assert row["comment_ids"] == ["01", "02", "03"]  # the cap keeps the earliest


def test_selection_can_demote_filler_as_an_option():
    segs = _segments("v", [(0, 8000)])
    comments = _busy_segment_comments()
    (row,) = assign_comments_duckdb(comments, segs, k=5, demote_filler=True).to_pylist()
    # informative by distinct characters (7, 5, 4), then filler: "233" and "lol" (2 distinct) by offset,
    assert row["comments"] == ["这个镜头太美了", "画面真好看", "主角出场！！", "233", "lol"]
    assert row["comment_ids"] == ["04", "08", "10", "02", "06"]
    assert row["comment_count"] == 11  # every comment in the window, duplicates included
    (row,) = assign_comments_duckdb(comments, segs, k=20, demote_filler=True).to_pylist()
    assert len(row["comments"]) == 10 and "05" not in row["comment_ids"]  # the duplicate is gone
    assert row["comment_ids"][-5:] == ["01", "07", "03", "09", "11"]  # filler: longer first, then offset


def test_ties_break_by_offset_then_comment_id():
    segs = _segments("v", [(0, 8000)])
    comments = _comments([("v", "z", 500, "甲乙丙丁"), ("v", "b", 300, "一二三四"), ("v", "a", 300, "五六七八")])
    for demote in (False, True):
        (row,) = assign_comments_duckdb(comments, segs, demote_filler=demote).to_pylist()
        assert row["comment_ids"] == ["a", "b", "z"]


def test_segment_without_comments_has_empty_lists():
    segs = _segments("v", [(0, 8000), (8000, 16000)])
    out = assign_comments_duckdb(_comments([("v", "a", 9000, "只有第二段")]), segs).to_pylist()
    assert out[0]["comments"] == [] and out[0]["comment_ids"] == [] and out[0]["comment_count"] == 0
    assert out[1]["comments"] == ["只有第二段"]


def test_assignment_over_a_parquet_corpus_matches_the_table(tmp_path):
    c1 = _comments([("v1", f"c{i}", i * 700, f"第{i}条有意义的评论") for i in range(30)])
    c2 = _comments([("v2", f"d{i}", i * 900, f"另一个视频的第{i}条") for i in range(20)])
    lake.write_parquet(c1, tmp_path / "clean" / "local" / "v1.parquet")
    lake.write_parquet(c2, tmp_path / "clean" / "local" / "v2.parquet")
    segs = pa.concat_tables([_segments("v1", [(0, 8000), (8000, 16000)]), _segments("v2", [(0, 8000)])])
    lake.write_parquet(segs, tmp_path / "segments" / "all.parquet")
    from_glob = assign_comments_duckdb(str(tmp_path / "clean" / "*" / "*.parquet"),
                                       str(tmp_path / "segments" / "*.parquet"))
    from_tables = assign_comments_duckdb(pa.concat_tables([c1, c2]), segs)
    assert from_glob.equals(from_tables)
    assert from_glob.column("comment_count").to_pylist() == [12, 11, 9]  # 700 ms apart: 0..7700, 8400..15400; 900 ms: 0..7200


def test_segment_video_with_comments_infers_video_id():
    need_ffmpeg()
    comments = _comments([("BV1", "1", 500, "开头很精彩"), ("BV1", "2", 9000, "第二段的弹幕"),
                          ("BV1", "3", 15500, "哈哈哈")])
    table, _ = segment_video(fixture_path("video", "example.mp4"), comments, size=16, frames_per_segment=2)
    rows = table.to_pylist()
    assert [r["video_id"] for r in rows] == ["BV1", "BV1"]
    assert [r["comments"] for r in rows] == [["开头很精彩"], ["第二段的弹幕", "哈哈哈"]]
    assert rows[1]["frame_times_ms"] == [10000, 14000]


def test_comments_of_several_videos_need_a_video_id():
    need_ffmpeg()
    comments = _comments([("a", "1", 500, "x"), ("b", "2", 500, "y")])
    with pytest.raises(ValueError, match="video_id"):
        segment_video(fixture_path("video", "realshort.mp4"), comments, size=16, frames_per_segment=2)
    table, _ = segment_video(fixture_path("video", "realshort.mp4"), comments, size=16, frames_per_segment=2,
                             video_id="b")
    assert table.column("comment_ids").to_pylist() == [["2"]]
