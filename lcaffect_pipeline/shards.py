"""Training shards: WebDataset tars of segment frames plus JSON, one set per video and version.

The layout (folders, names, sample members, index fields) is the shard contract in
``lcaffect_ml.contracts.shards``, which ``lcaffect_ml.data`` reads by. ``shards_root`` is
``{lake}/shards``; a video's shards live in a *version folder*, ``{video}/{version}/``, named by
the segments stage's input fingerprint, so new inputs add a folder and never overwrite shards an
earlier index (and the model trained on it) names. Tars are reproducible (fixed mtime, owner
and mode), so the same segment table and frames give byte-identical shards and hashes.
They are written with the standard library's ``tarfile`` (PAX format, so member names longer
than 100 bytes survive): a WebDataset shard is a plain tar, and importing ``webdataset`` would
import torch (seconds per Dagster step); the tests read the shards back with ``webdataset``.
Samples stream in one segment at a time (``write_shard_stream``); a folder's shards are written
under temporary names and renamed together once the last is complete. The folder's
``shards.json`` (written last, so it marks the folder complete) lists its shards and the hash of
the segment rows they hold; the index merges those small files instead of re-reading every tar
(``write_shard_index``), and a later run with the same inputs reuses a complete folder
(``complete_version``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections import defaultdict
from typing import Any, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from lcaffect_ml.contracts import lakepaths
from lcaffect_ml.contracts.hashing import sha256_bytes, sha256_file
from lcaffect_ml.contracts.shards import (DEFAULT_FRAME_CODEC, DEFAULT_FRAME_QUALITY, FRAME_MEMBERS, INDEX_NAME,
                                          META_FIELDS, META_MEMBER, VIDEO_SHARDS_NAME, check_frame_codec,
                                          decode_frames_member, encode_sample, shard_name, shard_number, video_dir_name)

from . import lake
from .schema import SEGMENTS_SCHEMA
from lcaffect_ml.contracts import naming

TAR_BLOCK = 512
TAR_END = 2 * TAR_BLOCK + 20 * TAR_BLOCK  # end-of-archive blocks plus the worst-case record padding
USTAR_NAME = 100  # longer member names take a PAX extended header (a header and a data block)
UPGRADE = ("run `python -m lcaffect_pipeline.versions_cli --lake LAKE upgrade`, then materialise segments again: "
           "it writes every video's shards in a version folder")


def shard_folder(video_id: str, version: str) -> str:
    """The folder of one version of a video's shards, relative to the shards root: ``{video}/{version}``."""
    if not version:
        raise ValueError(f"shards of {video_id!r} need a version (contracts.shards.version_dir_name)")
    return f"{video_dir_name(video_id)}/{naming.safe_name(version)}"


def video_shard_dir(shards_root: str | os.PathLike, video_id: str, version: str):
    return lake.as_path(shards_root).joinpath(*shard_folder(video_id, version).split("/"))


def shard_path(shards_root: str | os.PathLike, video_id: str, n: int, version: str):
    return video_shard_dir(shards_root, video_id, version) / shard_name(video_id, n)


def relative_url(video_id: str, n: int, version: str) -> str:
    """A shard's path relative to the shards root, as the index and the segment table keep it:
    a lake moved or copied elsewhere (another folder, another bucket) still resolves."""
    return f"{shard_folder(video_id, version)}/{shard_name(video_id, n)}"


def resolve_url(shards_root: str | os.PathLike, url: str, source: str | os.PathLike):
    """The shard (or version folder) that ``url``, read from ``source`` (an index, a folder's
    ``shards.json``, a segments row), names under ``shards_root``: ``lakepaths.resolve`` in the lake
    above it, so nothing outside ``shards/`` is named (``LakeContentError``)."""
    root = lake.as_path(shards_root)
    return lake.as_path(lakepaths.resolve(root.parent, url, source, base=root.name))


# ------------------------------------------------------------------------------ write


