"""The training-shard layout: what ``lcaffect_pipeline.shards`` writes and ``lcaffect_ml.data`` reads.

    {lake}/shards/{safe_name(video_id)}/{version}/{safe_name(video_id)}-{n:05d}.tar
    {lake}/shards/{safe_name(video_id)}/{version}/shards.json   these shards (url, samples, bytes, sha256)
    {lake}/shards/index-{sha16}.json     one training_shards materialisation's index (content-addressed)
    {lake}/shards/index.json             a copy of the latest index

``{version}`` (``version_dir_name``) is the first 16 hex digits of the segments stage's input
fingerprint: new inputs (new comments, options, video) add a folder, never replace one, so every
index written stays readable until retention frees what no kept materialisation uses.

A shard is a plain (WebDataset) tar of samples; a sample is one segment under its key
(``sample_key``): its frames, square uint8 ``(T, S, S, 3)`` RGB, in one member whose suffix names
the codec (``FRAME_MEMBERS``), and ``{key}.json`` (the ``META_FIELDS`` of its segment row):

    {key}.frames.jpg    the T frames stacked top to bottom as one (T*S, S) JPEG (4:4:4, the default)
    {key}.frames.webp   the same image as lossy WebP
    {key}.frames.npy    ``np.save`` of the exact array, never pickled (codec ``npy``)

One image per sample rather than one member per frame: one tar header and one decoder call per
segment, and WebDataset's own image decoders (``.decode("rgb8")``) read it as it is; reshape by
its width. With S a multiple of 16 (224 is) the JPEG blocks never straddle two frames, so the
stack costs nothing in fidelity against frames encoded one by one. An index entry has the
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
FRAMES_MEMBER = "frames.npy"  # raw frames: the only member before frame codecs (codec "npy")
# codec -> (member suffix, Pillow format); "npy" is the exact array.
FRAME_CODECS = {"npy": (FRAMES_MEMBER, None), "jpeg": ("frames.jpg", "JPEG"), "webp": ("frames.webp", "WEBP")}
FRAME_MEMBERS = tuple(member for member, _ in FRAME_CODECS.values())
# The default codec and quality (ClipOptions, ClipsResource): chosen by bench/bench_codecs.py on the
# fixture videos (docs/OPERATIONS.md, "Frame codec"): about 1/10 of the raw bytes, PSNR >= 39 dB on every segment.
DEFAULT_FRAME_CODEC = "jpeg"
DEFAULT_FRAME_QUALITY = 90
MAX_TILE_HEIGHT = 16383  # WebP's limit on a side (the stacked image is T*S high)
META_MEMBER = "json"
# The training clips' defaults (ClipOptions, ClipsResource), and the frame spacing assumed for a
# V2LC checkpoint that does not record its own (``V2LCConfig.train_segment_s``/``train_frames``).
DEFAULT_SEGMENT_S = 8.0
DEFAULT_FRAMES_PER_SEGMENT = 8
DEFAULT_COMMENTS_PER_SEGMENT = 32  # all kept in order of appearance; training samples its few (5) from them
DEFAULT_FRAME_SIZE = 224  # frames are size x size RGB
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


def check_frame_codec(codec: str, quality: int) -> None:
    if codec not in FRAME_CODECS:
        raise ValueError(f"frame_codec {codec!r}: one of {' | '.join(FRAME_CODECS)}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"frame_quality {quality!r}: 1 to 100")


def encode_frames(frames: np.ndarray, codec: str = DEFAULT_FRAME_CODEC,
                  quality: int = DEFAULT_FRAME_QUALITY) -> tuple[str, bytes]:
    """(member suffix, bytes) of square uint8 ``(T, S, S, 3)`` frames in ``codec`` (module doc)."""
    check_frame_codec(codec, quality)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"frames must be square uint8 (T, S, S, 3), got {frames.dtype} {frames.shape}")
    member, fmt = FRAME_CODECS[codec]
    buf = io.BytesIO()
    if fmt is None:
        np.save(buf, np.ascontiguousarray(frames), allow_pickle=False)
        return member, buf.getvalue()
    from PIL import Image

    t, s = frames.shape[:2]
    if codec == "webp" and t * s > MAX_TILE_HEIGHT:
        raise ValueError(f"frame_codec webp: {t} frames of {s} px stack to {t * s} px, over WebP's {MAX_TILE_HEIGHT}")
    tile = Image.fromarray(np.ascontiguousarray(frames).reshape(t * s, s, 3))
    # 4:4:4 for JPEG: chroma subsampling costs up to 10 dB on saturated edges (bench_codecs.py).
    extra = {"subsampling": 0} if fmt == "JPEG" else {"method": 4}
    tile.save(buf, fmt, quality=int(quality), **extra)
    return member, buf.getvalue()


def decode_frames_member(member: str, payload: bytes) -> np.ndarray:
    """Square uint8 ``(T, S, S, 3)`` frames from one frames member (any of ``FRAME_MEMBERS``);
    ``ValueError`` saying why when the payload is not that."""
    if member == FRAMES_MEMBER:
        try:
            frames = np.load(io.BytesIO(payload), allow_pickle=False)  # never unpickle shard data
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{member} is not a plain .npy array: {exc}") from exc
    elif member in FRAME_MEMBERS:
        frames = _decode_tile(member, payload)
    else:
        raise ValueError(f"{member!r} is not a frames member (one of {', '.join(FRAME_MEMBERS)})")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def _decode_tile(member: str, payload: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as im:
            tile = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))  # convert() would copy
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{member} is not a readable image: {exc}") from exc
    h, s = tile.shape[:2]
    if s == 0 or h % s:
        raise ValueError(f"{member} is {s}x{h}: not a stack of square frames")
    return tile.reshape(h // s, s, s, 3)


def frames_member(sample: Mapping[str, Any]) -> str | None:
    """The frames member a raw sample has (the first of ``FRAME_MEMBERS`` present), else None."""
    return next((m for m in FRAME_MEMBERS if m in sample), None)


def encode_sample(meta: Mapping[str, Any], frames: np.ndarray, codec: str = DEFAULT_FRAME_CODEC,
                  quality: int = DEFAULT_FRAME_QUALITY) -> dict[str, Any]:
    """One WebDataset sample (``__key__`` plus its member bytes) of a segment's ``META_FIELDS``
    and its frames in ``codec``."""
    member, data = encode_frames(frames, codec, quality)
    body = {f: meta[f] for f in META_FIELDS}
    for f in ("segment_index", "start_ms", "end_ms", "comment_count"):
        body[f] = int(body[f])
    for f in ("comments", "comment_ids"):
        body[f] = list(body[f])
    body["frame_times_ms"] = [int(t) for t in body["frame_times_ms"]]
    return {
        "__key__": sample_key(body["video_id"], body["segment_index"]),
        member: data,
        META_MEMBER: json.dumps(body, ensure_ascii=False).encode("utf-8"),
    }
