"""The training-shard layout: what ``lcaffect_pipeline.shards`` writes and ``lcaffect_ml.data`` reads.

    {lake}/shards/{safe_name(video_id)}/{version}/{safe_name(video_id)}-{n:05d}.tar
    {lake}/shards/{safe_name(video_id)}/{version}/shards.json   these shards (url, samples, bytes, sha256)
    {lake}/shards/index-{sha16}.json     one training_shards materialisation's index (content-addressed)
    {lake}/shards/index.json             a copy of the latest index

``{version}`` (``version_dir_name``) is the first 16 hex digits of the segments stage's input
fingerprint: new inputs (new comments, options, video) add a folder, never replace one, so every
index written stays readable until retention frees what no kept materialisation uses.

A shard is a plain (WebDataset) tar of samples; a sample is one segment under its key
(``sample_key``): ``{key}.frames.npy`` (``np.save`` of a uint8 ``(T, H, W, 3)`` RGB array, never
pickled) and ``{key}.json`` (the ``META_FIELDS`` of its segment row). An index entry has the
``INDEX_FIELDS``; its ``url`` is relative to the index's folder (``{video}/{version}/{video}-00000.tar``), so
a lake can be moved or copied (another folder, another bucket); ``sha256`` is ``lcaffect_ml.contracts.hashing``'s 64-hex digest of the tar.
A V2LC variant's index (``index.v2lc-{variant}-{sha16}.json``) adds the video's ``platform`` and
``language`` and, under ``catalogue``, its other catalogue columns that are set (genre, series,
uploader, group …), which the held-out split may group by (``lcaffect_ml.data.split_grouping``).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Mapping

import numpy as np

from .naming import safe_name

SHARDS_DIR = "shards"
INDEX_NAME = "index.json"
VIDEO_SHARDS_NAME = "shards.json"
FRAMES_MEMBER = "frames.npy"
META_MEMBER = "json"
# The training clips' defaults (ClipOptions, ClipsResource), and the frame spacing assumed for a
# V2LC checkpoint that does not record its own (``V2LCConfig.train_segment_s``/``train_frames``).
DEFAULT_SEGMENT_S = 8.0
DEFAULT_FRAMES_PER_SEGMENT = 8
META_FIELDS = ("video_id", "segment_index", "start_ms", "end_ms", "comments", "comment_ids",
               "comment_count", "frame_times_ms")
INDEX_FIELDS = ("url", "video_id", "samples", "bytes", "sha256")


def sample_key(video_id: str, segment_index: int) -> str:
    """WebDataset ``__key__``: no dots, since WebDataset splits keys at the first dot."""
    return f"{safe_name(video_id, dots=False)}_{int(segment_index):06d}"


def video_dir_name(video_id: str) -> str:
    """The folder under ``shards/`` that holds one video's shards."""
    return safe_name(video_id)


def version_dir_name(fingerprint: str) -> str:
    """The folder under a video's folder that holds one version of its shards."""
    name = safe_name(str(fingerprint)[:16])
    if not name or name in (".", ".."):
        raise ValueError(f"no shard version folder for fingerprint {fingerprint!r}")
    return name


def shard_name(video_id: str, n: int) -> str:
    """The file name of a video's ``n``-th shard."""
    return f"{safe_name(video_id)}-{int(n):05d}.tar"


def shard_number(video_id: str, file_name: str) -> int | None:
    """``n`` when ``file_name`` is the ``n``-th shard of ``video_id``, else ``None``."""
    m = re.fullmatch(re.escape(safe_name(video_id)) + r"-(\d{5})\.tar", file_name)
    return int(m.group(1)) if m else None


def encode_sample(meta: Mapping[str, Any], frames: np.ndarray) -> dict[str, Any]:
    """One WebDataset sample (``__key__`` plus its member bytes) of a segment's ``META_FIELDS``."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(frames), allow_pickle=False)
    body = {f: meta[f] for f in META_FIELDS}
    for f in ("segment_index", "start_ms", "end_ms", "comment_count"):
        body[f] = int(body[f])
    for f in ("comments", "comment_ids"):
        body[f] = list(body[f])
    body["frame_times_ms"] = [int(t) for t in body["frame_times_ms"]]
    return {
        "__key__": sample_key(body["video_id"], body["segment_index"]),
        FRAMES_MEMBER: buf.getvalue(),
        META_MEMBER: json.dumps(body, ensure_ascii=False).encode("utf-8"),
    }
