"""Videos to training clips, one video at a time: fetch, probe, audio, segments + shards.

Plain functions the clips assets wrap. Lake layout:

    videos/{video}.{ext}            the video (copied from a local path or downloaded by yt-dlp)
    audio/{video}.wav               16 kHz mono, for the acoustic features downstream
    segments/video_key={video}/{hash}.parquet   the Delta table ``segments`` (``tables``): SEGMENTS_SCHEMA
                                    with shard and sample_key filled in, one content-addressed file per video
    shards/{video}/{version}/{video}-NNNNN.tar  WebDataset shards of uint8 frames + comments, per video
                                    and version (the segments stage's input fingerprint): never overwritten
    shards/index-{sha16}.json       one training_shards index (every shard with its video and sample count);
                                    shards/index.json is a copy of the latest
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lcaffect_ml.contracts.shards import (DEFAULT_COMMENTS_PER_SEGMENT, DEFAULT_FRAME_CODEC, DEFAULT_FRAME_QUALITY,
                                          DEFAULT_FRAME_SIZE, DEFAULT_FRAMES_PER_SEGMENT, DEFAULT_SEGMENT_S, FRAME_MEMBERS,
                                          check_frame_codec, decode_frames_member)
from lcaffect_ml.options import check_bounds, opt

from . import lake, tables
from .stages import Skip, VideoResult


@dataclasses.dataclass(frozen=True)
class ClipOptions:
    """How videos become training clips (``ClipsResource`` documents each option). The bounds
    are here, once: the resource builds one at launch, so a value outside them fails the run
    before any video is fetched, naming the option and its range."""

    segment_s: float = opt(DEFAULT_SEGMENT_S, "segment length, seconds", above=0, high=600)
    comments_per_segment: int = opt(DEFAULT_COMMENTS_PER_SEGMENT, "comments kept per segment", low=1, high=10_000)
    frames_per_segment: int = opt(DEFAULT_FRAMES_PER_SEGMENT, "frames sampled per segment", low=1, high=256)
    size: int = opt(DEFAULT_FRAME_SIZE, "frames are size x size RGB", low=16, high=2048)
    max_shard_bytes: int = opt(1_000_000_000, "a video's shards split at this size", low=1 << 16)
    max_height: int = opt(360, "yt-dlp format cap", low=16, high=8640)
    cookie_file: str | None = None
    rate_limit: int | None = opt(None, "download rate limit, bytes/s", low=1)
    max_duration_s: float | None = opt(None, "longest video fetched, seconds", above=0)
    demote_filler: bool = False
    exact_frames: bool = False  # decode every frame (frames.py): slower, frame times exactly as planned
    frame_backend: str = "auto"  # auto | pyav | decord (frames.py; decord decodes every frame)
    frame_codec: str = DEFAULT_FRAME_CODEC  # how shards store frames: jpeg | webp | npy (contracts.shards)
    frame_quality: int = DEFAULT_FRAME_QUALITY

    # The options that shape the shards: the segments stage's fingerprint hashes them by name.
    SHARD_FIELDS = ("segment_s", "comments_per_segment", "frames_per_segment", "size", "max_shard_bytes",
                    "exact_frames", "demote_filler", "frame_backend", "frame_codec", "frame_quality")

    def __post_init__(self):
        from .frames import BACKENDS

        if self.frame_backend not in BACKENDS:
            raise ValueError(f"frame_backend {self.frame_backend!r}: one of {' | '.join(BACKENDS)}")
        check_frame_codec(self.frame_codec, self.frame_quality)
        check_bounds(self, "clips: ")

    def shard_fingerprint(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in self.SHARD_FIELDS}


def videos_dir(root):
    return lake.as_path(root) / "videos"


def fetch_video(video: dict[str, Any], prev: dict | None, *, root, opts: ClipOptions) -> VideoResult:
    """Copy a local video into the lake, or download it with yt-dlp.

    A URL is downloaded once and kept until the catalogue gives the video another URL (then it
    is downloaded again, also under ``force``). A local file is checked on every run, because
    that costs nothing: size and modification time first, its content hash only when they
    differ; a file whose content changed is copied again.
    """
    from .videos import download_video, existing_video, source_key

    vid, src = video["video_id"], video.get("video")
    if not src:
        raise ValueError("the catalogue gives no video for this entry")
    have = existing_video(videos_dir(root), vid)
    if "://" in src and not lake.is_store_url(src):
        fingerprint = f"url:{src}"
        if have is not None and have.source_key == source_key(src) and prev and prev.get("fingerprint") == fingerprint:
            raise Skip
        have = download_video(src, videos_dir(root), vid, max_height=opts.max_height, cookiefile=opts.cookie_file,
                              rate_limit=opts.rate_limit, max_duration_s=opts.max_duration_s,
                              archive=str(videos_dir(root) / "download-archive.txt"))
        return _fetched(vid, fingerprint, have)
    return _copy_if_changed(vid, lake.source_path(src), have, prev, root, opts.max_duration_s)


def _copy_if_changed(vid: str, source, have, prev: dict | None, root, max_duration_s: float | None) -> VideoResult:
    from .videos import copy_local_video

    if not source.is_file():
        raise FileNotFoundError(f"{source}: video file not found")
    st = source.stat()
    seen = [str(source), st.st_size, st.st_mtime_ns]  # taken before reading: a later write shows next run
    last = (prev or {}).get("metrics", {})
    if have is not None and last.get("source_stat") == seen:
        raise Skip
    probe = _check_local_video(source, max_duration_s)
    fingerprint = lake.file_hash(source)
    if have is not None and prev and prev.get("fingerprint") == fingerprint:
        # Touched or copied over with the same bytes: keep the copy, remember the new stat.
        return VideoResult(**{**prev, "status": "skipped", "reason": None, "metrics": {**last, "source_stat": seen}})
    return _fetched(vid, fingerprint, copy_local_video(source, videos_dir(root), vid), source_stat=seen,
                    **dataclasses.asdict(probe))  # the probe stage reuses it: same bytes


def _fetched(vid: str, fingerprint: str, have, **metrics) -> VideoResult:
    return VideoResult(vid, "done", fingerprint, lake.file_hash(have.path), 1,
                       metrics={"path": str(have.path), "bytes": have.path.stat().st_size, **metrics})


def _check_local_video(source, max_duration_s: float | None):
    """Probe a local file before it is copied: any path can be named in a catalogue, and a file
    that is not a video (``/etc/passwd``) must fail here with ffprobe's reason, never enter the
    lake as one; ``max_duration_s`` is then what yt-dlp's duration filter is for downloads."""
    from .probe import probe_video

    with lake.local_copy(source, "ffprobe") as local:
        probe = probe_video(local)  # VideoDecodeError naming the file and the reason
    if max_duration_s is not None and probe.duration_s > max_duration_s:
        raise ValueError(f"{source}: the video is {probe.duration_s:.1f} s long, "
                         f"over max_duration_s = {max_duration_s:g} s")
    return probe