def write_shard_stream(
    segments_table: pa.Table,
    stacks: Iterable[tuple[np.ndarray, Sequence[int]]],
    dest_dir: str | os.PathLike,
    video_id: str,
    *,
    version: str,
    max_shard_bytes: int = 1_000_000_000,
    codec: str = DEFAULT_FRAME_CODEC,
    quality: int = DEFAULT_FRAME_QUALITY,
) -> pa.Table:
    """Write one video's segments as shards, taking the frames one segment at a time.

    ``stacks`` gives, for each row in order, ``(frames uint8 (T, H, W, 3), frame_times_ms)``:
    the times of the frames taken, which replace the row's (``segments.segment_video_stream``
    gives both). Memory holds one sample, so an hour-long video streams through. A new shard
    starts when the next sample would push the current one past ``max_shard_bytes`` (a single
    larger sample gets a shard to itself). Every shard keeps a temporary name until the last
    one is complete, so a failure part-way (a decoding error, a full disk) leaves the previous
    version of the video's shards whole. ``version`` (``version_dir_name`` of the inputs'
    fingerprint) names the folder, ``{video}/{version}/``.
    The folder's ``shards.json``, written last, lists the shards and ``segments``, the content hash
    of the returned rows (``lake.table_hash``: the name of their file in the segments table).
    ``codec``/``quality``: how the frames are stored (``contracts.shards.FRAME_CODECS``). Returns
    the table with ``shard``, ``sample_key`` and ``frame_times_ms`` filled in.
    """
    _check_table(segments_table, video_id)
    check_frame_codec(codec, quality)  # before any work, not at the first sample
    samples = _samples(video_id, segments_table.to_pylist(), stacks, codec, quality)
    entries, shard_of_row, keys, times = [], [], [], []
    with contextlib.ExitStack() as finished:  # on success the shards are renamed into place together
        sample = next(samples, None)
        while sample is not None:
            path = shard_path(dest_dir, video_id, len(entries), version)
            out = _HashingWriter(finished.enter_context(lake.atomic_write(path, "wb")))
            size, count = 0, 0
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                while sample is not None and (not count or size + _tar_bytes(sample[0]) + TAR_END <= max_shard_bytes):
                    _add_sample(tar, sample[0])
                    size, count = size + _tar_bytes(sample[0]), count + 1
                    keys.append(sample[0]["__key__"])
                    times.append(sample[1])
                    sample = next(samples, None)
            entries.append({"url": relative_url(video_id, len(entries), version), "video_id": video_id, "samples": count,
                            "bytes": out.bytes, "sha256": out.sha.hexdigest()})
            shard_of_row += [entries[-1]["url"]] * count
    _remove_stale(dest_dir, video_id, keep=len(entries), version=version)
    out = segments_table
    for name, values in (("shard", shard_of_row), ("sample_key", keys), ("frame_times_ms", times)):
        out = out.set_column(out.schema.get_field_index(name), name, pa.array(values, SEGMENTS_SCHEMA.field(name).type))
    out = out.cast(SEGMENTS_SCHEMA)
    sidecar = {"video_id": video_id, "shards": entries, "segments": lake.table_hash(out)}
    lake.atomic_write_bytes(video_shard_dir(dest_dir, video_id, version) / VIDEO_SHARDS_NAME,
                            json.dumps(sidecar, ensure_ascii=False, indent=1).encode())
    return out


def _check_table(table: pa.Table, video_id: str) -> None:
    if not table.schema.remove_metadata().equals(SEGMENTS_SCHEMA.remove_metadata()):
        table.cast(SEGMENTS_SCHEMA)  # raises with the mismatch where the columns differ
    others = set(table.column("video_id").to_pylist()) - {video_id}
    if others:
        raise ValueError(f"segments of other videos {sorted(others)[:3]} passed for {video_id!r}")


def _samples(video_id: str, rows: list[dict[str, Any]], stacks: Iterable[tuple[np.ndarray, Sequence[int]]],
             codec: str, quality: int) -> Iterator[tuple[dict[str, Any], list[int]]]:
    """Encoded samples with their frame times, one row at a time; the stacks must match the rows."""
    stacks = iter(stacks)
    for row in rows:
        item = next(stacks, None)
        if item is None:
            raise ValueError(f"frame stacks ended before segment {row['segment_index']} of {len(rows)} segments")
        frames, taken = item
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"segment {row['segment_index']}: frames must be uint8 (T, H, W, 3), "
                             f"got {frames.dtype} {frames.shape}")
        row = {**row, "frame_times_ms": [int(t) for t in taken]}
        yield encode_sample({**row, "video_id": video_id}, frames, codec, quality), row["frame_times_ms"]
    if next(stacks, None) is not None:
        raise ValueError(f"more frame stacks than the {len(rows)} segments")


def _tar_bytes(sample: dict[str, Any]) -> int:
    """Bytes a sample takes in a tar: a header block per member (plus a PAX header for long
    names) and the data padded to whole blocks."""
    total = 0
    for ext, data in _members_of(sample):
        name = f"{sample['__key__']}.{ext}"
        pax = 2 * TAR_BLOCK if len(name.encode()) > USTAR_NAME else 0
        total += pax + TAR_BLOCK + -(-len(data) // TAR_BLOCK) * TAR_BLOCK
    return total


def _members_of(sample: dict[str, Any]) -> list[tuple[str, bytes]]:
    return sorted((k, v) for k, v in sample.items() if k != "__key__")


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, fh):
        self.fh, self.sha, self.bytes = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _add_sample(tar: tarfile.TarFile, sample: dict[str, Any]) -> None:
    for ext, data in _members_of(sample):
        info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
        # Fixed metadata: the same samples always give the same bytes (and sha256).
        info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "", ""
        tar.addfile(info, io.BytesIO(data))


