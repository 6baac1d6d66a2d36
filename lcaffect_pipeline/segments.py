"""Segments: cut a video into 8-second windows, attach live comments, sample frames.

The paper pairs each 8-second video segment with up to 5 of the live comments posted inside
it. ``segment_video`` is the entry point; it returns the segments table (SEGMENTS_SCHEMA, shard
columns empty) and the frames as one uint8 array ``(n_segments, frames_per_segment, size, size, 3)``.

Policies (each one a documented choice):

* Segment plan (``plan_segments``): full ``segment_s`` windows from 0; the remainder becomes a
  shorter tail segment when it is at least half a segment long (``MIN_TAIL_FRACTION``), else it
  is dropped. A video shorter than one segment gives one segment covering all of it when it is at
  least ``MIN_VIDEO_S`` (0.5 s) long, and no segment otherwise (an empty table, not an error). The
  duration is the video stream's (see ``videos.probe_video``).
* Frame times: ``frames_per_segment`` instants at the centres of equal slices of the segment,
  so every time lies strictly inside it; ``frame_times_ms`` records them, relative to the first
  video frame. The picture sampled for an instant is the frame on screen then (the last frame
  whose timestamp is not after it).
* Resize: the short side is scaled to ``size`` (by the decoder), then the centre is cropped to
  ``size x size``; the aspect ratio is kept and the edges of wide videos are lost.
* Decoding: decord, with its own resize, reading every needed frame index of the whole video,
  sorted, in one forward pass. PyAV decodes sequentially (one pass, in order) when decord refuses
  the file (WebM without a duration) or reports something impossible (no frames, timestamps out
  of order, frames ending well before the probed duration). A file whose frames stop well before
  its declared duration (more than ``max(1 s, 5 %)`` short of the last sample time) is truncated:
  ``VideoDecodeError``.
* Comments (``assign_comments_duckdb``): a comment belongs to the segment with
  ``start_ms <= offset_ms < end_ms``. Exact duplicate texts within the segment are dropped (the
  earliest is kept), then up to K (``comments_per_segment``, 32 by default) are kept **in order of
  appearance** (offset, then comment_id). The V2LC loader samples the few it trains on from these
  at every step (``lcaffect_ml.data``), so a busy segment shows the model all of its reactions over
  an epoch. Laughter and filler (``哈哈哈``, ``233``, ``www``, ``草``, ``awsl``) are affect signal for
  this task and are kept; ``demote_filler=True`` restores the older ranking instead: pure laughter
  or filler (also single characters, punctuation or emoji only) after every informative comment,
  then more distinct characters, then longer texts, then earlier. ``comment_count`` is every
  comment in the window before any of this.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import SEGMENTS_SCHEMA
from .videos import VideoDecodeError, VideoProbe, probe_video

log = logging.getLogger(__name__)

MIN_TAIL_FRACTION = 0.5
MIN_VIDEO_S = 0.5
DECODE_CHUNK = 128  # frames per decord get_batch call: bounds memory, keeps one forward pass
# A frame whose timestamp is within this of a sample time counts as on screen at that time
# (timestamps are rationals seen through floats: 1.0 s may read 0.9999999 or 1.0000001).
TIME_EPS_MS = 0.5

# Filler: matched (RE2, case-folded) against the text with whitespace, punctuation and symbols
# (emoji included) removed. Single characters and empty remainders are filler too.
FILLER_PATTERN = (
    r"[哈呵嘿嘻hH]+|(?:ha)+|(?:he)+|23+|[wｗ]+|草+|(?:lol)+|(?:lmao)+|6+|x+|(?:xswl)+|(?:awsl)+"
)


# ------------------------------------------------------------------------------ plan


def plan_segments(duration_s: float, segment_s: float = 8.0) -> list[tuple[int, int]]:
    """``[(start_ms, end_ms), ...]`` for a video of ``duration_s`` (tail policy in the module doc)."""
    duration_ms = int(duration_s * 1000)
    seg_ms = int(round(segment_s * 1000))
    if seg_ms <= 0:
        raise ValueError(f"segment_s must be positive, got {segment_s}")
    n_full = duration_ms // seg_ms
    spans = [(i * seg_ms, (i + 1) * seg_ms) for i in range(n_full)]
    tail = duration_ms - n_full * seg_ms
    if n_full == 0:
        if duration_ms >= MIN_VIDEO_S * 1000:
            spans.append((0, duration_ms))
    elif tail >= MIN_TAIL_FRACTION * seg_ms:
        spans.append((n_full * seg_ms, duration_ms))
    return spans


def frame_times(spans: Sequence[tuple[int, int]], frames_per_segment: int) -> np.ndarray:
    """``(n_segments, frames_per_segment)`` int64 ms: centres of equal slices of each segment."""
    if frames_per_segment <= 0:
        raise ValueError(f"frames_per_segment must be positive, got {frames_per_segment}")
    if not spans:
        return np.zeros((0, frames_per_segment), dtype=np.int64)
    starts = np.array([s for s, _ in spans], dtype=np.int64)[:, None]
    lengths = np.array([e - s for s, e in spans], dtype=np.int64)[:, None]
    odd = 2 * np.arange(frames_per_segment, dtype=np.int64)[None, :] + 1
    return starts + (odd * lengths) // (2 * frames_per_segment)


# ------------------------------------------------------------------------------ entry point


def segment_video(
    video_path: str | os.PathLike,
    comments: pa.Table | None = None,
    *,
    segment_s: float = 8.0,
    comments_per_segment: int = 32,
    frames_per_segment: int = 8,
    size: int = 224,
    video_id: str | None = None,
    demote_filler: bool = False,
) -> tuple[pa.Table, np.ndarray]:
    """Segments table (SEGMENTS_SCHEMA, ``shard``/``sample_key`` null) and frames
    ``uint8 (n_segments, frames_per_segment, size, size, 3)`` RGB.

    ``comments`` is a table in COMMENTS_SCHEMA or CLEAN_COMMENTS_SCHEMA (None: no comments).
    ``video_id`` defaults to the one video id in ``comments``, else the file name's stem.
    Raises ``VideoDecodeError`` for a file that cannot be decoded.
    """
    probe = probe_video(video_path)
    video_id = _resolve_video_id(video_id, comments, video_path)
    spans = plan_segments(probe.duration_s, segment_s)
    times = frame_times(spans, frames_per_segment)
    if spans:
        flat = sample_frames(video_path, times.ravel(), size, probe=probe)
        frames = flat.reshape(len(spans), frames_per_segment, size, size, 3)
    else:
        log.warning("video %s is %.2f s long: shorter than %.1f s, no segment", video_path, probe.duration_s, MIN_VIDEO_S)
        frames = np.zeros((0, frames_per_segment, size, size, 3), dtype=np.uint8)
    table = _segments_table(video_id, spans, times)
    if comments is not None and comments.num_rows:
        table = assign_comments_duckdb(comments, table, k=comments_per_segment, demote_filler=demote_filler)
    return table, frames


def _resolve_video_id(video_id: str | None, comments: pa.Table | None, video_path) -> str:
    if video_id is not None:
        return video_id
    if comments is not None and comments.num_rows:
        ids = pc.unique(comments.column("video_id")).to_pylist()
        if len(ids) > 1:
            raise ValueError(f"comments hold {len(ids)} videos ({ids[:3]}...): pass video_id=")
        return ids[0]
    return Path(video_path).stem


def _segments_table(video_id: str, spans: Sequence[tuple[int, int]], times: np.ndarray) -> pa.Table:
    n = len(spans)
    return pa.table(
        {
            "video_id": [video_id] * n,
            "segment_index": list(range(n)),
            "start_ms": [s for s, _ in spans],
            "end_ms": [e for _, e in spans],
            "comments": [[] for _ in range(n)],
            "comment_ids": [[] for _ in range(n)],
            "comment_count": [0] * n,
            "frame_times_ms": times.tolist(),
            "shard": [None] * n,
            "sample_key": [None] * n,
        },
        schema=SEGMENTS_SCHEMA,
    )


# ------------------------------------------------------------------------------ comments


def assign_comments_duckdb(
    comments: pa.Table | str | os.PathLike | Sequence[str],
    segments: pa.Table | str | os.PathLike | Sequence[str],
    *,
    k: int = 32,
    demote_filler: bool = False,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """Fill ``comments``, ``comment_ids`` and ``comment_count`` of ``segments`` (the rule in the
    module doc), in DuckDB so that it runs over the whole Parquet corpus.

    Both inputs are Arrow tables or Parquet paths/globs (lists allowed). Returns SEGMENTS_SCHEMA
    ordered by video_id, segment_index; other columns pass through unchanged.
    """
    own = con is None
    con = con or duckdb.connect()
    try:
        _register(con, "lc_comments", comments)
        _register(con, "lc_segments", segments)
        rel = con.sql(_ASSIGN_SQL, params={"k": int(k), "demote": bool(demote_filler),
                                           "filler": f"^(?:{FILLER_PATTERN})$"})
        # DuckDB 2.x names it to_arrow_table; 1.x arrow().
        result = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    finally:
        if own:
            con.close()
    return result.select(SEGMENTS_SCHEMA.names).cast(SEGMENTS_SCHEMA)


def _register(con: duckdb.DuckDBPyConnection, name: str, source) -> None:
    if isinstance(source, pa.Table):
        con.register(name, source)
        return
    files = [str(s) for s in source] if isinstance(source, (list, tuple)) else str(source)
    con.read_parquet(files, union_by_name=True).create_view(name)


_ASSIGN_SQL = """
WITH windowed AS (
    SELECT s.video_id, s.segment_index, c.comment_id, c.text, c.offset_ms, trim(c.text) AS t
    FROM lc_segments s
    JOIN lc_comments c
      ON c.video_id = s.video_id AND c.offset_ms >= s.start_ms AND c.offset_ms < s.end_ms
),
counted AS (
    SELECT video_id, segment_index, count(*) AS n FROM windowed GROUP BY video_id, segment_index
),
distinct_texts AS (
    SELECT *, regexp_replace(t, '[\\s\\p{P}\\p{S}]+', '', 'g') AS core
    FROM windowed
    QUALIFY row_number() OVER (PARTITION BY video_id, segment_index, t ORDER BY offset_ms, comment_id) = 1
),
ranked AS (
    SELECT video_id, segment_index, comment_id, text,
           row_number() OVER (
               PARTITION BY video_id, segment_index
               ORDER BY CASE WHEN $demote THEN length(core) <= 1 OR regexp_matches(lower(core), $filler) END,
                        CASE WHEN $demote THEN -length(list_distinct(string_split(core, ''))) END,
                        CASE WHEN $demote THEN -length(core) END, offset_ms, comment_id
           ) AS rk
    FROM distinct_texts
    QUALIFY rk <= $k
),
picked AS (
    SELECT video_id, segment_index,
           list(text ORDER BY rk) AS comments, list(comment_id ORDER BY rk) AS comment_ids
    FROM ranked GROUP BY video_id, segment_index
)
SELECT s.video_id, s.segment_index, s.start_ms, s.end_ms,
       coalesce(p.comments, []::VARCHAR[]) AS comments,
       coalesce(p.comment_ids, []::VARCHAR[]) AS comment_ids,
       coalesce(n.n, 0)::INTEGER AS comment_count,
       s.frame_times_ms, s.shard, s.sample_key
