"""Segments: cut a video into 8-second windows, attach live comments, sample frames.

The paper pairs each 8-second video segment with up to 5 of the live comments posted inside
it; a segment here keeps up to ``comments_per_segment`` of them (``ClipOptions``, 32 by default)
and training samples its 5 from those. ``segment_video`` is the entry point; it returns the segments table (SEGMENTS_SCHEMA, shard
columns empty) and the frames as one uint8 array ``(n_segments, frames_per_segment, size, size, 3)``.

Policies (each one a documented choice):

* Segment plan (``plan_segments``): full ``segment_s`` windows from 0; the remainder becomes a
  shorter tail segment when it is at least half a segment long (``MIN_TAIL_FRACTION``), else it
  is dropped. A video shorter than one segment gives one segment covering all of it when it is at
  least ``MIN_VIDEO_S`` (0.5 s) long, and no segment otherwise (an empty table, not an error). The
  duration is the video stream's (see ``probe.probe_video``).
* Frame times: ``frames_per_segment`` instants at the centres of equal slices of the segment,
  so every time lies strictly inside it, relative to the first video frame. ``frame_times_ms``
  records the time of each frame taken: the instant itself (exact decoding), or the start of
  the frame taken when non-reference frames are skipped (the default, at most
  ``FRAME_TOLERANCE_MS`` before the instant and never before its slice). Either way the stored
  picture is what a full decode shows at the recorded time (policies in ``frames``).
* Resize and decoding: ``frames.iter_frames`` (PyAV; short side scaled to ``size``, centre
  crop, rotation honoured, truncated files are ``VideoDecodeError``). ``backend="decord"``
  decodes with decord instead, exactly (``frame_times_ms`` are the planned instants), PyAV
  taking over where decord refuses a file.
* Streaming: ``segment_video_stream`` gives the table and the frames one segment at a time, so
  an hour-long video never holds more than a segment of frames (``shards.write_shard_stream``).
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
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lcaffect_ml.contracts.shards import (DEFAULT_COMMENTS_PER_SEGMENT, DEFAULT_FRAME_SIZE, DEFAULT_FRAMES_PER_SEGMENT,
                                          DEFAULT_SEGMENT_S)

from .frames import BACKENDS, FRAME_TOLERANCE_MS, iter_frames
from .probe import VideoProbe, probe_video
from .schema import SEGMENTS_SCHEMA

log = logging.getLogger(__name__)

MIN_TAIL_FRACTION = 0.5
MIN_VIDEO_S = 0.5

# Filler: matched (RE2, case-folded) against the text with whitespace, punctuation and symbols
# (emoji included) removed. Single characters and empty remainders are filler too.
FILLER_PATTERN = (
    r"[哈呵嘿嘻hH]+|(?:ha)+|(?:he)+|23+|[wｗ]+|草+|(?:lol)+|(?:lmao)+|6+|x+|(?:xswl)+|(?:awsl)+"
)


# ------------------------------------------------------------------------------ plan


def plan_segments(duration_s: float, segment_s: float = DEFAULT_SEGMENT_S) -> list[tuple[int, int]]:
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


def segment_video(video_path: str | os.PathLike, comments: pa.Table | None = None, **options) -> tuple[pa.Table, np.ndarray]:
    """Segments table (SEGMENTS_SCHEMA, ``shard``/``sample_key`` null) and frames
    ``uint8 (n_segments, frames_per_segment, size, size, 3)`` RGB, all in memory (a long video
    is better served by ``segment_video_stream``, which takes the same keyword options:
    ``segment_s``, ``comments_per_segment``, ``frames_per_segment``, ``size``, ``video_id``,
    ``exact``, ``threads``, ``demote_filler``, ``backend``, ``probe``).

    ``comments`` is a table in COMMENTS_SCHEMA or CLEAN_COMMENTS_SCHEMA (None: no comments).
    ``video_id`` defaults to the one video id in ``comments``, else the file name's stem.
    ``exact`` decodes every frame (``frame_times_ms`` are then the planned instants);
    ``threads``: decoder threads (0: FFmpeg's choice). ``backend``: auto | pyav | decord
    (``frames``; decord decodes exactly). Raises ``VideoDecodeError`` for a file that cannot be
    decoded.
    """
    table, stacks = segment_video_stream(video_path, comments, **options)
    pairs = list(stacks)
    t, size = options.get("frames_per_segment", 8), options.get("size", 224)
    frames = np.stack([f for f, _ in pairs]) if pairs else np.zeros((0, t, size, size, 3), dtype=np.uint8)
    taken = np.stack([ms for _, ms in pairs]) if pairs else np.zeros((0, t), dtype=np.int64)
    return with_frame_times(table, taken), frames


def segment_video_stream(
    video_path: str | os.PathLike,
    comments: pa.Table | None = None,
    *,
    segment_s: float = DEFAULT_SEGMENT_S,
    comments_per_segment: int = DEFAULT_COMMENTS_PER_SEGMENT,
    frames_per_segment: int = DEFAULT_FRAMES_PER_SEGMENT,
    size: int = DEFAULT_FRAME_SIZE,
    video_id: str | None = None,
    exact: bool = False,
    threads: int = 0,
    demote_filler: bool = False,
    backend: str = "auto",
    probe: VideoProbe | None = None,
) -> tuple[pa.Table, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """Like ``segment_video``, but the frames come one segment at a time, in table order, as
    ``(uint8 (frames_per_segment, size, size, 3), taken_ms int64 (frames_per_segment,))``,
    decoded while the iterator is consumed; decoding errors surface there. The table holds the
    planned instants: ``shards.write_shard_stream`` records the times taken. ``probe``: the
    file's ``probe_video``, when the caller has it (the pipeline probes each video once)."""
    if backend not in BACKENDS:  # before any work, not when the frames are consumed
        raise ValueError(f"unknown frame backend {backend!r}: one of {' | '.join(BACKENDS)}")
    probe = probe or probe_video(video_path)
    video_id = _resolve_video_id(video_id, comments, video_path)
    spans = plan_segments(probe.duration_s, segment_s)
    times = frame_times(spans, frames_per_segment)
    if not spans:
        log.warning("video %s is %.2f s long: shorter than %.1f s, no segment", video_path, probe.duration_s, MIN_VIDEO_S)
    table = _segments_table(video_id, spans, times)
    if comments is not None and comments.num_rows:
        table = assign_comments_duckdb(comments, table, k=comments_per_segment, demote_filler=demote_filler)
    exact = exact or backend == "decord"
    tolerance = 0.0 if exact or not spans else min(FRAME_TOLERANCE_MS, _slice_margin_ms(spans, frames_per_segment))
    return table, _segment_stacks(video_path, times, size, probe, max(tolerance, 0.0), threads, backend)


def _slice_margin_ms(spans: Sequence[tuple[int, int]], frames_per_segment: int) -> int:
    """How far before its instant a frame may start and still lie inside its slice of the segment."""
    return min(e - s for s, e in spans) // (2 * frames_per_segment) - 1


def _segment_stacks(path, times: np.ndarray, size: int, probe: VideoProbe, tolerance_ms: float,
                    threads: int, backend: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    frames = iter_frames(path, times.ravel(), size, probe=probe, threads=threads, tolerance_ms=tolerance_ms,
                         backend=backend)
    for row in times:
        taken = list(islice(frames, len(row)))
        yield np.stack([rgb for rgb, _ in taken]), np.array([t for _, t in taken], dtype=np.int64)


def with_frame_times(table: pa.Table, taken_ms: np.ndarray | Sequence[Sequence[int]]) -> pa.Table:
    """``table`` with ``frame_times_ms`` replaced by the times of the frames taken."""
    field = SEGMENTS_SCHEMA.field("frame_times_ms")
    column = pa.array([[int(t) for t in row] for row in taken_ms], field.type)
    return table.set_column(table.schema.get_field_index(field.name), field, column)


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
    k: int = DEFAULT_COMMENTS_PER_SEGMENT,
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
