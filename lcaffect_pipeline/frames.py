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
* Backends (``backend=``): "auto" and "pyav" are the PyAV decoding above. "decord" decodes
  exactly with decord: every needed frame index, sorted, in one forward pass (``get_batch`` in
  chunks of ``DECORD_CHUNK``), decord's own resize, then the same centre crop. Where decord
  refuses a file (a WebM without a duration) or reports something impossible (no frames,
  timestamps out of order, frames ending well before the probed duration), or fails part way,
  PyAV decodes the rest exactly and the reason is logged. A turned picture (display matrix) goes
  to PyAV too: decord 0.6 turns it but then resizes it to the wrong shape or fails.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from .probe import VideoDecodeError, probe_video
from .probe import VideoProbe

log = logging.getLogger(__name__)

# A kept frame may start this long before the time it stands for: 3 frames at 30 fps, and a
# tenth of the 1 s between a segment's 8 frames (x264 medium keeps at least every other frame).
FRAME_TOLERANCE_MS = 100.0
# A frame whose timestamp is within this of a sample time counts as on screen at that time
# (timestamps are rationals seen through floats: 1.0 s may read 0.9999999 or 1.0000001).
TIME_EPS_MS = 0.5
BACKENDS = ("auto", "pyav", "decord")
DECORD_CHUNK = 128  # frames per decord get_batch call: bounds memory, keeps one forward pass


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
    taken). ``threads``: decoder threads (0: as many as FFmpeg likes). ``backend``: auto |
    pyav | decord (module doc; decord is always exact).
    """
    times_ms = np.asarray(times_ms, dtype=np.int64)
    order = np.argsort(times_ms, kind="stable")
    out = np.empty((len(times_ms), size, size, 3), dtype=np.uint8)
    frames = iter_frames(path, times_ms[order], size, probe=probe, threads=threads, tolerance_ms=tolerance_ms,
                         backend=backend)
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
    backend: str = "auto",
) -> Iterator[tuple[np.ndarray, int]]:
    """``(rgb uint8 (size, size, 3), taken_ms)`` for each of ``times_ms`` (ascending), in order,
    decoded as they are consumed. ``taken_ms`` is a time at which the picture is on screen: the
    time asked for (exact, and always with ``backend="decord"``) or the start of the kept frame
    taken (fast; module doc)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown frame backend {backend!r}: one of {' | '.join(BACKENDS)}")
    times = np.asarray(times_ms, dtype=np.int64)
    if times.size and np.any(np.diff(times) < 0):
        raise ValueError("times_ms must be ascending")
    probe = probe or probe_video(path)
    if backend == "decord":
        yield from _iter_decord(Path(path), times, size, probe, threads)
        return
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


# ------------------------------------------------------------------------------ decord


class _DecoderRefused(Exception):
    """decord cannot be trusted with this file; PyAV decides."""


def _decord_reason(exc: Exception) -> str:
    """decord's message without its ``[time] source.cc:line:`` prefix."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", first)[:300]


def _iter_decord(path: Path, times: np.ndarray, size: int, probe: VideoProbe,
                 threads: int) -> Iterator[tuple[np.ndarray, int]]:
    """Exact frames for ``times`` (ascending) from decord; PyAV (exact) takes over where decord
    refuses the file or fails part way, with the reason logged."""
    import decord

    done = 0
    if not len(times):
        return
    try:
        reader, wanted = _decord_plan(path, times, size, probe, threads)
        indices = np.unique(wanted)
        for lo in range(0, len(indices), DECORD_CHUNK):  # sorted indices: one forward pass
            chunk = indices[lo:lo + DECORD_CHUNK]
            try:
                batch = _center_crop(reader.get_batch(chunk.tolist()).asnumpy(), size)
            except decord.DECORDError as exc:
                raise _DecoderRefused(_decord_reason(exc)) from None
            while done < len(times) and wanted[done] <= chunk[-1]:
                yield batch[np.searchsorted(chunk, wanted[done])], int(times[done])
                done += 1
    except _DecoderRefused as exc:
        log.warning("decord refused %s (%s): decoding %s with PyAV", path, exc,
                    "it" if done == 0 else f"the times from {times[done]} ms")
        yield from _decode(path, times, done, size, probe, threads, 0.0)


def _decord_plan(path: Path, times: np.ndarray, size: int, probe: VideoProbe, threads: int):
    """decord's reader and the frame index on screen at each time: the last frame starting at or
    before it. ``_DecoderRefused`` for a turned picture, or where decord's view of the file is
    impossible."""
    import decord

    if probe.rotation:  # decord 0.6 turns the picture but then resizes it to the wrong shape, or fails
        raise _DecoderRefused(f"the picture is turned by {probe.rotation} degrees, which decord resizes wrongly")
    decord.logging.set_level(decord.logging.QUIET)
    w, h = resize_dims(probe.width, probe.height, size)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, num_threads=threads)
        n = len(reader)
        if n <= 0:
            raise _DecoderRefused("no frames")
        starts_ms = reader.get_frame_timestamp(np.arange(n))[:, 0] * 1000.0
    except decord.DECORDError as exc:
        raise _DecoderRefused(_decord_reason(exc)) from None
    starts_ms = starts_ms - starts_ms[0]  # times count from the first frame (as with PyAV)
    if not np.all(np.isfinite(starts_ms)) or np.any(np.diff(starts_ms) < -1):
        raise _DecoderRefused("frame timestamps out of order")
    frame_ms = 1000.0 / probe.fps if probe.fps else 0.0
    if len(times) and starts_ms[-1] + frame_ms < times[-1] - _coverage_tolerance_ms(probe):
        raise _DecoderRefused(f"frames end at {starts_ms[-1] / 1000:.2f} s of {probe.duration_s:.2f} s")
    wanted = np.clip(np.searchsorted(starts_ms, times + TIME_EPS_MS, side="right") - 1, 0, n - 1)
    return reader, wanted