FROM lc_segments s
LEFT JOIN picked p USING (video_id, segment_index)
LEFT JOIN counted n USING (video_id, segment_index)
ORDER BY s.video_id, s.segment_index
"""


# ------------------------------------------------------------------------------ frames


class _DecoderRefused(Exception):
    """decord cannot be trusted with this file; the PyAV path decides."""


def _decord_reason(exc: Exception) -> str:
    """decord's message without its ``[time] source.cc:line:`` prefix."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", first)[:300]


def sample_frames(
    path: str | os.PathLike,
    times_ms: np.ndarray,
    size: int,
    *,
    probe: VideoProbe | None = None,
    backend: str = "auto",
    threads: int = 0,
) -> np.ndarray:
    """``uint8 (len(times_ms), size, size, 3)``: the picture on screen at each time (ms from the
    first frame), short side scaled to ``size`` then centre-cropped. ``backend``: auto | decord |
    pyav; ``threads``: decoder threads (0: as many as the decoder likes, ffmpeg's default).
    """
    probe = probe or probe_video(path)
    times_ms = np.asarray(times_ms, dtype=np.int64)
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown backend {backend!r}")
    if times_ms.size == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    if backend in ("auto", "decord"):
        try:
            return _sample_decord(Path(path), times_ms, size, probe, threads)
        except _DecoderRefused as exc:
            if backend == "decord":
                raise VideoDecodeError(path, f"decord: {exc}") from None
            log.info("decord refused %s (%s): decoding with PyAV", path, exc)
    return _sample_pyav(Path(path), times_ms, size, probe, threads)


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


