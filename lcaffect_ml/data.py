"""Streaming the V2LC training shards (WebDataset tars; layout in ``lcaffect_ml.contracts.shards``).

Each sample is one 8-second segment: its frames (uint8 (T, H, W, 3) RGB; a JPEG or WebP stack, or
the exact ``frames.npy`` of codec ``npy``: ``contracts.shards``) and ``json``
(video id, segment index, its live comments). The index (``{lake}/shards/index.json``) lists
every shard with its video id and sample count, so the train/test split is done by video without
opening a tar (``split_by_video``).

``SegmentStream`` is an ``IterableDataset`` that yields ready batches and is a pure function of
(shard list, seed, rank, world size, number of loader workers, batches already consumed):

* The stream of each *slot* (rank × loader worker) is endless, one epoch after another. In epoch
  ``e`` the shard list is permuted with a seed derived from (seed, e) and dealt out to the slots;
  a slot reads ``open_shards`` of its shards interleaved (one segment of each in turn; shards hold
  one video each, and by default a slot keeps ``batch_size`` of them open) through a shuffle buffer
  seeded by (seed, e, slot) and flushed at the end of the epoch.
* Batches are drawn across many videos: a batch takes at most ``max_per_video`` segments (2) of
  one video; a segment over the cap waits for a later batch. Neighbouring segments of a video
  share content and often comments, and every other segment of a batch is a negative in the
  contrastive loss, so a batch full of one video's segments teaches the model to tell apart
  things that are alike. The cap holds whenever a slot has at least ``batch_size /
  max_per_video`` videos; when it has fewer (a tiny corpus, many workers) and the waiting
  segments reach ``4 × batch_size``, they are let through rather than stall the run.
* Shards keep every comment of a segment (up to the clips' cap, 32 by default); each time a
  segment is read, ``max_comments`` of them (5) are sampled with a generator seeded by (seed,
  epoch, shard, sample key), so over epochs the model sees all reactions of a busy segment, and a
  resumed run sees exactly the samples of an uninterrupted one. A segment with ``max_comments``
  or fewer comments gives all of them.
* A ``DataLoader`` fetches from its workers round-robin, in order, and endless workers never drop
  out of the rotation, so micro-batch ``n`` always comes from logical worker ``n % W``. Resuming
  after ``n`` micro-batches therefore starts each worker ``n // W`` (or one more) batches in,
  skipping samples before batching (frames are still read and copied, never fed to the model),
  and rotates worker ids by ``n % W`` so that the first batch fetched is the next one due.
  Resume is exact when the number of workers is unchanged.
* Segments without comments are dropped (no positives); an unreadable sample or shard is
  reported with its URL and key and skipped (``on_error="warn"``) or raises ``ShardSampleError``
  (``on_error="raise"``); either way the same samples are skipped on a resume.
* ``shuffle_comments`` (a control, never for a real encoder) gives each segment of a batch the
  comments of another segment of the batch: the same corpus, loader, sampling and loss, with the
  link between a video and its own comments cut, so what the encoder learns must vanish.

Evaluation uses the same class with ``shuffle=False, infinite=False`` (shards in index order,
last partial batch kept).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .contracts import lakepaths
from .contracts.shards import FRAME_MEMBERS, INDEX_NAME, META_MEMBER, decode_frames_member, frames_member

log = logging.getLogger(__name__)


class ShardIndexError(ValueError):
    """The shard index (index.json or the given list) is missing, malformed or empty."""


class ShardSampleError(ValueError):
    """A shard or a sample in it cannot be read; names the shard URL, the sample key and why."""

    def __init__(self, url: str, key: str | None, reason: str):
        self.url, self.key, self.reason = url, key, reason
        where = f"{url}#{key}" if key else url
        super().__init__(f"{where}: {reason}")


VIDEO_GROUP = "video"  # split_group: each video its own group
AUTO_GROUP = "auto"  # split_group: the catalogue's declared ``group`` where the index names any, else video
DECLARED_GROUP = "group"


@dataclass(frozen=True)
class ShardSpec:
    url: str
    video_id: str
    samples: int | None = None
    platform: str | None = None  # the index may say; used to hold out or report by platform
    language: str | None = None
    catalogue: tuple[tuple[str, str], ...] = ()  # the video's other catalogue columns (series, group …)

    def column(self, name: str) -> str | None:
        """This shard's video's value of a catalogue column (``video_id``, ``platform``, ``language``
        or one of ``catalogue``; ``video`` is the video id), None where the index does not say."""
        if name in ("video_id", VIDEO_GROUP):
            return self.video_id
        if name in ("platform", "language"):
            return getattr(self, name)
        return dict(self.catalogue).get(name)


@dataclass
class Segment:
    video_id: str
    segment_index: int
    frames: np.ndarray  # uint8 (T, H, W, 3)
    comments: list[str]
    key: str
    url: str


# ----------------------------------------------------------------------- the index


def load_shard_index(source: str | os.PathLike | Sequence[Any]) -> list[ShardSpec]:
    """Shards from an ``index.json`` path/URL, a folder holding one, or a list of URLs/entries.

    A bare URL's video is its folder's name (the shard contract puts each video's shards in
    ``shards/{safe_name(video_id)}/{version}/``). Relative URLs in an index are relative to the index's folder
    (or, failing that, to the lake root above it); an index names only shards of its own lake
    (``_resolve_in_lake``).
    """
    if isinstance(source, (list, tuple)):
        entries, index = list(source), None
    else:
        text = str(source)
        if "://" not in text and Path(text).is_dir():
            index = Path(text) / INDEX_NAME
            if index.is_file():
                text = str(index)
            else:
                tars = sorted(str(p) for p in Path(text).rglob("*.tar"))
                if not tars:
                    raise ShardIndexError(f"{text}: no index.json and no .tar shards under it")
                return load_shard_index(tars)
        local = "://" not in text or text.startswith("file://")
        entries, index = _read_index_json(text), (os.path.abspath(text.removeprefix("file://")) if local else text)
    shards = [_as_spec(entry, index, i) for i, entry in enumerate(entries)]
    if not shards:
        raise ShardIndexError(f"{source}: lists no shards")
    return shards


def _read_index_json(url: str) -> list[Any]:
    try:
        if "://" in url and not url.startswith("file://"):
            import fsspec

            with fsspec.open(url, "rt", encoding="utf-8") as fh:
                data = json.load(fh)
        else:
            data = json.loads(Path(url.removeprefix("file://")).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ShardIndexError(f"{url}: cannot read shard index: {exc}") from exc
    if not isinstance(data, list):
        raise ShardIndexError(f"{url}: expected a JSON list of shards, got {type(data).__name__}")
    return data


def _as_spec(entry: Any, index: str | None, position: int) -> ShardSpec:
    if isinstance(entry, ShardSpec):
        return entry
    if isinstance(entry, (str, os.PathLike)):
        url = str(entry)
        return ShardSpec(url, _video_folder(url))
    if isinstance(entry, dict) and isinstance(entry.get("url"), str) and entry.get("video_id") is not None:
        url = entry["url"] if index is None else _resolve_in_lake(entry["url"], index)
        samples, catalogue = entry.get("samples"), entry.get("catalogue") or {}
        if not isinstance(catalogue, dict):
            raise ShardIndexError(f"shard entry {position}: 'catalogue' must be an object of column values, got {catalogue!r}")
        return ShardSpec(url, str(entry["video_id"]), int(samples) if samples is not None else None,
                         entry.get("platform"), entry.get("language"),
                         tuple(sorted((str(k), str(v)) for k, v in catalogue.items() if v is not None)))
    raise ShardIndexError(f"shard entry {position} is not a URL or a {{url, video_id}} object: {entry!r}")


def _video_folder(url: str) -> str:
    """A bare shard URL's video: the folder named like the shard (``{video}/{video}-00000.tar``),
    which is the parent or, in a version folder (``{video}/{version}/...``), the grandparent."""
    path = Path(url.split("://", 1)[-1])
    for folder in (path.parent, path.parent.parent):
        if folder.name and path.name.startswith(f"{folder.name}-"):
            return folder.name
    return path.parent.name or url


def _resolve_in_lake(url: str, index: str) -> str:
    """An index entry's shard, inside the lake the index belongs to (the folder above the index's
    folder: ``{lake}/shards/index.json``). A relative path is taken relative to the index's folder,
    or else to the lake root; an absolute path or URL must be inside the lake (an index written
    before paths were relative); anything else (``pipe:``, another host, ``..`` out of the lake)
    is refused naming the index (``lakepaths.resolve``)."""
    scheme, _, path = index.rpartition("://")
    folder = posixpath.dirname(path)
    lake_root, base = (f"{scheme}://" if scheme else "") + posixpath.dirname(folder), posixpath.basename(folder)
    try:
        beside = lakepaths.resolve(lake_root, url, index, base=base, inside="")
        if "://" in lake_root or Path(beside).exists():
            return beside
        above = lakepaths.resolve(lake_root, url, index)
    except lakepaths.LakeContentError as exc:
        raise ShardIndexError(str(exc)) from exc
    return above if Path(above).exists() else beside


def split_grouping(shards: Sequence[ShardSpec], split_group: str) -> str:
    """The column the held-out split groups videos by: ``split_group`` itself, or for ``auto`` the
    declared ``group`` column when any shard's video has one, else ``video``."""
    if split_group == AUTO_GROUP:
        return DECLARED_GROUP if any(s.column(DECLARED_GROUP) is not None for s in shards) else VIDEO_GROUP
    if split_group != VIDEO_GROUP and all(s.column(split_group) is None for s in shards):
        raise ValueError(f"split_group {split_group!r}: no shard of the index names that catalogue column "
                         f"(use auto, video, or a column the catalogue fills: series, uploader, group, genre …)")
    return split_group


