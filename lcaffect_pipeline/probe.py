"""Probing (ffprobe) and audio extraction (ffmpeg) of a video file, with the typed video errors.

Every function names the file and the reason when it fails (``VideoDecodeError``,
``AudioDecodeError``); audio is written to a hidden temporary name and renamed.
``lcaffect_pipeline.videos`` (downloads) re-exports these names.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from . import lake

log = logging.getLogger("lcaffect_pipeline.videos")  # the name these messages always had


class VideoError(Exception):
    """Base of the typed video errors."""


class VideoDownloadError(VideoError):
    """A video could not be downloaded; ``reason`` never contains cookie values."""

    def __init__(self, video_id: str, reason: str):
        self.video_id, self.reason = video_id, reason
        super().__init__(f"cannot download video {video_id!r}: {reason}")


class VideoDecodeError(VideoError):
    """A file is not a decodable video (missing, empty, truncated, wrong container, no frames)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot decode video {self.path}: {reason}")


class AudioDecodeError(VideoDecodeError):
    """The file has an audio stream but it does not decode to any usable samples."""


@dataclass(frozen=True)
class VideoProbe:
    duration_s: float  # of the first video stream where known, else of the container
    fps: float | None
    width: int
    height: int
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    nb_frames: int | None  # declared or counted; None where neither is available
    start_s: float = 0.0  # container start time: frame times are relative to it
    duration_source: str = "container"  # stream | container | packets: how duration was found
    # Display matrix, degrees counter-clockwise (portrait phone videos): width and height are
    # the stored picture's, before this turn.
    rotation: int = 0


# ------------------------------------------------------------------------------ probe


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Duration, frame rate, size and codecs of the first video stream, through ffprobe.

    Duration comes from the video stream, else the container, else (WebM written by browsers
    carries none) the end of the last video packet, read without decoding.
    """
    path = _existing_file(path)
    info = _ffprobe(path)
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"
             and not s.get("disposition", {}).get("attached_pic")]
    if not video:
        fmt = info.get("format", {}).get("format_name", "unknown")
        raise VideoDecodeError(path, f"no video stream (container {fmt})")
    v = video[0]
    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if width <= 0 or height <= 0:
        raise VideoDecodeError(path, f"video stream ({v.get('codec_name')}) has no picture size")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    fmt = info.get("format", {})
    start = _float(fmt.get("start_time")) or 0.0
    duration, source = _float(v.get("duration")), "stream"
    if not duration:
        duration, source = _float(fmt.get("duration")), "container"
    nb_frames = _int(v.get("nb_frames"))
    if not duration:
        duration, counted = _duration_from_packets(path, v.get("index", 0), start)
        source, nb_frames = "packets", nb_frames or counted
    if not duration or duration <= 0:
        raise VideoDecodeError(path, "cannot determine the duration: the video stream has no packets")
    fps = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate"))
    if fps is None and nb_frames:
        fps = nb_frames / duration
    return VideoProbe(
        duration_s=float(duration), fps=fps, width=width, height=height, has_audio=audio is not None,
        video_codec=str(v.get("codec_name") or "unknown"),
        audio_codec=None if audio is None else str(audio.get("codec_name") or "unknown"),
        nb_frames=nb_frames, start_s=start, duration_source=source, rotation=_rotation(v),
    )


def _rotation(stream: dict[str, Any]) -> int:
    """The display matrix's turn (ffprobe's side data), else the ``rotate`` tag of older files
    (clockwise, hence the sign)."""
    for side in stream.get("side_data_list") or []:
        if _float(side.get("rotation")) is not None:
            return round(_float(side["rotation"])) % 360
    tag = _float((stream.get("tags") or {}).get("rotate"))
    return round(-tag) % 360 if tag is not None else 0


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, "file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    return path


def _ffprobe(path: Path, **kwargs) -> dict[str, Any]:
    try:
        return ffmpeg.probe(str(path), **kwargs)
    except ffmpeg.Error as exc:
        raise VideoDecodeError(path, f"ffprobe: {_ffmpeg_reason(exc.stderr)}") from None
    except FileNotFoundError:
        raise VideoDecodeError(path, "ffprobe is not installed (apt-get install ffmpeg)") from None


def _duration_from_packets(path: Path, index: int, start: float) -> tuple[float | None, int | None]:
    """End time of the last packet of the video stream (no decoding) and the packet count."""
    info = _ffprobe(path, select_streams=str(index), show_entries="packet=pts_time,dts_time,duration_time")
    ends = []
    for p in info.get("packets", []):
        t = _float(p.get("pts_time"))
        t = _float(p.get("dts_time")) if t is None else t
        if t is not None:
            ends.append(t + (_float(p.get("duration_time")) or 0.0))
    if not ends:
        return None, None
    return max(ends) - start, len(info["packets"])


def _ffmpeg_reason(stderr: bytes | None) -> str:
    lines = [ln.strip() for ln in (stderr or b"").decode("utf-8", "replace").splitlines() if ln.strip()]
    return "; ".join(lines[-3:]) or "no error message"


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rate(text: Any) -> float | None:
    try:
        r = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return None
    return float(r) if r > 0 else None


# ------------------------------------------------------------------------------ audio


def extract_audio(path: str | os.PathLike, dest_wav: str | os.PathLike, sr: int = 16000, *,
                  probe: VideoProbe | None = None) -> Path | None:
    """Write the first audio stream as 16-bit mono WAV at ``sr`` Hz, atomically.

    Returns ``dest_wav``, or ``None`` when the video has no audio stream (a silent video is
    normal, not an error). An audio stream that does not decode is an ``AudioDecodeError``
    naming the file and ffmpeg's reason: ffmpeg's own tolerance applies (it skips a few bad
    packets and fails when most of them are bad), and a track that decodes to no samples at all
    is an error too. ``video_with_failing_audio.mp4`` (MoviePy's fixture) decodes completely with
    ffmpeg, so it gives a WAV. ``probe``: the file's ``probe_video``, when the caller has it
    (the pipeline probes each video once).
    """
    probe = probe or probe_video(path)
    if not probe.has_audio:
        return None
    dest = lake.as_path(dest_wav)
    local_dir = lake.local_path(dest, "ffmpeg").parent if lake.is_local(dest) else None
    if local_dir is not None:
        local_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp.wav", dir=local_dir)
    os.close(fd)
    tmp = Path(tmp)
    try:
        stream = ffmpeg.input(str(path)).output(str(tmp), map="0:a:0", vn=None, ac=1, ar=int(sr),
                                                acodec="pcm_s16le", f="wav")
        try:
            stream.overwrite_output().run(capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as exc:
            raise AudioDecodeError(path, f"audio ({probe.audio_codec}) does not decode: {_ffmpeg_reason(exc.stderr)}") from None
        if tmp.stat().st_size <= 44:  # a WAV header and no samples
            raise AudioDecodeError(path, f"audio ({probe.audio_codec}) decodes to no samples")
        lake.publish_file(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return lake.local_path(dest, "ffmpeg") if lake.is_local(dest) else dest