def _sample_decord(path: Path, times_ms: np.ndarray, size: int, probe: VideoProbe, threads: int) -> np.ndarray:
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    w, h = resize_dims(probe.width, probe.height, size)
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, num_threads=threads)
        n = len(vr)
        if n <= 0:
            raise _DecoderRefused("no frames")
        starts_ms = vr.get_frame_timestamp(np.arange(n))[:, 0] * 1000.0
        starts_ms = starts_ms - starts_ms[0]  # times count from the first frame (as with PyAV)
    except decord.DECORDError as exc:
        raise _DecoderRefused(_decord_reason(exc)) from None
    if not np.all(np.isfinite(starts_ms)) or np.any(np.diff(starts_ms) < -1):
        raise _DecoderRefused("frame timestamps out of order")
    frame_ms = 1000.0 / probe.fps if probe.fps else 0.0
    if starts_ms[-1] + frame_ms < times_ms.max() - _coverage_tolerance_ms(probe):
        raise _DecoderRefused(f"frames end at {starts_ms[-1] / 1000:.2f} s of {probe.duration_s:.2f} s")
    # The frame on screen at t: the last frame starting at or before t.
    wanted = np.clip(np.searchsorted(starts_ms, times_ms + TIME_EPS_MS, side="right") - 1, 0, n - 1)
    unique, inverse = np.unique(wanted, return_inverse=True)
    out = np.empty((len(unique), size, size, 3), dtype=np.uint8)
    try:
        for lo in range(0, len(unique), DECODE_CHUNK):  # sorted indices: one forward pass
            batch = vr.get_batch(unique[lo:lo + DECODE_CHUNK].tolist()).asnumpy()
            out[lo:lo + len(batch)] = _center_crop(batch, size)
    except decord.DECORDError as exc:
        raise _DecoderRefused(_decord_reason(exc)) from None
    return out[inverse]


