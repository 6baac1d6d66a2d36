"""Videos to training clips, one video at a time: fetch, probe, audio, segments + shards.

Plain functions the clips assets wrap. Lake layout:

    videos/{video}.{ext}            the video (copied from a local path or downloaded by yt-dlp)
    audio/{video}.wav               16 kHz mono, for the acoustic features downstream
    segments/{video}.parquet        SEGMENTS_SCHEMA, with shard and sample_key filled in
    shards/{video}/{video}-NNNNN.tar WebDataset shards of uint8 frames + comments, per video
    shards/index.json               every shard with its video and sample count
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import lake, schema
from .corpus import clean_path
from .stages import Skip, VideoResult


@dataclasses.dataclass(frozen=True)
class ClipOptions:
    segment_s: float = 8.0
    comments_per_segment: int = 32
    frames_per_segment: int = 8
    size: int = 224
    max_shard_bytes: int = 1_000_000_000
    max_height: int = 360
    cookie_file: str | None = None
    rate_limit: int | None = None
    max_duration_s: float | None = None
    demote_filler: bool = False
    exact_frames: bool = False  # decode every frame (frames.py): slower, frame times exactly as planned
    frame_backend: str = "auto"  # auto | pyav | decord (frames.py; decord decodes every frame)

    def __post_init__(self):
        from .frames import BACKENDS

        if self.frame_backend not in BACKENDS:
            raise ValueError(f"frame_backend {self.frame_backend!r}: one of {' | '.join(BACKENDS)}")


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
    if max_duration_s is not None:  # what yt-dlp's duration filter does for downloads
        _check_max_duration(source, max_duration_s)
    fingerprint = lake.file_hash(source)
    if have is not None and prev and prev.get("fingerprint") == fingerprint:
        # Touched or copied over with the same bytes: keep the copy, remember the new stat.
        return VideoResult(**{**prev, "status": "skipped", "reason": None, "metrics": {**last, "source_stat": seen}})
    return _fetched(vid, fingerprint, copy_local_video(source, videos_dir(root), vid), source_stat=seen)


def _fetched(vid: str, fingerprint: str, have, **metrics) -> VideoResult:
    return VideoResult(vid, "done", fingerprint, lake.file_hash(have.path), 1,
                       metrics={"path": str(have.path), "bytes": have.path.stat().st_size, **metrics})


def _check_max_duration(source, max_duration_s: float) -> None:
    from .videos import probe_video

    with lake.local_copy(source, "ffprobe") as local:
        duration = probe_video(local).duration_s
    if duration > max_duration_s:
        raise ValueError(f"{source}: the video is {duration:.1f} s long, over max_duration_s = {max_duration_s:g} s")


def probe_one(video: dict[str, Any], prev: dict | None, *, root, video_hash: str | None) -> VideoResult:
    """ffprobe one video; an undecodable file fails with the reason and is excluded downstream."""
    from .videos import existing_video, probe_video

    vid = video["video_id"]
    have = existing_video(videos_dir(root), vid)
    if have is None or video_hash is None:
        raise FileNotFoundError("no video in the lake (the fetch failed)")
    if prev and prev.get("fingerprint") == video_hash:
        raise Skip
    with lake.local_copy(have.path, "ffprobe") as local:
        probe = dataclasses.asdict(probe_video(local))
    digest = lake.combine_hashes({k: str(v) for k, v in probe.items()})
    return VideoResult(vid, "done", video_hash, digest, 1, metrics={**probe, "path": str(have.path)})


def audio_one(video: dict[str, Any], prev: dict | None, *, root, probe: dict | None) -> VideoResult:
    """16 kHz mono WAV of the audio track; a silent video is done with no file."""
    from .videos import extract_audio

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
    """Segments, selected comments and sampled frames of one video, written as its own shards."""
    from .segments import segment_video_stream
    from .shards import write_shard_stream

    vid, platform = video["video_id"], video["platform"]
    if not probe or probe.get("status") == "failed" or not probe.get("output_hash"):
        raise RuntimeError("video was not probed successfully")
    fingerprint = lake.combine_hashes({"video": probe["fingerprint"], "comments": str(comments_hash),
                                       "opts": str(dataclasses.astuple(opts)[:5] + (opts.exact_frames, opts.demote_filler,
                                                                    opts.frame_backend))})
    seg_path = segments_path(root, vid)
    if prev and prev.get("fingerprint") == fingerprint and seg_path.exists():
        raise Skip
    comments = None
    if comments_hash and clean_path(root, vid, comments_hash).exists():
        comments = lake.read_parquet(clean_path(root, vid, comments_hash), schema.CLEAN_COMMENTS_SCHEMA)
    # Frames stream from the decoder into the shards one segment at a time: memory stays bounded
    # however long the video.
    with lake.local_copy(probe["metrics"]["path"], "the frame decoder") as video:
        table, stacks = segment_video_stream(video, comments, segment_s=opts.segment_s,
                                             comments_per_segment=opts.comments_per_segment,
                                             frames_per_segment=opts.frames_per_segment, size=opts.size, video_id=vid,
                                             exact=opts.exact_frames, backend=opts.frame_backend,
                                             demote_filler=opts.demote_filler, probe=recorded_probe(probe))
        table = write_shard_stream(table, stacks, shards_dir(root), vid, max_shard_bytes=opts.max_shard_bytes)
    digest = lake.write_parquet(table, seg_path)
    with_comments = int(np.count_nonzero(np.asarray(table.column("comment_count").to_numpy()) > 0)) if table.num_rows else 0
    return VideoResult(vid, "done", fingerprint, digest, table.num_rows, metrics={
        "segments": table.num_rows,
        "segments_with_comments": with_comments,
        "frames_bytes": table.num_rows * opts.frames_per_segment * opts.size * opts.size * 3,
        "duration_s": probe["metrics"].get("duration_s"),
    })


def recorded_probe(probe: dict | None):
    """The ``VideoProbe`` that ``probe_one`` recorded, so that later stages do not run ffprobe on
    the same file again (one subprocess per video and stage); None (probe again) when the record
    lacks a field, e.g. one written before that field existed."""
    from .videos import VideoProbe

    metrics = (probe or {}).get("metrics") or {}
    names = [f.name for f in dataclasses.fields(VideoProbe)]
    if not all(name in metrics for name in names):
        return None
    return VideoProbe(**{name: metrics[name] for name in names})


def segments_path(root, video_id: str):
    return lake.under(lake.as_path(root) / "segments", video_id, ext=".parquet")


def shards_dir(root):
    return lake.as_path(root) / "shards"


def contact_sheet(root, video_id: str, max_segments: int = 6) -> np.ndarray | None:
    """The first frame of up to ``max_segments`` segments of one video, side by side."""
    import io
    import tarfile

    from .shards import resolve_url

    seg = segments_path(root, video_id)
    if not seg.exists():
        return None
    table = lake.read_parquet(seg).slice(0, max_segments).to_pylist()
    tiles = []
    for row in table:
        if not row.get("shard"):
            continue
        with resolve_url(shards_dir(root), row["shard"]).open("rb") as fh, tarfile.open(fileobj=fh) as tar:
            member = tar.extractfile(f"{row['sample_key']}.frames.npy")
            frames = np.load(io.BytesIO(member.read()))
        tiles.append(frames[0])
    return np.concatenate(tiles, axis=1) if tiles else None
