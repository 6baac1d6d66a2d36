"""frames.py: fast sampling (non-reference frames and idle GOPs skipped) against a full decode,
the exact fallback, rotated videos, and the decord backend against PyAV's exact frames."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path, need_ffmpeg

from lcaffect_pipeline import frames as frames_module
from lcaffect_pipeline.frames import FRAME_TOLERANCE_MS, iter_frames, sample_frames
from lcaffect_pipeline.segments import frame_times, plan_segments, segment_video
from lcaffect_pipeline.probe import VideoDecodeError, probe_video

FPS = 30


def _counter_video(path: Path, x264: str, seconds: int = 16, extra: list[str] | None = None) -> Path:
    """64x64 at 30 fps whose 4x4 cells spell the frame number in binary (white = 1)."""
    lum = "if(mod(floor(N/pow(2,floor(X*4/W)+4*floor(Y*4/H))),2),235,16)"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    f"nullsrc=s=64x64:r={FPS}:d={seconds},geq=lum='{lum}':cb=128:cr=128",
                    "-c:v", "libx264", "-crf", "10", "-x264-params", x264, "-pix_fmt", "yuv420p", *(extra or []),
                    str(path)], check=True)
    return path


def _frame_numbers(frames: np.ndarray) -> list[int]:
    size = frames.shape[-2]
    centres = [int((k + 0.5) * size / 4) for k in range(4)]
    cells = frames[..., 0][..., centres, :][..., centres] > 127  # (..., row, column)
    bits = cells.reshape(-1, 16)
    return [int(sum(int(b) << k for k, b in enumerate(row))) for row in bits]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    need_ffmpeg()
    folder = tmp_path_factory.mktemp("counter")
    return {
        # Web-like: x264's default B-frames (3, pyramid), a keyframe every 1-2 s.
        "web": _counter_video(folder / "web.mp4", "keyint=60:min-keyint=30"),
        "all_p": _counter_video(folder / "all_p.mp4", "keyint=60:bframes=0"),
        # 16 non-reference B-frames in a row: 533 ms without a kept frame, over the tolerance.
        "long_b": _counter_video(folder / "long_b.mp4", "keyint=60:bframes=16:b-adapt=0:b-pyramid=none"),
    }


def _planned(path: Path, frames_per_segment: int = 8) -> np.ndarray:
    return frame_times(plan_segments(probe_video(path).duration_s), frames_per_segment)


def test_fast_frames_are_what_a_full_decode_shows_at_their_recorded_time(videos):
    table, frames = segment_video(videos["web"], size=32, frames_per_segment=8)
    planned = _planned(videos["web"])
    recorded = np.array(table.column("frame_times_ms").to_pylist())
    late = planned - recorded
    assert late.min() >= 0 and late.max() <= FRAME_TOLERANCE_MS
    assert late.max() > 0  # non-reference frames were skipped: some instants took an earlier kept frame
    exact = sample_frames(videos["web"], recorded.ravel(), 32)  # a reference decode of every frame
    assert np.array_equal(frames.reshape(exact.shape), exact)
    assert _frame_numbers(frames) == [int((t + 0.5) * FPS // 1000) for t in recorded.ravel()]


def test_exact_option_records_the_planned_instants(videos):
    table, frames = segment_video(videos["web"], size=32, frames_per_segment=8, exact=True)
    planned = _planned(videos["web"])
    assert table.column("frame_times_ms").to_pylist() == planned.tolist()
    assert _frame_numbers(frames) == [int(t * FPS // 1000) for t in planned.ravel()]


def test_stream_without_b_frames_is_decoded_exactly(videos):
    table, frames = segment_video(videos["all_p"], size=32, frames_per_segment=8)
    planned = _planned(videos["all_p"])
    assert table.column("frame_times_ms").to_pylist() == planned.tolist()
    assert _frame_numbers(frames) == [int(t * FPS // 1000) for t in planned.ravel()]


def test_unmet_tolerance_falls_back_to_exact_decoding(videos, caplog):
    caplog.set_level("INFO", logger="lcaffect_pipeline.frames")
    table, frames = segment_video(videos["long_b"], size=32, frames_per_segment=8)
    assert "decoding the rest exactly" in caplog.text
    planned, recorded = _planned(videos["long_b"]).ravel(), np.array(table.column("frame_times_ms").to_pylist()).ravel()
    assert np.all(planned - recorded <= FRAME_TOLERANCE_MS) and np.all(recorded <= planned)
    assert _frame_numbers(frames) == [int((t + 0.5) * FPS // 1000) for t in recorded]
    assert recorded[-1] == planned[-1]  # after the miss every instant is decoded exactly


@pytest.mark.parametrize("tolerance_ms", [0.0, FRAME_TOLERANCE_MS])
def test_gops_holding_no_needed_frame_are_not_decoded(videos, monkeypatch, tolerance_ms):
    decoded = []
    take = frames_module._Sampler.take

    def counting(self, frames, tb_ms, origin_ms):
        frames = list(frames)
        decoded.extend(frames)
        return take(self, frames, tb_ms, origin_ms)

    monkeypatch.setattr(frames_module._Sampler, "take", counting)
    out = list(iter_frames(videos["web"], np.array([500, 15500]), 32, tolerance_ms=tolerance_ms))
    assert _frame_numbers(np.stack([rgb for rgb, _ in out])) == [int((t + 0.5) * FPS // 1000) for _, t in out]
    # 480 frames in 1-2 s GOPs: the two GOPs holding the instants, and nothing after the last one.
    assert 0 < len(decoded) <= 2 * 60, len(decoded)


@pytest.mark.parametrize("name", ["big_buck_bunny_0_30.webm", "example.mp4", "no_duration.webm",
                                  "video_with_failing_audio.mp4", "clip1024.flv", "realshort.mp4"])
def test_fixture_videos_fast_frames_match_a_full_decode(name):
    need_ffmpeg()
    path = fixture_path("video", name)
    table, frames = segment_video(path, size=32, frames_per_segment=4)
    recorded = np.array(table.column("frame_times_ms").to_pylist())
    planned = _planned(path, 4)
    assert np.all(recorded <= planned) and np.all(planned - recorded <= FRAME_TOLERANCE_MS)
    exact = sample_frames(path, recorded.ravel(), 32)
    assert np.array_equal(frames.reshape(exact.shape), exact)


def _turned_video(folder: Path, rotate: int) -> Path:
    """64x32 stored, four 16 px vertical stripes (red, lime, blue, white), shown turned by ``rotate``."""
    plain, turned = folder / "plain.mp4", folder / f"turned{rotate}.mp4"
    if not plain.exists():
        colours = ["red", "lime", "blue", "white"]
        inputs = [a for c in colours for a in ("-f", "lavfi", "-i", f"color=c={c}:s=16x32:d=1:r=5")]
        subprocess.run(["ffmpeg", "-v", "error", *inputs, "-filter_complex", "hstack=inputs=4", "-c:v", "libx264",
                        "-qp", "0", "-pix_fmt", "yuv444p", str(plain)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}",
                    str(turned)], check=True)
    return turned


@pytest.mark.parametrize("backend", ["auto", "decord"])
def test_rotated_video_keeps_its_aspect(tmp_path, backend, caplog):
    need_ffmpeg()
    # Turned by 90 degrees: 32x64 on screen with four horizontal bands. The centre 32x32 crop
    # holds two bands.
    turned = _turned_video(tmp_path, 90)
    frame = sample_frames(turned, np.array([100]), 32, backend=backend)[0]
    # The ffmpeg command line turns the picture by the display matrix: the reference.
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(turned), "-frames:v", "1", "-vf", "crop=32:32",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    reference = np.frombuffer(raw, np.uint8).reshape(32, 32, 3)
    assert np.abs(frame.astype(int) - reference).max() < 40
    down = {tuple(int(v) > 127 for v in frame[y, 16]) for y in range(32)}
    across = {tuple(int(v) > 127 for v in frame[8, x]) for x in range(32)}
    assert len(down) == 2 and len(across) == 1  # two bands, one above the other (not four)


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotated_video_same_picture_from_either_backend(tmp_path, rotate, caplog):
    need_ffmpeg()
    turned = _turned_video(tmp_path, rotate)
    assert probe_video(turned).rotation % 180 == rotate % 180
    # 16 px: the turned picture is scaled (32x64 -> 16x32 when upright) before the centre crop.
    pyav = sample_frames(turned, np.array([100, 900]), 16, backend="pyav")
    decord = sample_frames(turned, np.array([100, 900]), 16, backend="decord")
    # decord 0.6 turns the picture but resizes it wrongly: PyAV decodes it, and the log says why.
    assert f"turned by {probe_video(turned).rotation} degrees" in caplog.text and "decord refused" in caplog.text
    assert np.array_equal(decord, pyav)


def test_clips_stage_exact_frames_option(videos, tmp_path):
    from lcaffect_pipeline import clips

    probe = {"status": "done", "output_hash": "h", "fingerprint": "f", "metrics": {"path": str(videos["web"])}}
    planned = _planned(videos["web"]).tolist()
    recorded, fingerprints = {}, set()
    for exact, backend in ((False, "auto"), (True, "auto"), (False, "decord")):
        opts = clips.ClipOptions(size=16, frames_per_segment=8, exact_frames=exact, frame_backend=backend)
        result = clips.segment_one({"video_id": "web", "platform": "local"}, None, root=tmp_path, probe=probe,
                                   comments_hash=None, opts=opts)
        fingerprints.add(result.fingerprint)
        recorded[exact, backend] = clips.segments_of(tmp_path, "web", result.output_hash).column("frame_times_ms").to_pylist()
    assert recorded[True, "auto"] == planned and recorded[False, "auto"] != planned
    assert recorded[False, "decord"] == planned  # decord decodes exactly
    assert len(fingerprints) == 3  # switching either option re-runs the segments
    with pytest.raises(ValueError, match="frame_backend 'opencv'"):
        clips.ClipOptions(frame_backend="opencv")


# ------------------------------------------------------------------------------ decord


@pytest.mark.parametrize("name", ["big_buck_bunny_0_30.webm", "example.mp4", "video_with_failing_audio.mp4",
                                  "clip1024.flv", "realshort.mp4", "big_buck_bunny_432_433.webm"])
def test_decord_frames_equal_pyav_exact_frames_on_fixture_videos(name, caplog):
    need_ffmpeg()
    path = fixture_path("video", name)
    times = _planned(path, 4).ravel()
    pyav = sample_frames(path, times, 32, backend="pyav").astype(int)
    decord = sample_frames(path, times, 32, backend="decord")
    assert "decord refused" not in caplog.text  # decord itself decoded them
    # The same frames: the scalers differ by a few levels; the next frame differs by tens.
    per_frame = np.abs(decord - pyav).mean(axis=(1, 2, 3))
    assert per_frame.max() < 3, per_frame


def test_decord_frames_are_the_ones_on_screen(videos, caplog):
    times = _planned(videos["web"]).ravel()
    table, frames = segment_video(videos["web"], size=32, frames_per_segment=8, backend="decord")
    assert "decord refused" not in caplog.text
    assert table.column("frame_times_ms").to_pylist() == _planned(videos["web"]).tolist()  # exact
    assert _frame_numbers(frames) == [int(t * FPS // 1000) for t in times]
    pyav = sample_frames(videos["web"], times, 32, backend="pyav")
    assert np.abs(frames.reshape(pyav.shape).astype(int) - pyav).mean() < 3


def test_decord_refusal_falls_back_to_pyav_and_says_why(caplog):
    need_ffmpeg()
    path = fixture_path("video", "no_duration.webm")  # no duration in the container
    times = _planned(path, 4).ravel()
    frames = sample_frames(path, times, 32, backend="decord")
    assert "decord refused" in caplog.text and "no_duration.webm" in caplog.text
    assert "broken metadata" in caplog.text  # decord's own reason, without its source-file prefix
    assert "video_reader.cc" not in caplog.text
    assert np.array_equal(frames, sample_frames(path, times, 32, backend="pyav"))


def test_decord_on_a_truncated_file_says_why_and_pyav_reports_the_cut(tmp_path, caplog):
    need_ffmpeg()
    cut = tmp_path / "cut.webm"  # the container declares 30 s; the frames stop near 13 s
    cut.write_bytes(fixture_path("video", "big_buck_bunny_0_30.webm").read_bytes()[:600_000])
    with pytest.raises(VideoDecodeError, match="truncated"):
        sample_frames(cut, _planned(cut, 4).ravel(), 32, backend="decord")
    assert "decord refused" in caplog.text and "frames end at" in caplog.text