def _sample_pyav(path: Path, times_ms: np.ndarray, size: int, probe: VideoProbe, threads: int) -> np.ndarray:
    import av

    w, h = resize_dims(probe.width, probe.height, size)
    order = np.argsort(times_ms, kind="stable")
    out = np.empty((len(times_ms), size, size, 3), dtype=np.uint8)
    j, prev, prev_rgb, first_ms, last_ms, count = 0, None, None, None, None, 0

    def rgb(frame) -> np.ndarray:
        return _center_crop(frame.to_ndarray(width=w, height=h, format="rgb24"), size)

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads, as the ffmpeg CLI uses
            stream.thread_count = threads
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else count / (probe.fps or 25.0)
                count += 1
                t_ms = t * 1000.0
                first_ms = t_ms if first_ms is None else first_ms
                rel = t_ms - first_ms
                # Every requested time before this frame's start shows the previous frame.
                while j < len(order) and times_ms[order[j]] + TIME_EPS_MS < rel and prev is not None:
                    prev_rgb = rgb(prev) if prev_rgb is None else prev_rgb
                    out[order[j]] = prev_rgb
                    j += 1
                prev, prev_rgb, last_ms = frame, None, rel
                if j == len(order):
                    break
            if prev is None:
                raise VideoDecodeError(path, "no decodable video frame")
    except av.error.FFmpegError as exc:
        if prev is None:
            raise VideoDecodeError(path, f"PyAV: {exc}") from None
        log.warning("decoding %s stopped at %.2f s: %s", path, (last_ms or 0) / 1000, exc)
    if j < len(order):
        frame_ms = 1000.0 / probe.fps if probe.fps else 0.0
        if last_ms + frame_ms < times_ms[order[-1]] - _coverage_tolerance_ms(probe):
            raise VideoDecodeError(
                path, f"truncated: decodable frames end at {last_ms / 1000:.2f} s "
                      f"but the file declares {probe.duration_s:.2f} s")
        last_rgb = rgb(prev)
        for i in order[j:]:
            out[i] = last_rgb
    return out
