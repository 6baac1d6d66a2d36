"""Shared pieces of the comment parsers: the typed error, the parse context, column helpers.

Every parser turns one file into Arrow record batches of ``COMMENTS_SCHEMA``. Values are
collected per column (plain lists or Arrow arrays) and turned into arrays once per batch, so a
million comments cost a few list appends each rather than a dict or object per comment.
Parsers leave the raw user id in ``author``; the reader replaces it by a salted hash before a
table leaves the package.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lcaffect_pipeline.schema import COMMENTS_SCHEMA

BATCH_ROWS = 65_536  # rows per record batch: bounded memory, few Arrow calls

# Bilibili (and AcFun, which copied it) numeric modes; index = mode number.
BILI_MODES = pa.array(
    ["other", "scroll", "scroll", "scroll", "bottom", "top", "reverse", "positioned", "code", "code"],
    pa.string(),
)
# Mode 9 is BAS (Bilibili Animation Script): a script like mode 8, so both map to "code" and one
# cleaning filter drops every scripted comment.


class CommentFormatError(ValueError):
    """A comment file that cannot be read: names the file and says why."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep the two-argument form through pickling (Dagster subprocesses)
        return (type(self), (self.path, self.reason))


@dataclass
class ParseContext:
    """What one parser call needs besides the bytes: where they came from and how to label them."""

    path: Path
    platform: str
    video_id: str
    source_file: str
    skipped: int = 0  # bad elements skipped inside an otherwise good file
    notes: dict[str, str] = field(default_factory=dict)  # extra schema metadata (e.g. xml_error)

    def error(self, reason: str) -> CommentFormatError:
        return CommentFormatError(self.path, reason)


DERIVED_ID_PATTERN = r"^h[0-9a-f]{20}$"  # what ``derived_id`` returns (no platform id looks like it)


def derived_id(*parts: object) -> str:
    """A stable comment id from content, for formats (or old files) without one.

    Verbatim-repeated elements get the same id and so deduplicate to one row; the reader then
    keeps distinct viewers' identical comments apart (``separate_viewers``).
    """
    digest = hashlib.blake2b(digest_size=10)
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return "h" + digest.hexdigest()


def separate_viewers(table: pa.Table) -> pa.Table:
    """Ids derived from content (``derived_id``) kept apart for distinct viewers.

    A derived id covers the comment, not its author (an id must not reveal who wrote it), so two
    viewers posting the same text at the same moment would share it and deduplicate to one row.
    Among the rows sharing a derived id, the k-th distinct raw author (in file order, k >= 1)
    gets ``derived_id(id, k)``: viewers stay distinct, a verbatim repeat by the same author still
    deduplicates, the first author keeps the plain id (so ids of ordinary comments do not change),
    and the id depends only on the file, never on who the authors are.
    """
    derived = pc.and_(pc.match_substring_regex(table["comment_id"], DERIVED_ID_PATTERN),
                      pc.is_valid(table["author"]))
    rows = pc.indices_nonzero(derived.combine_chunks() if isinstance(derived, pa.ChunkedArray) else derived)
    if len(rows) < 2:
        return table
    ids = table["comment_id"].take(rows).to_pylist()
    authors = table["author"].take(rows).to_pylist()
    rank: dict[str, dict[str, int]] = {}
    made = []
    for cid, author in zip(ids, authors):
        seen = rank.setdefault(cid, {})
        k = seen.setdefault(author, len(seen))
        made.append(derived_id(cid, k) if k else cid)
    if made == ids:
        return table
    column = table["comment_id"].combine_chunks()
    mask = np.zeros(len(column), bool)
    mask[rows.to_numpy()] = True
    replaced = pc.replace_with_mask(column, pa.array(mask), pa.array(made, pa.string()))
    return table.set_column(table.schema.get_field_index("comment_id"), table.schema.field("comment_id"), replaced)


def hash_authors(raw_ids: pa.Array | pa.ChunkedArray, salt: str | None) -> pa.Array:
    """Salted hashes of a column of platform user ids; null where there is no id or no salt.

    A hash is the first 24 hex digits of SHA-256(salt + U+001F + id): a secret-prefix hash.
    Without a configured salt the author is dropped rather than hashed with a salt written in
    code: an unsalted hash of a Bilibili crc32 user hash is reversible.

    Run once per file over the whole column (not per batch): the same users comment all
    through a video, so a file has far fewer distinct authors than comments, but still
    hundreds of thousands on a busy one; DuckDB's vectorised sha256 is several times faster
    than a Python call per id (``tests/test_formats.py`` checks it against ``hashlib``).
    """
    if isinstance(raw_ids, pa.ChunkedArray):
        raw_ids = raw_ids.combine_chunks()
    if not salt or len(raw_ids) == 0:
        return pa.nulls(len(raw_ids), pa.string())
    if raw_ids.type != pa.string():
        raw_ids = pc.cast(raw_ids, pa.string())
    encoded = pc.dictionary_encode(raw_ids)
    con = duckdb.connect()
    try:
        con.register("ids", pa.table({"id": encoded.dictionary}))
        hashed = con.sql(
            "SELECT CASE WHEN id = '' THEN NULL ELSE left(sha256($salt || chr(31) || id), 24) END AS h FROM ids",
            params={"salt": salt},
        ).to_arrow_table().column("h").combine_chunks()
    finally:
        con.close()
    return pc.take(hashed.cast(pa.string()), encoded.indices)