def split_by_video(shards: Sequence[ShardSpec], eval_fraction: float, seed: int = 0,
                   eval_platforms: Sequence[str] = (), group_by: str = VIDEO_GROUP
                   ) -> tuple[list[ShardSpec], list[ShardSpec]]:
    """Deterministic (train, test) split of *videos*: every segment of a video lands on one side,
    and with ``group_by`` a catalogue column (a series, an uploader hash, a declared group: see
    ``split_grouping``) every video of one group does, so related videos never straddle the split
    (a video without a value is a group of its own).

    Groups are ordered by a hash of (seed, group) and the first ``round(fraction * n)`` (at least
    one when the fraction is positive and there are two or more groups) are held out. Hashing,
    not the index order, decides, so adding a group moves at most one other across the line.

    With ``eval_platforms`` every video of those platforms is held out and no other (train on one
    live-comment culture, test on another); the index entries must then name their platform.
    """
    if eval_platforms:
        if unknown := sorted({s.url for s in shards if s.platform is None})[:3]:
            raise ValueError(f"eval_platforms needs each shard's platform in the index; none for {unknown}")
        held_out = {p.lower() for p in eval_platforms}
        return ([s for s in shards if s.platform.lower() not in held_out],
                [s for s in shards if s.platform.lower() in held_out])
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    group_of = {s.video_id: _group_key(s, group_by) for s in shards}
    groups = sorted(set(group_of.values()), key=lambda g: hashlib.sha256(f"{seed}:{g}".encode("utf-8")).hexdigest())
    n_test = round(eval_fraction * len(groups))
    if eval_fraction > 0 and len(groups) >= 2:
        n_test = min(max(n_test, 1), len(groups) - 1)
    test_groups = set(groups[:n_test])
    train = [s for s in shards if group_of[s.video_id] not in test_groups]
    test = [s for s in shards if group_of[s.video_id] in test_groups]
    return train, test


