"""Frames: the picture a segment needs at each frame time, decoded with PyAV (FFmpeg's libraries).

Policies (each one a documented choice):

* Times are ms from the video stream's start (its first frame). The picture for a time ``t`` is
  the frame on screen then: the last frame whose timestamp is not after ``t``.
* Fast mode (``tolerance_ms > 0``, what ``segment_video`` uses, ``FRAME_TOLERANCE_MS``): the
  decoder skips non-reference frames (``skip_frame = "NONREF"``: in web encodes the B-frames no
  other frame refers to, about 40 % of the frames of x264 ``medium``), and ``t`` takes the last
  *kept* frame not after it when that frame starts at most ``tolerance_ms`` before ``t``. The
  time recorded is then that frame's own start, so the stored picture is exactly what a full
  decode shows at the recorded time. Where one time misses the tolerance (a long run of
  non-reference frames, or the end of the video), the rest of the video is decoded exactly. A
  stream without B-frames has nothing to skip and is always decoded exactly.
* Exact mode (``tolerance_ms = 0``): every frame is decoded and the recorded time is ``t``.
* Both modes decode only the GOPs that hold a needed frame. Packets are read in order (reading
  without decoding costs little) and reach the decoder only from the keyframe before a needed
  frame until that frame is out; a GOP holding no needed frame is never decoded, and the end of
  a GOP after its last needed frame neither. Reading every packet rather than seeking works
  alike on every container (WebM without cues, FLV, MPEG-TS).
* Rotation: the display matrix (portrait phone videos) is honoured as the ffmpeg command line
  does; the picture is turned after the crop (a centred square turns into itself).
* Resize: the short side is scaled to ``size`` (by swscale), then the centre is cropped to
  ``size x size``: the aspect ratio is kept and the edges of wide videos are lost.
* Truncation: a file whose frames stop well before its declared duration (more than
  ``max(1 s, 5 %)`` short of the last time) is ``VideoDecodeError("truncated ...")``; times a
  little past the last frame take the last frame. A decoder error after some frames ends the
  video there (logged); before any frame it is a ``VideoDecodeError``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .videos import VideoDecodeError, VideoProbe, probe_video

log = logging.getLogger(__name__)

# A kept frame may start this long before the time it stands for: 3 frames at 30 fps, and a
# tenth of the 1 s between a segment's 8 frames (x264 medium keeps at least every other frame).
FRAME_TOLERANCE_MS = 100.0
# A frame whose timestamp is within this of a sample time counts as on screen at that time
# (timestamps are rationals seen through floats: 1.0 s may read 0.9999999 or 1.0000001).
TIME_EPS_MS = 0.5


def sample_frames(
    path: str | os.PathLike,
    times_ms: np.ndarray,
    size: int,
    *,
    probe: VideoProbe | None = None,
    backend: str = "auto",
    threads: int = 0,
    tolerance_ms: float = 0.0,
) -> np.ndarray:
    """``uint8 (len(times_ms), size, size, 3)`` RGB: the picture on screen at each time (any
    order). Exact unless ``tolerance_ms`` is given (then use ``iter_frames`` for the times
    taken). ``threads``: decoder threads (0: as many as FFmpeg likes). ``backend`` is kept for
    callers of the decord era: "auto" and "pyav" are the same decoder.
    """
    if backend not in ("auto", "pyav"):
        raise ValueError(f"unknown backend {backend!r}: frames are decoded with PyAV (auto | pyav)")
    times_ms = np.asarray(times_ms, dtype=np.int64)
    order = np.argsort(times_ms, kind="stable")
    out = np.empty((len(times_ms), size, size, 3), dtype=np.uint8)
    frames = iter_frames(path, times_ms[order], size, probe=probe, threads=threads, tolerance_ms=tolerance_ms)
    for i, (rgb, _taken) in zip(order, frames):
        out[i] = rgb
    return out


def iter_frames(
    path: str | os.PathLike,
    times_ms: np.ndarray,
    size: int,
    *,
    probe: VideoProbe | None = None,
    threads: int = 0,
    tolerance_ms: float = FRAME_TOLERANCE_MS,
) -> Iterator[tuple[np.ndarray, int]]:
    """``(rgb uint8 (size, size, 3), taken_ms)`` for each of ``times_ms`` (ascending), in order,
    decoded as they are consumed. ``taken_ms`` is a time at which the picture is on screen: the
    time asked for (exact) or the start of the kept frame taken (fast; module doc)."""
    times = np.asarray(times_ms, dtype=np.int64)
    if times.size and np.any(np.diff(times) < 0):
        raise ValueError("times_ms must be ascending")
    probe = probe or probe_video(path)
    done = 0
    if tolerance_ms > 0:
        for item in _decode(Path(path), times, 0, size, probe, threads, tolerance_ms):
            yield item
            done += 1
        if done < len(times):
            log.info("%s: no kept frame within %.0f ms of %d ms; decoding the rest exactly",
                     path, tolerance_ms, times[done])
    if done < len(times):
        yield from _decode(Path(path), times, done, size, probe, threads, 0.0)


def resize_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """Width and height with the short side scaled to ``size`` (the long side at least ``size``)."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def _center_crop(batch: np.ndarray, size: int) -> np.ndarray:
    h, w = batch.shape[-3:-1]
    y, x = (h - size) // 2, (w - size) // 2
    return batch[..., y:y + size, x:x + size, :]