def probe_one(video: dict[str, Any], prev: dict | None, *, root, fetched: dict | None) -> VideoResult:
    """ffprobe one video; an undecodable file fails with the reason and is excluded downstream.
    ``fetched`` is the fetch stage's record: a local file it probed before copying (the same
    bytes: its fingerprint is the copy's hash) is not probed again."""
    from .probe import probe_video
    from .videos import existing_video

    vid = video["video_id"]
    video_hash = (fetched or {}).get("output_hash")
    have = existing_video(videos_dir(root), vid)
    if have is None or video_hash is None:
        raise FileNotFoundError("no video in the lake (the fetch failed)")
    if prev and prev.get("fingerprint") == video_hash:
        raise Skip
    known = recorded_probe(fetched) if fetched.get("fingerprint") == video_hash else None
    if known is None:
        with lake.local_copy(have.path, "ffprobe") as local:
            known = probe_video(local)
    probe = dataclasses.asdict(known)
    digest = lake.combine_hashes({k: str(v) for k, v in probe.items()})
    return VideoResult(vid, "done", video_hash, digest, 1, metrics={**probe, "path": str(have.path)})


def audio_one(video: dict[str, Any], prev: dict | None, *, root, probe: dict | None) -> VideoResult:
    """16 kHz mono WAV of the audio track; a silent video is done with no file."""
    from .probe import extract_audio

    vid = video["video_id"]
    if not probe or probe.get("status") == "failed" or not probe.get("output_hash"):
        raise RuntimeError("video was not probed successfully")
    fingerprint = probe["fingerprint"]
    dest = lake.under(lake.as_path(root) / "audio", vid, ext=".wav")
    if prev and prev.get("fingerprint") == fingerprint and (dest.exists() or not prev.get("metrics", {}).get("has_audio")):
        raise Skip
    with lake.local_copy(probe["metrics"]["path"], "ffmpeg (audio)") as local:
        out = extract_audio(local, dest, probe=recorded_probe(probe))
    if out is None:
        return VideoResult(vid, "done", fingerprint, "no-audio", 0, metrics={"has_audio": False})
    return VideoResult(vid, "done", fingerprint, lake.file_hash(out), 1, metrics={"has_audio": True, "path": str(out), "bytes": out.stat().st_size})