def make_batch(ctx: ParseContext, columns: dict[str, object]) -> pa.RecordBatch:
    """A ``COMMENTS_SCHEMA`` batch from the given columns; the per-file constants are filled in.

    Columns may be lists or Arrow arrays; absent nullable columns become nulls and an absent
    ``superchat`` becomes False. ``platform``, ``video_id`` and ``source_file`` come from ``ctx``
    unless given (a batch that spans several files gives them).
    """
    arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in _columns(ctx, columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=COMMENTS_SCHEMA)


def make_table(ctx: ParseContext, columns: dict[str, object]) -> pa.Table:
    """``make_batch`` for chunked columns, without copying them into one piece."""
    return pa.Table.from_arrays(_columns(ctx, columns), schema=COMMENTS_SCHEMA)


def _columns(ctx: ParseContext, columns: dict[str, object]) -> list:
    n = len(columns["comment_id"])
    constants = {"platform": ctx.platform, "video_id": ctx.video_id, "source_file": ctx.source_file}
    arrays = []
    for fld in COMMENTS_SCHEMA:
        value = columns.get(fld.name)
        if value is None and fld.name in constants:
            value = pa.repeat(pa.scalar(constants[fld.name], fld.type), n)
        elif value is None:
            value = pa.repeat(pa.scalar(False), n) if fld.name == "superchat" else pa.nulls(n, fld.type)
        elif not isinstance(value, (pa.Array, pa.ChunkedArray)):
            value = pa.array(value, fld.type)
        elif value.type != fld.type:
            value = pc.cast(value, fld.type)
        arrays.append(value)
    return arrays


class ColumnLists:
    """Per-column lists for the row-at-a-time parsers (JSON formats, Niconico XML)."""

    NAMES = ("comment_id", "offset_ms", "text", "mode", "color", "font_size", "posted_ms",
             "author", "weight", "score", "pool", "superchat", "raw")

    def __init__(self) -> None:
        self.cols: dict[str, list] = {name: [] for name in self.NAMES}

    def __len__(self) -> int:
        return len(self.cols["comment_id"])

    def append(self, comment_id, offset_ms, text, mode, color=None, font_size=None,
               posted_ms=None, author=None, weight=None, score=None, pool=None,
               superchat=False, raw=None) -> None:
        c = self.cols
        c["comment_id"].append(comment_id)
        c["offset_ms"].append(offset_ms)
        c["text"].append(text)
        c["mode"].append(mode)
        c["color"].append(color)
        c["font_size"].append(font_size)
        c["posted_ms"].append(posted_ms)
        c["author"].append(None if author is None or author == "" else str(author))
        c["weight"].append(weight)
        c["score"].append(score)
        c["pool"].append(pool)
        c["superchat"].append(superchat)
        c["raw"].append(raw)

    def flush(self, ctx: ParseContext) -> pa.RecordBatch:
        cols = self.cols
        cols["posted_at"] = posted_from_ms(pa.array(cols.pop("posted_ms"), pa.int64()))
        batch = make_batch(ctx, cols)
        self.cols = {name: [] for name in self.NAMES}
        return batch

    def flush_if_full(self, ctx: ParseContext, batches: list[pa.RecordBatch]) -> None:
        """Move a full batch of rows into ``batches`` (bounded memory on big files)."""
        if len(self) >= BATCH_ROWS:
            batches.append(self.flush(ctx))

    def finish(self, ctx: ParseContext, batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
        """Move the remaining rows into ``batches`` and return them."""
        if len(self):
            batches.append(self.flush(ctx))
        return batches


_MAX_SECONDS = (2**63 - 1) // 1000


def posted_from_seconds(seconds: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Unix seconds (int64) as ``posted_at`` timestamps; values out of range become null."""
    in_range = pc.less_equal(pc.abs(seconds), _MAX_SECONDS)
    seconds = pc.if_else(in_range, seconds, pa.scalar(None, pa.int64()))
    return posted_from_ms(pc.multiply(seconds, 1000))


def posted_from_ms(ms: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Unix milliseconds (int64) as ``posted_at`` timestamps (the schema's unit, UTC)."""
    return pc.cast(pc.cast(ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")), COMMENTS_SCHEMA.field("posted_at").type)


_INT_BOUNDS = {32: (-(2**31), 2**31 - 1), 64: (-(2**63), 2**63 - 1)}


def to_int(value: object, bits: int = 64) -> int:
    """``int(value)`` for JSON/XML values, refusing bools, NaN and out-of-range numbers."""
    if isinstance(value, bool):
        raise ValueError("boolean where a number belongs")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        value = round(value)
    elif isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
        value = round(to_float(value))
    number = int(value)  # type: ignore[arg-type]
    low, high = _INT_BOUNDS[bits]
    if not low <= number <= high:
        raise ValueError(f"{number} out of range for int{bits}")
    return number


def to_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("boolean where a number belongs")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def optional_int(value: object, bits: int = 64) -> int | None:
    return None if value is None or value == "" else to_int(value, bits)


# What a malformed row raises inside a row parser: skip the row and count it.
ROW_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)
