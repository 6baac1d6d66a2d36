"""The one schema module: every Arrow table the pipeline writes is declared here.

Comments from every platform share ``COMMENTS_SCHEMA``; cleaning adds ``language``.
Segments (8-second windows with up to ``ClipOptions.comments_per_segment`` comments) use ``SEGMENTS_SCHEMA``.
"""

from __future__ import annotations

import os

import pyarrow as pa

# Downstream benchmarks (CH-SIMS v2, MELD, MUStARD): one row per utterance, every dataset. The
# table is the contract the training programs read, so it is declared in the lower layer.

PLATFORMS = ("bilibili", "niconico", "youtube", "acfun", "local")

# One mode enum across platforms (Bilibili 1/2/3 scroll, 4 bottom, 5 top, 6 reverse,
# 7 positioned, 8 code, 9 BAS script; Niconico `mail` commands ue/shita; YouTube is scroll).
MODES = ("scroll", "top", "bottom", "reverse", "positioned", "code", "other")

COMMENTS_SCHEMA = pa.schema(
    [
        pa.field("platform", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("comment_id", pa.string(), nullable=False),  # platform id; dedup key
        pa.field("offset_ms", pa.int64(), nullable=False),  # position in the video
        pa.field("text", pa.string(), nullable=False),  # display text
        pa.field("mode", pa.string(), nullable=False),  # one of MODES
        pa.field("color", pa.int64()),  # 0xRRGGBB
        pa.field("font_size", pa.int32()),
        pa.field("posted_at", pa.timestamp("ms", tz="UTC")),  # ms: what Parquet stores
        pa.field("author", pa.string()),  # salted hash, never a raw user id
        pa.field("weight", pa.int32()),  # Bilibili weight (0-10), where present
        pa.field("score", pa.int32()),  # Niconico NG score, where present
        pa.field("pool", pa.int32()),  # Bilibili pool (0 normal, 1 subtitle, 2 special)
        pa.field("superchat", pa.bool_(), nullable=False),  # YouTube paid message
        pa.field("raw", pa.string()),  # original payload where text is derived (mode 7)
        pa.field("source_file", pa.string(), nullable=False),
    ],
    metadata={"lcaffect.table": "comments", "lcaffect.schema_version": "1"},
)

CLEAN_COMMENTS_SCHEMA = COMMENTS_SCHEMA.append(pa.field("language", pa.string())).with_metadata(
    {"lcaffect.table": "clean_comments", "lcaffect.schema_version": "1"}
)

# The video catalogue: one row per video to crawl, from YAML or CSV.
CATALOGUE_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("platform", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # BV/av id, URL, or local path
        pa.field("video", pa.string()),  # optional video URL or local path (clips issue)
        pa.field("language", pa.string()),
        pa.field("genre", pa.string()),
        pa.field("title", pa.string()),
        # what related videos share: V2LC's held-out split keeps each value on one side (split_group)
        pa.field("series", pa.string()),
        pa.field("uploader", pa.string()),  # an uploader hash (or channel name), never a raw user id
        pa.field("group", pa.string()),  # a declared group: the split's default where given
    ],
    metadata={"lcaffect.table": "catalogue", "lcaffect.schema_version": "2"},
)

SEGMENTS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("segment_index", pa.int32(), nullable=False),
        pa.field("start_ms", pa.int64(), nullable=False),
        pa.field("end_ms", pa.int64(), nullable=False),
        pa.field("comments", pa.list_(pa.string()), nullable=False),  # selected, <= K
        pa.field("comment_ids", pa.list_(pa.string()), nullable=False),
        pa.field("comment_count", pa.int32(), nullable=False),  # all comments in the window
        pa.field("frame_times_ms", pa.list_(pa.int64()), nullable=False),
        pa.field("shard", pa.string()),  # shard location (set when shards are written)
        pa.field("sample_key", pa.string()),  # WebDataset __key__ inside the shard
    ],
    metadata={"lcaffect.table": "segments", "lcaffect.schema_version": "1"},
)

AUTHOR_SALT_ENV = "LCAFFECT_AUTHOR_SALT"


def author_salt(salt: str | None = None) -> str | None:
    """The salt to use: the explicit one, else the ``LCAFFECT_AUTHOR_SALT`` environment variable."""
    return salt if salt is not None else os.environ.get(AUTHOR_SALT_ENV) or None


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