def _group_key(shard: ShardSpec, group_by: str) -> str:
    # a video is keyed by its id alone (the split by video hashes plain ids); a group value cannot collide with one
    value = None if group_by == VIDEO_GROUP else shard.column(group_by)
    return shard.video_id if value is None else f"{group_by}\x1f{value}"


# --------------------------------------------------------------------- reading tars


def _open_url(url: str):
    """A shard by path or by a store URL; never a ``pipe:`` URL, which webdataset's gopen would run
    through a shell (a shard index is lake content, not a command)."""
    if url.startswith("pipe:"):
        raise ShardIndexError(f"{url[:80]!r}: pipe: URLs are refused (a shard is a path or an object-store URL)")
    if url.startswith("file:") or "://" not in url:
        return open(url.removeprefix("file://").removeprefix("file:"), "rb")
    import fsspec  # s3://, gs://, http(s)://, memory:// … through their fsspec implementations

    return fsspec.open(url, "rb").open()


def iter_raw_samples(url: str, select: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples (``__key__``, ``__url__`` and one bytes entry per file suffix) of one shard.

    ``select``: suffixes to keep (others are streamed past, not held in memory).
    """
    from webdataset.tariterators import group_by_keys, tar_file_expander

    keep = tuple(f".{s}" for s in select) if select else None
    try:
        stream = _open_url(url)
    except (OSError, ValueError) as exc:
        raise ShardSampleError(url, None, f"cannot open shard: {exc}") from exc
    try:
        files = tar_file_expander([{"url": url, "stream": stream}],
                                  select_files=(lambda n: n.endswith(keep)) if keep else None)
        yield from group_by_keys(files)
    except ShardSampleError:
        raise
    except Exception as exc:  # tarfile.ReadError, truncated stream, duplicate names …
        raise ShardSampleError(url, None, f"unreadable tar: {exc}") from exc
    finally:
        stream.close()


def parse_meta(raw: dict[str, Any]) -> dict[str, Any]:
    url, key = raw.get("__url__", "?"), raw.get("__key__")
    if META_MEMBER not in raw:
        raise ShardSampleError(url, key, "sample has no json member")
    try:
        meta = json.loads(raw[META_MEMBER].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ShardSampleError(url, key, f"json member is not UTF-8 JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("comments", []), list):
        raise ShardSampleError(url, key, "json member is not an object with a 'comments' list")
    meta["comments"] = [c for c in meta.get("comments", []) if isinstance(c, str) and c.strip()]
    return meta


def decode_frames(raw: dict[str, Any]) -> np.ndarray:
    url, key = raw.get("__url__", "?"), raw.get("__key__")
    member = frames_member(raw)
    if member is None:
        raise ShardSampleError(url, key, f"sample has no frames member (one of {', '.join(FRAME_MEMBERS)})")
    try:
        return decode_frames_member(member, raw[member])
    except ValueError as exc:
        raise ShardSampleError(url, key, str(exc)) from exc


def clip_timing(shards: Sequence[ShardSpec]) -> tuple[float, int] | None:
    """(segment seconds, frames) of the first full training clip: the frame rate V2LC learns
    (the last clip of a video may be a shorter tail, so the longest of the first few is taken)."""
    spans: list[tuple[float, int]] = []
    for shard in shards:
        try:
            for raw in iter_raw_samples(shard.url, select=(META_MEMBER,)):
                meta = parse_meta(raw)
                try:
                    spans.append(((int(meta["end_ms"]) - int(meta["start_ms"])) / 1000.0, len(meta["frame_times_ms"])))
                except (KeyError, TypeError, ValueError):
                    continue  # a sample without timing says nothing about the rate
                if len(spans) >= 8:
                    return max(spans)
        except ShardSampleError as exc:
            log.warning("skipping shard: %s", exc)
    return max(spans) if spans else None


def read_comments(shards: Sequence[ShardSpec], limit: int = 50_000) -> list[str]:
    """Comments of the first segments in index order (for building the offline tokenizer)."""
    texts: list[str] = []
    for shard in shards:
        try:
            for raw in iter_raw_samples(shard.url, select=(META_MEMBER,)):
                try:
                    texts.extend(parse_meta(raw)["comments"])
                except ShardSampleError as exc:
                    log.warning("skipping sample: %s", exc)
                if len(texts) >= limit:
                    return texts[:limit]
        except ShardSampleError as exc:
            log.warning("skipping shard: %s", exc)
    return texts


# -------------------------------------------------------------------------- stream


class SegmentStream(IterableDataset):
    """Batches of segments for V2LC (use with ``DataLoader(batch_size=None)``).

    Each batch is a dict: ``frames`` uint8 (B, T, H, W, 3); with a tokenizer ``input_ids`` and
    ``attention_mask`` (B, K, L) and ``comment_mask`` (B, K) (else ``comments``: list of lists);
    ``video_id`` (list), ``segment_index`` and ``n_comments`` (B,). See the module docstring for
    the ordering and resume guarantees.
    """

    def __init__(self, shards: Sequence[ShardSpec], *, batch_size: int, tokenizer=None, max_comments: int = 5,
                 max_length: int = 32, seed: int = 0, shuffle: bool = True, infinite: bool = True,
                 shuffle_buffer: int = 64, open_shards: int | None = None, start_batch: int = 0, rank: int = 0,
                 world_size: int = 1, on_error: str = "warn", max_segments: int | None = None,
                 max_per_video: int | None = 2, shuffle_comments: bool = False):
        super().__init__()
        if not shards:
            raise ShardIndexError("SegmentStream needs at least one shard")
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error must be 'warn' or 'raise', not {on_error!r}")
        self.shards = list(shards)
        self.batch_size, self.tokenizer = int(batch_size), tokenizer
        self.max_comments, self.max_length = int(max_comments), int(max_length)
        self.seed, self.shuffle, self.infinite = int(seed), bool(shuffle), bool(infinite)
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.open_shards = max(1, int(open_shards if open_shards is not None else batch_size))
        # the per-video cap shapes training batches only; evaluation reads every segment in order
        self.max_per_video = int(max_per_video) if max_per_video and shuffle else None
        self.start_batch, self.rank, self.world_size = int(start_batch), int(rank), int(world_size)
        self.on_error, self.max_segments = on_error, max_segments
        self.shuffle_comments = bool(shuffle_comments)

    # -- the per-slot sample stream

    def _failed(self, exc: ShardSampleError) -> None:
        if self.on_error == "raise":
            raise exc
        log.warning("skipping: %s", exc)

    def _shard_metas(self, shard: ShardSpec, stride: tuple[int, int] | None) -> Iterator[dict[str, Any]]:
        """(raw sample with parsed meta) for each usable segment of one shard."""
        try:
            for i, raw in enumerate(iter_raw_samples(shard.url, select=(*FRAME_MEMBERS, META_MEMBER))):
                if stride is not None and i % stride[1] != stride[0]:
                    continue
                try:
                    raw["meta"] = parse_meta(raw)
                except ShardSampleError as exc:
                    self._failed(exc)
                    continue
                if raw["meta"]["comments"]:  # a segment without comments has no positive
                    yield raw
        except ShardSampleError as exc:
            self._failed(exc)

    def _interleaved(self, shards: list[ShardSpec], stride: tuple[int, int] | None) -> Iterator[dict[str, Any]]:
        pending = list(shards)
        active: list[Iterator] = []
        while pending or active:
            while pending and len(active) < self.open_shards:
                active.append(self._shard_metas(pending.pop(0), stride))
            for it in list(active):
                item = next(it, None)
                if item is None:
                    active.remove(it)
                else:
                    yield item

    def _shuffled(self, items: Iterator[Any], rng: random.Random) -> Iterator[Any]:
        buffer: list[Any] = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            i = rng.randrange(len(buffer))
            yield buffer[i]
            buffer[i] = item
        rng.shuffle(buffer)
        yield from buffer

    def slot_segments(self, slot: int, n_slots: int) -> Iterator[Segment]:
        epoch = 0
        while True:
            order = list(self.shards)
            if self.shuffle:
                random.Random(f"{self.seed}:shards:{epoch}").shuffle(order)
            if len(order) >= n_slots:
                mine, stride = order[slot::n_slots], None
            else:  # fewer shards than slots: every slot reads all shards, keeps every n-th sample
                mine, stride = order, (slot, n_slots)
            raws = self._interleaved(mine, stride)
            if self.shuffle:
                raws = self._shuffled(raws, random.Random(f"{self.seed}:buffer:{epoch}:{slot}"))
            produced = 0
            for raw in raws:
                try:
                    frames = decode_frames(raw)
                except ShardSampleError as exc:
                    self._failed(exc)
                    continue
                meta = raw["meta"]
                produced += 1
                comments = self.sample_comments(meta["comments"], epoch, raw["__url__"], raw["__key__"])
                yield Segment(str(meta.get("video_id", "")), int(meta.get("segment_index", -1)), frames,
                              comments, raw["__key__"], raw["__url__"])
            if not self.infinite:
                return
            if produced == 0:
                raise ShardIndexError(f"slot {slot}/{n_slots}: epoch {epoch} yielded no usable segment "
                                      f"from {len(mine)} shard(s) (no comments, or unreadable)")
            epoch += 1

    def sample_comments(self, comments: list[str], epoch: int, url: str, key: str) -> list[str]:
        """``max_comments`` of a segment's comments, in their order of appearance; which ones is a
        pure function of (seed, epoch, shard, key), so a resumed run draws the same. The shard is
        named by its file name (``{video}-{n}.tar``), not its URL: the same lake on a local disk or
        an object store (or moved), whose version folders are named by a fingerprint that includes
        the lake's own paths, draws the same comments."""
        if len(comments) <= self.max_comments:
            return list(comments)
        shard = url.rsplit("/", 1)[-1]
        rng = random.Random(f"{self.seed}:comments:{epoch}:{shard}:{key}")
        return [comments[i] for i in sorted(rng.sample(range(len(comments)), self.max_comments))]

    # -- batching

    def batches(self, segments: Iterable[Segment]) -> Iterator[list[Segment]]:
        """Group the slot's segments into batches of at most ``max_per_video`` segments per video
        (module docstring); a pure function of the segment stream, so resuming replays it."""
        cap, hold_limit = self.max_per_video, 4 * self.batch_size
        held: list[Segment] = []
        stream, exhausted, emitted = iter(segments), False, 0
        while self.max_segments is None or emitted < self.max_segments:
            size = self.batch_size if self.max_segments is None else min(self.batch_size, self.max_segments - emitted)
            batch: list[Segment] = []
            counts: dict[str, int] = {}

            def take(seg: Segment, force: bool = False) -> bool:
                """Put ``seg`` in the batch (or drop it if unusable); False when the cap holds it back."""
                if batch and seg.frames.shape != batch[0].frames.shape:
                    self._failed(ShardSampleError(seg.url, seg.key, f"frames {seg.frames.shape} differ from "
                                                  f"{batch[0].frames.shape} of the batch"))
                    return True
                if cap is not None and not force and counts.get(seg.video_id, 0) >= cap:
                    return False
                batch.append(seg)
                counts[seg.video_id] = counts.get(seg.video_id, 0) + 1
                return True

            held = [seg for seg in held if len(batch) == size or not take(seg)]  # waiting ones first
            while len(batch) < size and not exhausted:
                seg = next(stream, None)
                if seg is None:
                    exhausted = True
                elif not take(seg, force=len(held) >= hold_limit):
                    held.append(seg)
            while exhausted and held and len(batch) < size:  # a finite stream's end: no cap left to keep
                take(held.pop(0), force=True)
            if not batch or (len(batch) < size and self.infinite):
                return
            emitted += len(batch)
            yield batch

    def collate(self, segments: list[Segment], index: int = 0) -> dict[str, Any]:
        """One batch; with ``shuffle_comments`` (the control) each segment gets the comments of
        another segment of the batch (batch ``index`` seeds the permutation: a resume repeats it)."""
        shape = segments[0].frames.shape
        for seg in segments:
            if seg.frames.shape != shape:
                raise ShardSampleError(seg.url, seg.key, f"frames {seg.frames.shape} differ from the batch's {shape}")
        batch: dict[str, Any] = {
            "frames": torch.from_numpy(np.stack([s.frames for s in segments])),
            "video_id": [s.video_id for s in segments],
            "segment_index": torch.tensor([s.segment_index for s in segments], dtype=torch.long),
            "n_comments": torch.tensor([len(s.comments) for s in segments], dtype=torch.long),
        }
        comments = [s.comments for s in segments]
        if self.shuffle_comments:
            comments = derange(comments, random.Random(f"{self.seed}:shuffle-comments:{index}"))
        if self.tokenizer is not None:
            from .tokenizer import tokenize_comments

            ids, attn, mask = tokenize_comments(self.tokenizer, comments, self.max_comments, self.max_length)
            batch.update(input_ids=ids, attention_mask=attn, comment_mask=mask)
        else:
            batch["comments"] = comments
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        logical = (worker + self.start_batch) % n_workers  # the worker due next plays DataLoader worker 0
        skip_batches = len(range(logical, self.start_batch, n_workers))
        slot, n_slots = self.rank * n_workers + logical, self.world_size * n_workers
        for i, batch in enumerate(self.batches(self.slot_segments(slot, n_slots))):
            if i >= skip_batches:  # batches already trained on are rebuilt, never collated
                yield self.collate(batch, i)


def derange(items: list, rng: random.Random) -> list:
    """``items`` permuted so that none keeps its place (one cycle through a random order);
    a single item stays where it is."""
    order = list(range(len(items)))
    rng.shuffle(order)
    out = list(items)
    for k, i in enumerate(order):
        out[i] = items[order[(k + 1) % len(order)]]
    return out


def make_loader(stream: SegmentStream, num_workers: int = 0, pin_memory: bool = False,
                seed: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over ``stream`` that leaves the global torch RNG untouched (a private generator
    seeds the workers), so creating it at a different point of a resumed run changes nothing."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, generator=gen,
        persistent_workers=False, prefetch_factor=4 if num_workers > 0 else None, in_order=True)