def segment_one(video: dict[str, Any], prev: dict | None, *, root, probe: dict | None, comments_hash: str | None, opts: ClipOptions) -> VideoResult:
    """Segments, selected comments and sampled frames of one video, written as its own shards.

    The shards go in a version folder named by the inputs' fingerprint and the rows in the
    segments table's content-addressed file (its hash is the output hash), so nothing an earlier
    materialisation wrote is replaced. Inputs seen before (a reproduction on an older corpus
    version) reuse their complete folder and file without decoding the video again."""
    from .segments import segment_video_stream
    from .shards import shard_folder, write_shard_stream
    from lcaffect_ml.contracts.shards import version_dir_name

    vid = video["video_id"]
    if not probe or probe.get("status") == "failed" or not probe.get("output_hash"):
        raise RuntimeError("video was not probed successfully")
    fingerprint = lake.combine_hashes({"video": probe["fingerprint"], "comments": str(comments_hash),
                                       "opts": lake.combine_hashes(opts.shard_fingerprint())})
    if (prev and prev.get("fingerprint") == fingerprint and prev.get("output_hash")
            and tables.data_file(root, "segments", vid, prev["output_hash"]).exists()):
        raise Skip
    version = version_dir_name(fingerprint)
    if (reused := _reuse(root, vid, version, fingerprint, probe)) is not None:
        return reused
    comments = clean_comments(root, video, comments_hash)
    # Frames stream from the decoder into the shards one segment at a time: memory stays bounded
    # however long the video.
    with lake.local_copy(probe["metrics"]["path"], "the frame decoder") as local:
        table, stacks = segment_video_stream(local, comments, segment_s=opts.segment_s,
                                             comments_per_segment=opts.comments_per_segment,
                                             frames_per_segment=opts.frames_per_segment, size=opts.size, video_id=vid,
                                             exact=opts.exact_frames, backend=opts.frame_backend,
                                             demote_filler=opts.demote_filler, probe=recorded_probe(probe))
        table = write_shard_stream(table, stacks, shards_dir(root), vid, max_shard_bytes=opts.max_shard_bytes,
                                   version=version, codec=opts.frame_codec, quality=opts.frame_quality)
    digest = tables.write(root, "segments", table, vid)
    return VideoResult(vid, "done", fingerprint, digest, table.num_rows, metrics={
        **_segment_metrics(table, probe), "shard_folder": shard_folder(vid, version),
        "frames_bytes": table.num_rows * opts.frames_per_segment * opts.size * opts.size * 3,
    })