def _remove_stale(shards_root, video_id: str, keep: int, version: str) -> None:
    """Shards past the last one just written, left in the same folder by an earlier, longer write
    (only a version folder whose write was never completed has any)."""
    folder = video_shard_dir(shards_root, video_id, version)
    if not folder.exists():
        return
    for p in folder.iterdir():
        n = shard_number(video_id, p.name)
        if n is not None and n >= keep:
            p.unlink()


# ------------------------------------------------------------------------------ index


def complete_version(shards_root: str | os.PathLike, video_id: str, version: str) -> dict[str, Any] | None:
    """The ``shards.json`` of a complete version folder (its shards all present, at their sizes,
    and the hash of their segment rows recorded), else None: a later run with the same inputs
    reuses such a folder instead of decoding the video again."""
    folder = video_shard_dir(shards_root, video_id, version)
    try:
        sidecar = json.loads((folder / VIDEO_SHARDS_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(sidecar, dict) or not sidecar.get("segments") or sidecar.get("video_id") != video_id:
        return None
    for entry in sidecar.get("shards", []):
        try:
            path = resolve_url(shards_root, entry["url"], folder / VIDEO_SHARDS_NAME)
        except lakepaths.LakeContentError:
            return None  # not reused: the video's shards are written again
        if not path.exists() or path.stat().st_size != entry["bytes"]:
            return None
    return sidecar


def write_shard_index(shards_root: str | os.PathLike, folders: Iterable[str]) -> tuple[Any, list[dict[str, Any]]]:
    """Merge the ``shards.json`` of the given version folders (relative to ``shards_root``, one
    per video: ``shard_folder``) into a content-addressed ``index-{sha16}.json`` (sorted by url),
    and copy it to ``index.json``, the latest. Returns (the index's path, its entries). An index
    once written is never replaced: every materialisation's index stays readable. A folder
    without a version (shards written before version folders) is refused: ``UPGRADE`` says how."""
    root = lake.as_path(shards_root)
    entries: list[dict[str, Any]] = []
    for folder in sorted(set(folders)):
        if "/" not in folder.strip("/"):
            raise ValueError(f"{root / folder}: shards written without a version folder (a lake from before shard "
                             f"versions); {UPGRADE}")
        sidecar = resolve_url(root, folder, f"{root}: the segments' shard version folders") / VIDEO_SHARDS_NAME
        try:
            entries += json.loads(sidecar.read_text())["shards"]
        except (OSError, ValueError, KeyError) as exc:
            raise FileNotFoundError(f"{sidecar}: the shard list of version folder {folder} is missing or unreadable "
                                    f"({type(exc).__name__}: {exc})") from exc
    entries.sort(key=lambda e: e["url"])
    payload = json.dumps(entries, ensure_ascii=False, indent=1).encode()
    path = root / content_name(payload)
    if not path.exists():
        lake.atomic_write_bytes(path, payload)
    lake.atomic_write_bytes(root / INDEX_NAME, payload)
    return path, entries


def content_name(payload: bytes, prefix: str = "index") -> str:
    """``{prefix}-{sha16}.json``: the content-addressed name of an index file."""
    return f"{prefix}-{sha256_bytes(payload)[:16]}.json"


def unversioned_folders(shards_root: str | os.PathLike) -> list[str]:
    """The video folders under ``shards_root`` that hold shards directly, not in version folders:
    the layout before versions, which ``versions_cli upgrade`` has the segments stage write again."""
    root = lake.as_path(shards_root)
    if not root.exists():
        return []
    return sorted(video.name for video in root.iterdir() if video.is_dir()
                  and any(p.name == VIDEO_SHARDS_NAME or p.name.endswith(".tar") for p in video.iterdir()))


def referenced_folders(entries: Iterable[Mapping[str, Any] | str | None]) -> set[str]:
    """The version folders (relative to the shards root) that index entries, or shard URLs such
    as the segments table's ``shard`` column, name."""
    urls = (e.get("url") if isinstance(e, Mapping) else e for e in entries)
    return {url.rsplit("/", 1)[0] for url in urls if url and "/" in url}


def read_shard_index(shards_root: str | os.PathLike, name: str = INDEX_NAME) -> list[dict[str, Any]]:
    """The list of ``{url, video_id, samples, bytes, sha256}`` in an index (the latest by default)."""
    return json.loads((lake.as_path(shards_root) / name).read_text())


# ------------------------------------------------------------------------------ verify


def verify_shards(
    segments_table: pa.Table,
    shards_root: str | os.PathLike,
    *,
    check_hashes: bool = False,
    deep_videos: Collection[str] | None = None,
    index_name: str = INDEX_NAME,
) -> list[str]:
    """Problems found (empty when all is well), for an asset check.

    The index must list exactly the shards of the table's videos with the table's sample counts
    and the files' sizes (and sha256 with ``check_hashes``); every sample of the table must be in
    its shard with frames ``uint8 (len(frame_times_ms), S, S, 3)`` (one S for all) and JSON that
    matches its row; a shard must hold nothing else. ``deep_videos``: read the samples of these
    videos' shards only (None: every video); the other shards are checked against the index
    (present, same size) without being read, so that a refresh which wrote a few videos does not
    read the whole corpus of shards back. ``index_name``: the index file to check (the latest,
    ``index.json``, by default).
    """
    try:
        index = {e["url"]: e for e in read_shard_index(shards_root, index_name)}
    except (OSError, ValueError, KeyError) as exc:
        return [f"{index_name} unreadable under {shards_root}: {type(exc).__name__}: {exc}"]
    rows = segments_table.to_pylist()
    problems = [f"segment {r['video_id']}#{r['segment_index']} has no shard" for r in rows
                if not r["shard"] or not r["sample_key"]]
    by_shard: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["shard"] and r["sample_key"]:
            by_shard[r["shard"]][r["sample_key"]] = r
    videos = {r["video_id"] for r in rows}
    problems += [f"index lists shard {u} of {e['video_id']} that the table does not use"
                 for u, e in index.items() if e["video_id"] in videos and u not in by_shard]
    sizes: set[int] = set()
    for url, expected in by_shard.items():
        entry = index.get(url)
        if entry is None:
            problems.append(f"shard {url} is not in {index_name}")
        elif entry["samples"] != len(expected):
            problems.append(f"shard {url}: index says {entry['samples']} samples, table has {len(expected)}")
        deep = deep_videos is None or next(iter(expected.values()))["video_id"] in deep_videos
        try:
            path = resolve_url(shards_root, url, f"{index_name} / the segments table")
        except lakepaths.LakeContentError as exc:
            problems.append(str(exc))
            continue
        problems += _verify_tar(url, path, expected, entry, check_hashes, sizes, deep=deep)
    if len(sizes) > 1:
        problems.append(f"frames have different sizes across samples: {sorted(sizes)}")
    return problems


def _verify_tar(url: str, path, expected: dict[str, dict], entry: dict | None, check_hashes: bool,
                sizes: set[int], *, deep: bool = True) -> list[str]:
    if not path.exists():
        return [f"shard {url} is missing"]
    problems: list[str] = []
    if entry is not None and path.stat().st_size != entry["bytes"]:
        problems.append(f"shard {url}: {path.stat().st_size} bytes, index says {entry['bytes']}")
    if check_hashes and entry is not None and sha256_file(path) != entry["sha256"]:
        problems.append(f"shard {url}: sha256 differs from index.json")
    if not deep:
        return problems
    seen: set[str] = set()
    try:
        for key, name, payload in _members(path):
            row = expected.get(key)
            if row is None:
                problems.append(f"shard {url}: unexpected sample {key}")
                continue
            seen.add(key)
            if name in FRAME_MEMBERS:
                problems += _check_frames(url, key, name, payload, len(row["frame_times_ms"]), sizes)
            elif name == META_MEMBER:
                problems += _check_json(url, key, payload, row)
    except (tarfile.TarError, OSError) as exc:
        problems.append(f"shard {url} is not a readable tar: {exc}")
    problems += [f"shard {url}: sample {k} missing" for k in sorted(set(expected) - seen)]
    return problems


def _members(path) -> Iterator[tuple[str, str, bytes]]:
    with path.open("rb") as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        for info in tar:
            if info.isfile():
                key, _, name = info.name.partition(".")
                yield key, name, tar.extractfile(info).read()


def _check_frames(url: str, key: str, name: str, payload: bytes, t: int, sizes: set[int]) -> list[str]:
    try:
        arr = decode_frames_member(name, payload)
    except ValueError as exc:
        return [f"shard {url}: {key}.{name} does not load: {exc}"]
    if arr.shape[0] != t or arr.shape[1] != arr.shape[2]:
        return [f"shard {url}: {key}.{name} is {arr.dtype}{arr.shape}, expected uint8 ({t}, S, S, 3)"]
    sizes.add(arr.shape[1])
    return []


def _check_json(url: str, key: str, payload: bytes, row: dict) -> list[str]:
    try:
        meta = json.loads(payload.decode("utf-8"))
    except ValueError as exc:
        return [f"shard {url}: {key}.json does not parse: {exc}"]
    wrong = [f for f in META_FIELDS if meta.get(f) != row[f]]
    return [f"shard {url}: {key}.json differs from the table in {wrong}"] if wrong else []

