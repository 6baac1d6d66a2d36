"""Filters 7-9 (duplicate ids, exact and near duplicates in a time window): a bounded-memory index of
row hashes bucketed by video, de-duplicated with NumPy (see the package docstring, "Scale")."""

from __future__ import annotations

import os
import threading

import numpy as np
import pyarrow as pa

from .config import CleaningConfig
from .text import near_duplicate_key

_DEDUP_BUCKETS = 64  # rows are bucketed by video so that one bucket holds all rows of a video


# ---------------------------------------------------------------- duplicate filters (7-9)


def first_in_window(group: np.ndarray, offset: np.ndarray, window_ms: int | None) -> np.ndarray:
    """Keep-mask of the greedy window rule, per group: keep the earliest row; drop every later
    row at most ``window_ms`` after the last kept one; the next row after that is kept and opens
    a new window. ``None``: keep only the first row of each group. Ties keep input order.

    Vectorised: rows sorted by (group, offset); each row's successor candidate (the first row
    of its group past its window) comes from one ``searchsorted`` over a time axis on which the
    groups are laid end to end with gaps wider than the window; the kept rows are then the
    chains from each group's head, walked for all groups at once (as many steps as the longest
    chain).
    """
    n = group.size
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    order = np.lexsort((offset, group))  # stable: equal offsets keep input order
    g, t = group[order], offset[order].astype(np.int64, copy=False)
    head = np.empty(n, dtype=bool)
    head[0] = True
    np.not_equal(g[1:], g[:-1], out=head[1:])
    kept = head.copy()
    if window_ms is not None and not head.all():
        starts = np.flatnonzero(head)
        gid = np.cumsum(head) - 1
        rel = t - t[starts][gid]
        span = np.maximum.reduceat(rel, starts)
        w = min(int(window_ms), int(span.max()) + 1)  # a wider window changes nothing
        if n * (2 * (int(span.max()) + 2)) >= 2**62:
            raise ValueError(f"offsets span {int(span.max())} ms: too wide to de-duplicate")
        gap = span + (w + 1)
        base = np.zeros(starts.size, dtype=np.int64)
        np.cumsum(gap[:-1], out=base[1:])
        u = base[gid] + rel
        del rel, gid
        nxt = np.searchsorted(u, u + w, side="right")
        step = nxt[starts]
        while True:
            step = step[step < n]
            step = step[~head[step]]
            if step.size == 0:
                break
            kept[step] = True
            step = nxt[step]
    keep[order] = kept
    return keep


_LOCAL = threading.local()


def _duckdb():
    """One in-memory DuckDB connection per thread and process (connecting costs ~10 ms, which
    would dominate cleaning one small video)."""
    con = getattr(_LOCAL, "con", None)
    if con is None or _LOCAL.pid != os.getpid():
        import duckdb  # lazy: keeps `import lcaffect_pipeline.cleaning` light

        con, _LOCAL.pid = duckdb.connect(), os.getpid()
        _LOCAL.con = con
    return con


class _DedupIndex:
    """Per spooled row: its number, offset and three 64-bit hashes (id, text, near key within
    the video), 40 bytes, kept in buckets by video so that each video meets in one bucket."""

    _SQL = f"""
        SELECT (hash(platform, video_id) % {_DEDUP_BUCKETS})::INTEGER AS bucket,
               hash(platform, video_id, comment_id) AS by_id,
               hash(platform, video_id, text) AS by_text,
               hash(platform, video_id, near_key) AS by_key
        FROM rows_in
    """

    def __init__(self, config: CleaningConfig):
        self.cfg = config
        self.rows = 0
        self._con = _duckdb()
        self._parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(_DEDUP_BUCKETS)]

    def add(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if n == 0:
            return
        key = near_duplicate_key(batch.column("text"), self.cfg) if self.cfg.dedup_near else batch.column("text")
        rows_in = pa.table({"platform": batch.column("platform"), "video_id": batch.column("video_id"),
                            "comment_id": batch.column("comment_id"), "text": batch.column("text"), "near_key": key})
        self._con.register("rows_in", rows_in)
        h = self._con.execute(self._SQL).fetchnumpy()
        self._con.unregister("rows_in")
        row = np.arange(self.rows, self.rows + n, dtype=np.int64)
        offset = batch.column("offset_ms").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        bucket = np.asarray(h["bucket"], dtype=np.int64)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(_DEDUP_BUCKETS + 1))
        cols = [row, offset, *(np.asarray(h[c], dtype=np.uint64) for c in ("by_id", "by_text", "by_key"))]
        for b in np.flatnonzero(np.diff(bounds)):
            sel = order[bounds[b] : bounds[b + 1]]
            self._parts[b].append(tuple(c[sel] for c in cols))
        self.rows += n

    def keep_mask(self, drops: dict[str, int]) -> np.ndarray:
        """True for each spooled row that survives filters 7-9; adds their counts to ``drops``."""
        cfg = self.cfg
        keep = np.ones(self.rows, dtype=bool)
        passes = [(name, col, window) for name, col, window, on in (
            ("duplicate_id", 2, None, cfg.dedup_ids),
            ("exact_duplicate", 3, cfg.dedup_window_ms, cfg.dedup_exact),
            ("near_duplicate", 4, cfg.dedup_window_ms, cfg.dedup_near),
        ) if on]
        for b, parts in enumerate(self._parts):
            if not parts:
                continue
            cols = [np.concatenate([p[i] for p in parts]) for i in range(5)]
            self._parts[b] = []  # free the bucket as soon as it is merged
            row, offset = cols[0], cols[1]
            alive = np.arange(row.size)
            for name, col, window in passes:
                k = first_in_window(cols[col][alive], offset[alive], window)
                drops[name] += int(alive.size - k.sum())
                keep[row[alive[~k]]] = False
                alive = alive[k]
        return keep
