"""The drivers: spool the row-filtered batches (memory or a temporary Parquet file), de-duplicate,
replay; ``clean_comments`` (a table), ``clean_batches`` (a stream) and ``clean_parquet`` (files)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import lake
from ..schema import CLEAN_COMMENTS_SCHEMA, COMMENTS_SCHEMA
from .config import CleaningConfig, CleaningInputError
from .dedup import _DedupIndex
from .filters import _conform, _RowCleaner

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- spools and the drivers


class _MemorySpool:
    def __init__(self):
        self.batches: list[pa.RecordBatch] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def read(self) -> Iterator[pa.RecordBatch]:
        yield from self.batches

    def close(self) -> None:
        self.batches = []


class _ParquetSpool:
    """Row-filtered batches in a temporary Parquet file (lz4: written once, read once)."""

    def __init__(self, spool_dir: str | Path | None, batch_rows: int):
        self.dir = Path(tempfile.mkdtemp(prefix="lcaffect-clean-", dir=spool_dir))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.path = self.dir / "spool.parquet"
        self.batch_rows = batch_rows
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.path, CLEAN_COMMENTS_SCHEMA, compression="lz4")

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def read(self) -> Iterator[pa.RecordBatch]:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.batch_rows):
            # Parquet has no seconds unit: posted_at comes back in ms; the metadata is restored too.
            yield batch.cast(CLEAN_COMMENTS_SCHEMA)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._cleanup()


class CleanedBatches:
    """The clean rows as record batches (CLEAN_COMMENTS_SCHEMA), replayed from the spool.

    ``drops``, ``rows_in`` and ``rows_out`` are known as soon as this is returned. Iterating
    again replays the spool again; ``close()`` (or leaving a ``with`` block) deletes it.
    """

    def __init__(self, spool, keep: np.ndarray, drops: dict[str, int], rows_in: int):
        self._spool, self._keep = spool, keep
        self.drops, self.rows_in, self.rows_out = drops, rows_in, int(keep.sum())

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        pos = 0
        for batch in self._spool.read():
            n = batch.num_rows
            mask = self._keep[pos : pos + n]
            pos += n
            yield batch if mask.all() else batch.filter(pa.array(mask))

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> CleanedBatches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run(batches: Iterable[tuple[pa.RecordBatch, str]], cfg: CleaningConfig, spool) -> CleanedBatches:
    rows = _RowCleaner(cfg)
    index = _DedupIndex(cfg) if (cfg.dedup_ids or cfg.dedup_exact or cfg.dedup_near) else None
    rows_in = spooled = 0
    for raw, where in batches:
        for part in _chunks(_conform(raw, where), cfg.batch_rows):
            rows_in += part.num_rows
            clean = rows(part)
            if clean.num_rows:
                spool.write(clean)
                spooled += clean.num_rows
                if index is not None:
                    index.add(clean)
    drops = rows.drops
    keep = index.keep_mask(drops) if index is not None else np.ones(spooled, dtype=bool)
    return CleanedBatches(spool, keep, drops, rows_in)


def _chunks(batch: pa.RecordBatch, size: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, batch.num_rows, size):
        yield batch.slice(start, size)


def _describe(table: pa.Table) -> str:
    if "source_file" in table.schema.names and table.num_rows:
        first = table.column("source_file")[0].as_py()
        return f"comments table from {first}"
    return "comments table"


def clean_comments(raw: pa.Table, config: CleaningConfig | None = None) -> tuple[pa.Table, dict[str, int]]:
    """Clean one in-memory comments table (COMMENTS_SCHEMA, any row order).

    Returns the clean table (CLEAN_COMMENTS_SCHEMA, input order kept) and the number of rows
    each filter removed, in filter order (``FILTERS``; 0 for a filter that is switched off).
    Raises ``CleaningInputError`` when a required column is missing or has the wrong type.
    """
    cfg = config or CleaningConfig()
    where = _describe(raw)
    batches = ((b, where) for b in raw.to_batches(max_chunksize=cfg.batch_rows))
    result = _run(batches, cfg, _MemorySpool())
    table = pa.Table.from_batches(list(result), schema=CLEAN_COMMENTS_SCHEMA)
    result.close()
    return table, result.drops


def clean_batches(
    batches: Iterable[pa.RecordBatch | pa.Table], config: CleaningConfig | None = None, *, spool_dir: str | Path | None = None
) -> CleanedBatches:
    """Clean a stream of comment batches (any order, any mix of videos) in bounded memory.

    The row-filtered batches are spooled to a temporary Parquet file under ``spool_dir`` (the
    system temporary folder by default); iterate the result for the clean batches, and close it.
    """
    cfg = config or CleaningConfig()
    spool = _ParquetSpool(spool_dir, cfg.batch_rows)
    try:
        return _run(_as_batches(batches), cfg, spool)
    except BaseException:
        spool.close()
        raise


def _as_batches(items: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[tuple[pa.RecordBatch, str]]:
    for i, item in enumerate(items):
        where = f"comment batch {i}"
        if isinstance(item, pa.Table):
            where = f"{_describe(item)} (batch {i})"
            for b in item.to_batches():
                yield b, where
        else:
            yield item, where


@dataclass
class CleaningReport:
    path: str
    rows_in: int
    rows_out: int
    drops: dict[str, int]
    file_hash: str
    failed: dict[str, str]  # source file -> why it was skipped


def _file_batches(sources: Sequence[str | Path], batch_rows: int, failed: dict[str, str]) -> Iterator[tuple[pa.RecordBatch, str]]:
    for src in sources:
        src = str(src)
        try:
            pf = pq.ParquetFile(lake.as_path(src).open("rb")) if "://" in src else pq.ParquetFile(src)
            missing = [f.name for f in COMMENTS_SCHEMA if not f.nullable and f.name not in pf.schema_arrow.names]
            if missing:
                raise CleaningInputError(src, f"missing columns {missing}")
        except (OSError, pa.ArrowException, CleaningInputError) as exc:
            reason = exc.reason if isinstance(exc, CleaningInputError) else f"cannot read Parquet: {exc}"
            log.error("skipping %s: %s", src, reason)
            failed[src] = reason
            continue
        try:
            for batch in pf.iter_batches(batch_size=batch_rows):
                yield batch, src
        except (OSError, pa.ArrowException) as exc:  # rows of this file are already spooled
            raise CleaningInputError(src, f"unreadable part way through: {exc}") from exc


def clean_parquet(
    sources: str | Path | Sequence[str | Path], dst: str | Path, config: CleaningConfig | None = None, *, spool_dir: str | Path | None = None
) -> CleaningReport:
    """Clean raw comment Parquet files into one clean Parquet file, streaming.

    A source that cannot be opened or lacks required columns is skipped and reported in
    ``failed``; the others go on. ``dst`` is written atomically (zstd).
    """
    cfg = config or CleaningConfig()
    if isinstance(sources, (str, Path)):
        sources = [sources]
    failed: dict[str, str] = {}
    spool = _ParquetSpool(spool_dir, cfg.batch_rows)
    try:
        result = _run(_file_batches(sources, cfg.batch_rows, failed), cfg, spool)
        with lake.atomic_write(dst, "wb") as fh:
            with pq.ParquetWriter(fh, CLEAN_COMMENTS_SCHEMA, compression="zstd") as writer:
                for batch in result:
                    writer.write_batch(batch)
    finally:
        spool.close()
    return CleaningReport(str(dst), result.rows_in, result.rows_out, result.drops, lake.file_hash(dst), failed)
