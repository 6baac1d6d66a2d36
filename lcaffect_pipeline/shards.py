"""Training shards: WebDataset tars of segment frames plus JSON, one set per video.

The layout (folders, names, sample members, index fields) is the shard contract in
``lcaffect_ml.contracts.shards``, which ``lcaffect_ml.data`` reads by. ``shards_root`` is
``{lake}/shards``. Tars are reproducible (fixed mtime, owner
and mode), so an unchanged segment table and frames give byte-identical shards and hashes.
They are written with the standard library's ``tarfile`` (PAX format, so member names longer
than 100 bytes survive): a WebDataset shard is a plain tar, and importing ``webdataset`` would
import torch (seconds per Dagster step); the tests read the shards back with ``webdataset``.
Samples stream in one segment at a time (``write_shard_stream``); a video's shards are written
under temporary names and renamed together once the last is complete; shards of an earlier,
longer version of the video are removed. The per-video ``shards.json`` keeps the index cheap: ``update_shard_index``
merges those small files instead of re-reading every tar.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections import defaultdict
from typing import Any, Collection, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from lcaffect_ml.contracts.hashing import sha256_file
from lcaffect_ml.contracts.shards import (FRAMES_MEMBER, INDEX_NAME, META_FIELDS, META_MEMBER,  # noqa: F401
                                          VIDEO_SHARDS_NAME, encode_sample, sample_key, shard_name, shard_number,
                                          video_dir_name)

from . import lake
from .schema import SEGMENTS_SCHEMA

TAR_BLOCK = 512
TAR_END = 2 * TAR_BLOCK + 20 * TAR_BLOCK  # end-of-archive blocks plus the worst-case record padding
USTAR_NAME = 100  # longer member names take a PAX extended header (a header and a data block)


def video_shard_dir(shards_root: str | os.PathLike, video_id: str):
    return lake.under(shards_root, video_id)


def shard_path(shards_root: str | os.PathLike, video_id: str, n: int):
    return video_shard_dir(shards_root, video_id) / shard_name(video_id, n)


def relative_url(video_id: str, n: int) -> str:
    """A shard's path relative to the shards root, as the index and the segment table keep it:
    a lake moved or copied elsewhere (another folder, another bucket) still resolves."""
    return f"{video_dir_name(video_id)}/{shard_name(video_id, n)}"


def resolve_url(shards_root: str | os.PathLike, url: str):
    """The shard a (relative) index URL names, under ``shards_root`` (absolute URLs as they are)."""
    if "://" in url or os.path.isabs(url):
        return lake.as_path(url)
    return lake.as_path(shards_root).joinpath(*url.split("/"))


# ------------------------------------------------------------------------------ write


def write_shards(
    segments_table: pa.Table,
    frames: np.ndarray,
    dest_dir: str | os.PathLike,
    video_id: str,
    *,
    max_shard_bytes: int = 1_000_000_000,
) -> pa.Table:
    """Write one video's segments as WebDataset shards under ``dest_dir`` (the shards root).

    ``frames[i]`` (uint8 ``(n, T, H, W, 3)``, all in memory) belongs to row ``i`` of
    ``segments_table``; ``write_shard_stream`` takes them one segment at a time. Returns the
    table with ``shard`` and ``sample_key`` filled in.
    """
    _check_inputs(segments_table, frames, video_id)
    times = segments_table.column("frame_times_ms").to_pylist()
    return write_shard_stream(segments_table, zip(frames, times), dest_dir, video_id, max_shard_bytes=max_shard_bytes)


def write_shard_stream(
    segments_table: pa.Table,
    stacks: Iterable[tuple[np.ndarray, Sequence[int]]],
    dest_dir: str | os.PathLike,
    video_id: str,
    *,
    max_shard_bytes: int = 1_000_000_000,
) -> pa.Table:
    """Write one video's segments as shards, taking the frames one segment at a time.

    ``stacks`` gives, for each row in order, ``(frames uint8 (T, H, W, 3), frame_times_ms)``:
    the times of the frames taken, which replace the row's (``segments.segment_video_stream``
    gives both). Memory holds one sample, so an hour-long video streams through. A new shard
    starts when the next sample would push the current one past ``max_shard_bytes`` (a single
    larger sample gets a shard to itself). Every shard keeps a temporary name until the last
    one is complete, so a failure part-way (a decoding error, a full disk) leaves the previous
    version of the video's shards whole. Returns the table with ``shard``, ``sample_key`` and
    ``frame_times_ms`` filled in.
    """
    _check_table(segments_table, video_id)
    samples = _samples(video_id, segments_table.to_pylist(), stacks)
    entries, shard_of_row, keys, times = [], [], [], []
    with contextlib.ExitStack() as finished:  # on success the shards are renamed into place together
        sample = next(samples, None)
        while sample is not None:
            path = shard_path(dest_dir, video_id, len(entries))
            out = _HashingWriter(finished.enter_context(lake.atomic_write(path, "wb")))
            size, count = 0, 0
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                while sample is not None and (not count or size + _tar_bytes(sample[0]) + TAR_END <= max_shard_bytes):
                    _add_sample(tar, sample[0])
                    size, count = size + _tar_bytes(sample[0]), count + 1
                    keys.append(sample[0]["__key__"])
                    times.append(sample[1])
                    sample = next(samples, None)
            entries.append({"url": relative_url(video_id, len(entries)), "video_id": video_id, "samples": count,
                            "bytes": out.bytes, "sha256": out.sha.hexdigest()})
            shard_of_row += [entries[-1]["url"]] * count
    _remove_stale(dest_dir, video_id, keep=len(entries))
    sidecar = {"video_id": video_id, "shards": entries}
    lake.atomic_write_bytes(video_shard_dir(dest_dir, video_id) / VIDEO_SHARDS_NAME,
                            json.dumps(sidecar, ensure_ascii=False, indent=1).encode())
    out = segments_table
    for name, values in (("shard", shard_of_row), ("sample_key", keys), ("frame_times_ms", times)):
        out = out.set_column(out.schema.get_field_index(name), name, pa.array(values, SEGMENTS_SCHEMA.field(name).type))
    return out.cast(SEGMENTS_SCHEMA)


def _check_table(table: pa.Table, video_id: str) -> None:
    if not table.schema.remove_metadata().equals(SEGMENTS_SCHEMA.remove_metadata()):
        table.cast(SEGMENTS_SCHEMA)  # raises with the mismatch where the columns differ
    others = set(table.column("video_id").to_pylist()) - {video_id}
    if others:
        raise ValueError(f"segments of other videos {sorted(others)[:3]} passed for {video_id!r}")


def _check_inputs(table: pa.Table, frames: np.ndarray, video_id: str) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (n, T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] != table.num_rows:
        raise ValueError(f"{frames.shape[0]} frame stacks for {table.num_rows} segments")
    _check_table(table, video_id)


def _samples(video_id: str, rows: list[dict[str, Any]],
             stacks: Iterable[tuple[np.ndarray, Sequence[int]]]) -> Iterator[tuple[dict[str, Any], list[int]]]:
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
        yield encode_sample({**row, "video_id": video_id}, frames), row["frame_times_ms"]
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


def _remove_stale(shards_root, video_id: str, keep: int) -> None:
    folder = video_shard_dir(shards_root, video_id)
    if not folder.exists():
        return
    for p in folder.iterdir():
        n = shard_number(video_id, p.name)
        if n is not None and n >= keep:
            p.unlink()


# ------------------------------------------------------------------------------ index


def update_shard_index(shards_root: str | os.PathLike) -> list[dict[str, Any]]:
    """Merge every video's ``shards.json`` into ``{shards_root}/index.json`` (sorted by url)."""
    root = lake.under(shards_root)
    entries: list[dict[str, Any]] = []
    if root.exists():
        for sidecar in sorted(root.glob(f"*/{VIDEO_SHARDS_NAME}"), key=str):
            entries += json.loads(sidecar.read_text())["shards"]
    entries.sort(key=lambda e: e["url"])
    lake.atomic_write_bytes(root / INDEX_NAME, json.dumps(entries, ensure_ascii=False, indent=1).encode())
    return entries