def _coverage_tolerance_ms(probe: VideoProbe) -> float:
    return max(1000.0, 0.05 * probe.duration_s * 1000)


class _Sampler:
    """Turns decoded frames (display order) into the picture for each time from ``first`` on.

    In fast mode (``tolerance_ms > 0``) it stops at the first time whose last kept frame starts
    more than ``tolerance_ms`` before it (``missed``)."""

    def __init__(self, times: np.ndarray, first: int, size: int, probe: VideoProbe, tolerance_ms: float):
        self.times, self.j, self.size, self.tolerance_ms = times, first, size, tolerance_ms
        self.w, self.h = resize_dims(probe.width, probe.height, size)
        self.frame_ms = 1000.0 / probe.fps if probe.fps else 40.0
        self.prev, self.prev_ms, self.prev_rgb, self.missed = None, 0.0, None, False

    @property
    def due_ms(self) -> float:
        """The next time to serve (infinite once all are served or the pass gave up)."""
        return float("inf") if self.finished else float(self.times[self.j])

    @property
    def finished(self) -> bool:
        return self.missed or self.j >= len(self.times)

    def take(self, frames, tb_ms: float, origin_ms: float) -> Iterator[tuple[np.ndarray, int]]:
        """Serve the times before each of ``frames`` (stream time base ``tb_ms`` ms per tick)."""
        for frame in frames:
            if frame.pts is None:
                continue  # a frame that cannot be placed in time (seen at the cut of a truncated file)
            t = frame.pts * tb_ms - origin_ms
            # Every time before this frame's start shows the previous frame.
            while not self.finished and self.prev is not None and self.times[self.j] + TIME_EPS_MS < t:
                yield from self._serve()
            self.prev, self.prev_ms, self.prev_rgb = frame, t, None

    def finish(self, path: Path, probe: VideoProbe) -> Iterator[tuple[np.ndarray, int]]:
        """The end of the stream: the times left take the last frame, unless the file is cut short."""
        if self.finished:
            return
        if self.prev is None:
            raise VideoDecodeError(path, "no decodable video frame")
        if self.prev_ms + self.frame_ms < self.times[-1] - _coverage_tolerance_ms(probe):
            raise VideoDecodeError(path, f"truncated: decodable frames end at {self.prev_ms / 1000:.2f} s "
                                         f"but the file declares {probe.duration_s:.2f} s")
        while not self.finished:
            yield from self._serve()

    def _serve(self) -> Iterator[tuple[np.ndarray, int]]:
        t = int(self.times[self.j])
        if self.tolerance_ms and t - self.prev_ms > self.tolerance_ms:
            self.missed = True
            return
        if self.prev_rgb is None:
            self.prev_rgb = self._rgb(self.prev)
        # Fast: the kept frame's own start (rounded up onto it, never past t); exact: t itself.
        taken = min(t, math.ceil(self.prev_ms - 1e-3)) if self.tolerance_ms else t
        self.j += 1
        yield self.prev_rgb, taken

    def _rgb(self, frame) -> np.ndarray:
        rgb = _center_crop(frame.to_ndarray(width=self.w, height=self.h, format="rgb24"), self.size)
        turns = round(frame.rotation) // 90 % 4  # counter-clockwise quarter turns, as ffmpeg shows it
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _decode(path: Path, times: np.ndarray, first: int, size: int, probe: VideoProbe, threads: int,
            tolerance_ms: float) -> Iterator[tuple[np.ndarray, int]]:
    """One pass over the file serving ``times[first:]``; a fast pass may stop early (module doc)."""
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"PyAV: {exc}") from None
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads, as the ffmpeg command line uses
        stream.thread_count = threads
        ctx = stream.codec_context
        fast = tolerance_ms > 0 and bool(ctx.has_b_frames)
        if fast:
            ctx.skip_frame = "NONREF"
        sampler = _Sampler(times, first, size, probe, tolerance_ms if fast else 0.0)
        tb_ms = float(stream.time_base * 1000)
        origin_ms = None if stream.start_time is None else stream.start_time * tb_ms

        def feed(packet):
            return sampler.take(ctx.decode(packet), tb_ms, origin_ms or 0.0)

        pending, feeding = [], False
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker: flushed below
                if origin_ms is None and packet.pts is not None:
                    origin_ms = packet.pts * tb_ms
                t = None if packet.pts is None else packet.pts * tb_ms - origin_ms
                due = sampler.due_ms
                if packet.is_keyframe and t is not None and t <= due and not feeding:
                    pending.clear()  # the rest of the previous GOP holds no needed frame
                pending.append(packet)
                # From the first packet at or past the next time until that time is served, feed
                # everything: a B-frame after it in decode order may be the frame on screen.
                if t is None or t + TIME_EPS_MS >= due or feeding:
                    for p in pending:
                        yield from feed(p)
                    pending.clear()
                    feeding = not sampler.finished and sampler.due_ms == due
                if sampler.finished:
                    return
            for p in pending:
                yield from feed(p)
            yield from feed(None)
        except av.error.FFmpegError as exc:
            if sampler.prev is None:
                raise VideoDecodeError(path, f"PyAV: {exc}") from None
            log.warning("decoding %s stopped at %.2f s: %s", path, sampler.prev_ms / 1000, exc)
        yield from sampler.finish(path, probe)