def _reuse(root, vid: str, version: str, fingerprint: str, probe: dict) -> VideoResult | None:
    """The result of an earlier run with these very inputs, when its shards folder is complete and
    its segments file still in the lake (retention may have freed one of them): no decoding."""
    from .shards import complete_version, shard_folder

    sidecar = complete_version(shards_dir(root), vid, version)
    if sidecar is None or not tables.data_file(root, "segments", vid, sidecar["segments"]).exists():
        return None
    table = tables.read_file(root, "segments", vid, sidecar["segments"])
    return VideoResult(vid, "done", fingerprint, sidecar["segments"], table.num_rows, metrics={
        **_segment_metrics(table, probe), "shard_folder": shard_folder(vid, version), "frames_bytes": 0, "reused": True})


def _segment_metrics(table, probe: dict) -> dict[str, Any]:
    with_comments = int(np.count_nonzero(np.asarray(table.column("comment_count").to_numpy()) > 0)) if table.num_rows else 0
    return {"segments": table.num_rows, "segments_with_comments": with_comments,
            "duration_s": probe["metrics"].get("duration_s")}


def clean_comments(root, video: dict[str, Any], comments_hash: str | None):
    """The video's clean comments that the clean_comments manifest names (by their file's hash in
    the clean_comments table); None when the video has none."""
    if not comments_hash:
        return None
    return tables.read_file(root, "clean_comments", video["video_id"], comments_hash)


def recorded_probe(probe: dict | None):
    """The ``VideoProbe`` that ``probe_one`` recorded, so that later stages do not run ffprobe on
    the same file again (one subprocess per video and stage); None (probe again) when the record
    lacks a field, e.g. one written before that field existed."""
    from .probe import VideoProbe

    metrics = (probe or {}).get("metrics") or {}
    names = [f.name for f in dataclasses.fields(VideoProbe)]
    if not all(name in metrics for name in names):
        return None
    return VideoProbe(**{name: metrics[name] for name in names})


def segments_of(root, video_id: str, digest: str | None = None):
    """One video's segment rows: the file ``digest`` names, or the one in the table's current
    version; None when the table has none for the video."""
    if digest is None:
        try:
            digest = tables.digests(root, "segments").get(tables.video_key(video_id))
        except tables.VersionError:
            return None
        if digest is None:
            return None
    return tables.read_file(root, "segments", video_id, digest)


def shard_folder_of(root, result: dict[str, Any]) -> str | None:
    """The shard version folder (relative to ``shards/``) of a segments result: recorded in its
    metrics, or (a failed run that kept the last good output records none) read from its file."""
    from .shards import referenced_folders

    folder = (result.get("metrics") or {}).get("shard_folder")
    if folder or not result.get("output_hash"):
        return folder
    table = tables.read_file(root, "segments", result["video_id"], result["output_hash"])
    found = sorted(referenced_folders(table.column("shard").to_pylist()))
    return found[0] if found else None


def shards_dir(root):
    return lake.as_path(root) / "shards"


def contact_sheet(root, video_id: str, segments_hash: str | None = None, max_segments: int = 6) -> np.ndarray | None:
    """The first frame of up to ``max_segments`` segments of one video, side by side (its rows in
    the segments file ``segments_hash``, by default the table's current one)."""
    import tarfile

    from .shards import resolve_url

    table = segments_of(root, video_id, segments_hash)
    if table is None:
        return None
    tiles = []
    for row in table.slice(0, max_segments).to_pylist():
        if not row.get("shard"):
            continue
        shard = resolve_url(shards_dir(root), row["shard"], f"the segments row {video_id}#{row['segment_index']}")
        with shard.open("rb") as fh, tarfile.open(fileobj=fh) as tar:
            names = set(tar.getnames())
            member = next(m for m in FRAME_MEMBERS if f"{row['sample_key']}.{m}" in names)
            frames = decode_frames_member(member, tar.extractfile(f"{row['sample_key']}.{member}").read())
        tiles.append(frames[0])
    return np.concatenate(tiles, axis=1) if tiles else None