def read_shard_index(shards_root: str | os.PathLike) -> list[dict[str, Any]]:
    """The list of ``{url, video_id, samples, bytes, sha256}`` in ``index.json``."""
    return json.loads((lake.under(shards_root) / INDEX_NAME).read_text())


# ------------------------------------------------------------------------------ verify


def verify_shards(
    segments_table: pa.Table,
    shards_root: str | os.PathLike,
    *,
    check_hashes: bool = False,
    deep_videos: Collection[str] | None = None,
) -> list[str]:
    """Problems found (empty when all is well), for an asset check.

    The index must list exactly the shards of the table's videos with the table's sample counts
    and the files' sizes (and sha256 with ``check_hashes``); every sample of the table must be in
    its shard with frames ``uint8 (len(frame_times_ms), S, S, 3)`` (one S for all) and JSON that
    matches its row; a shard must hold nothing else. ``deep_videos``: read the samples of these
    videos' shards only (None: every video); the other shards are checked against the index
    (present, same size) without being read, so that a refresh which wrote a few videos does not
    read the whole corpus of shards back.
    """
    try:
        index = {e["url"]: e for e in read_shard_index(shards_root)}
    except (OSError, ValueError, KeyError) as exc:
        return [f"index.json unreadable under {shards_root}: {type(exc).__name__}: {exc}"]
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
            problems.append(f"shard {url} is not in index.json")
        elif entry["samples"] != len(expected):
            problems.append(f"shard {url}: index says {entry['samples']} samples, table has {len(expected)}")
        deep = deep_videos is None or next(iter(expected.values()))["video_id"] in deep_videos
        problems += _verify_tar(url, resolve_url(shards_root, url), expected, entry, check_hashes, sizes, deep=deep)
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
            if name == FRAMES_MEMBER:
                problems += _check_frames(url, key, payload, len(row["frame_times_ms"]), sizes)
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


def _check_frames(url: str, key: str, payload: bytes, t: int, sizes: set[int]) -> list[str]:
    try:
        arr = np.load(io.BytesIO(payload), allow_pickle=False)
    except (ValueError, OSError) as exc:
        return [f"shard {url}: {key}.frames.npy does not load: {exc}"]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != t or arr.shape[3] != 3 or arr.shape[1] != arr.shape[2]:
        return [f"shard {url}: {key}.frames.npy is {arr.dtype}{arr.shape}, expected uint8 ({t}, S, S, 3)"]
    sizes.add(arr.shape[1])
    return []


def _check_json(url: str, key: str, payload: bytes, row: dict) -> list[str]:
    try:
        meta = json.loads(payload.decode("utf-8"))
    except ValueError as exc:
        return [f"shard {url}: {key}.json does not parse: {exc}"]
    wrong = [f for f in META_FIELDS if meta.get(f) != row[f]]
    return [f"shard {url}: {key}.json differs from the table in {wrong}"] if wrong else []

