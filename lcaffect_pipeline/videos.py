"""Videos: download (yt-dlp), probe (ffprobe) and audio extraction (ffmpeg).

Every function names the video and the reason when it fails, with a typed error
(``VideoDownloadError``, ``VideoDecodeError``, ``AudioDecodeError``), so that a batch over many
videos records the reason and goes on with the others.

Files appear under their final name only when complete: a download lands in a hidden
temporary folder next to its destination and is renamed into place; audio is written to a
hidden temporary name and renamed.

Each video in the lake has a ``{name}.info.json`` sidecar naming its file and a hash of where it
came from (the URL or the local path), so that a catalogue entry that now points elsewhere is
fetched again instead of keeping the old file.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import ffmpeg

from . import lake

log = logging.getLogger(__name__)

# Fields of yt-dlp's info dict worth keeping next to the file (the rest is large and volatile).
INFO_KEYS = (
    "id", "title", "ext", "duration", "width", "height", "fps", "vcodec", "acodec",
    "format_id", "webpage_url", "original_url", "extractor", "extractor_key", "filesize", "uploader",
)
_EXT = re.compile(r"[A-Za-z0-9]{1,8}")
_INFO_SUFFIX = ".info.json"


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
class VideoFile:
    path: Path
    video_id: str
    info: dict[str, Any] = field(default_factory=dict)
    source_key: str | None = None  # source_key() of the URL or path it came from, where known


def source_key(source: str | os.PathLike) -> str:
    """A short hash of where a video came from: sidecars compare it without storing the URL
    (a URL may carry a token)."""
    return hashlib.sha256(str(source).encode("utf-8", "surrogatepass")).hexdigest()[:32]


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


# ------------------------------------------------------------------------------ download


def video_format(max_height: int) -> str:
    """yt-dlp format selector: best at or under ``max_height``, else the smallest there is.

    ``<=?`` lets formats of unknown height pass (a direct file URL or an HTML ``<video>`` has
    no height until it is downloaded); ``wv*+ba/w`` is the fallback when every format is
    taller than the cap, so that the cap bounds the download instead of being ignored.
    """
    h = int(max_height)
    return f"bv*[height<=?{h}]+ba/b[height<=?{h}]/wv*+ba/w"


def duration_filter(min_duration_s: float | None, max_duration_s: float | None) -> str | None:
    """A yt-dlp match-filter expression on duration; unknown durations pass (checked later)."""
    parts = []
    if min_duration_s is not None:
        parts.append(f"duration >=? {float(min_duration_s)}")
    if max_duration_s is not None:
        parts.append(f"duration <=? {float(max_duration_s)}")
    return " & ".join(parts) or None


def existing_video(dest_dir: str | os.PathLike, video_id: str) -> VideoFile | None:
    """The video already in ``dest_dir`` for ``video_id``, if any (no network)."""
    root = lake.under(dest_dir)
    stem = lake.safe_name(video_id)
    sidecar = root / f"{stem}{_INFO_SUFFIX}"
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
            path = root / meta["file"]
            if path.exists() and path.stat().st_size > 0:
                info = meta.get("info", {})
                # Sidecars written before source_sha256 existed still name yt-dlp's original_url.
                key = meta.get("source_sha256") or (source_key(info["original_url"]) if info.get("original_url") else None)
                return VideoFile(Path(str(path)), video_id, info, key)
        except (OSError, ValueError, KeyError):
            pass  # a damaged sidecar only costs a look at the files themselves
    if not root.exists():
        return None
    for path in _copies(root, stem):
        if path.stat().st_size > 0:
            return VideoFile(Path(str(path)), video_id, {})
    return None


def _copies(root, stem: str) -> list:
    """Every video file named ``{stem}.{ext}`` in ``root`` (not the sidecar, not other ids)."""
    return [p for p in sorted(root.glob(f"{stem}.*")) if _EXT.fullmatch(p.name[len(stem) + 1:])]


def _record(root, video_id: str, final, info: dict[str, Any], source: str | os.PathLike) -> VideoFile:
    """Write the sidecar for ``final`` and remove older copies of the video under another
    extension (a replaced ``.mkv`` must not shadow the new ``.mp4``)."""
    key = source_key(source)
    sidecar = {"video_id": video_id, "file": final.name, "source_sha256": key, "info": info}
    lake.atomic_write_bytes(root / f"{lake.safe_name(video_id)}{_INFO_SUFFIX}",
                            json.dumps(sidecar, ensure_ascii=False, indent=1).encode())
    for old in _copies(root, lake.safe_name(video_id)):
        if old.name != final.name:
            old.unlink()
    return VideoFile(Path(str(final)), video_id, info, key)


def copy_local_video(source: str | os.PathLike, dest_dir: str | os.PathLike, video_id: str) -> VideoFile:
    """Copy a local video file to ``dest_dir / f"{safe_name(video_id)}.{ext}"`` atomically."""
    source = Path(source)
    ext = source.suffix.lstrip(".").lower()
    root = lake.under(dest_dir)
    final = root / f"{lake.safe_name(video_id)}.{ext if _EXT.fullmatch(ext) else 'mp4'}"
    with lake.atomic_write(final) as out, open(source, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)
    return _record(root, video_id, final, {}, source.resolve())


def download_video(
    url: str,
    dest_dir: str | os.PathLike,
    video_id: str,
    *,
    max_height: int = 360,
    archive: str | os.PathLike | None = None,
    retries: int = 5,
    rate_limit: int | None = None,
    cookiefile: str | os.PathLike | None = None,
    max_duration_s: float | None = None,
    min_duration_s: float | None = None,
) -> VideoFile:
    """Download ``url`` to ``dest_dir / f"{safe_name(video_id)}.{ext}"`` through yt-dlp.

    A video already downloaded from this same ``url`` is returned as it is, without touching the
    network; one that came from elsewhere (the catalogue's URL changed) is replaced. The file is
    downloaded into a hidden temporary folder and renamed into place, then a small
    ``{name}.info.json`` sidecar keeps the useful part of yt-dlp's info dict. ``rate_limit`` is
    in bytes per second. ``cookiefile`` (Netscape format) is copied to a private temporary file
    so that yt-dlp, which writes cookies back on exit, never modifies the secret; cookie values
    are removed from every log line and error message. Durations outside
    ``[min_duration_s, max_duration_s]`` are rejected before download where the site reports a
    duration and after download (with ffprobe) where it does not.
    """
    found = existing_video(dest_dir, video_id)
    if found is not None and found.source_key == source_key(url):
        log.info("video %s already present at %s", video_id, found.path)
        return found
    if found is not None:
        log.info("video %s: %s came from another source; downloading the catalogue's URL", video_id, found.path)
        archive = None  # the archive may list the new URL's id already: this download is wanted
    root = lake.under(dest_dir)
    secrets = _cookie_values(cookiefile, video_id) if cookiefile else []
    redact = _redactor(secrets)
    local_root = Path(str(root)) if lake.is_local(root) else None
    if local_root is not None:
        local_root.mkdir(parents=True, exist_ok=True)
    # The temporary folder sits next to the destination so that the final rename is atomic.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=local_root) as tmp:
        tmp = Path(tmp)
        opts = _ydl_options(tmp, max_height, archive, retries, rate_limit, redact)
        if cookiefile:
            opts["cookiefile"] = _private_copy(Path(cookiefile))
        rejected: list[str] = []
        flt = duration_filter(min_duration_s, max_duration_s)
        if flt:
            opts["match_filter"] = _recording_filter(flt, rejected)
        try:
            info = _run_ytdlp(url, opts, video_id, redact)
        finally:
            if cookiefile:
                Path(opts["cookiefile"]).unlink(missing_ok=True)
        if rejected:
            raise VideoDownloadError(video_id, redact(rejected[0]))
        downloaded = _downloaded_file(tmp, info)
        if downloaded is None:
            reason = "yt-dlp produced no file"
            if archive:
                reason += " (the video may already be listed in the download archive)"
            raise VideoDownloadError(video_id, reason)
        if info.get("duration") is None and (min_duration_s is not None or max_duration_s is not None):
            _check_duration(downloaded, video_id, min_duration_s, max_duration_s)
        ext = downloaded.suffix.lstrip(".")
        ext = ext if _EXT.fullmatch(ext) else "video"
        final = root / f"{lake.safe_name(video_id)}.{ext}"
        _publish(downloaded, final)
    kept = {k: info[k] for k in INFO_KEYS if info.get(k) is not None}
    kept = json.loads(redact(json.dumps(kept, ensure_ascii=False, default=str)))
    log.info("downloaded video %s to %s", video_id, final)
    return _record(root, video_id, final, kept, url)


def _ydl_options(tmp: Path, max_height: int, archive, retries: int, rate_limit, redact) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "format": video_format(max_height),
        "outtmpl": {"default": str(tmp / "video.%(ext)s")},
        "noplaylist": True,
        "playlist_items": "1",  # a page with several <video> tags: take the first
        "retries": retries,
        "fragment_retries": retries,
        "extractor_retries": retries,
        "socket_timeout": 30,
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "logger": _YdlLogger(redact),
        "color": {"stderr": "never", "stdout": "never"},
        "merge_output_format": "mp4/mkv",
        "overwrites": True,
        "cachedir": False,
    }
    if archive is not None:
        opts["download_archive"] = str(archive)
    if rate_limit:
        opts["ratelimit"] = int(rate_limit)
    return opts


def _run_ytdlp(url: str, opts: dict[str, Any], video_id: str, redact) -> dict[str, Any]:
    import yt_dlp  # heavy import: only when a download actually happens

    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=True)
            info = ydl.sanitize_info(info) if info else {}
    except yt_dlp.utils.YoutubeDLError as exc:
        raise VideoDownloadError(video_id, redact(_strip_ansi(str(exc)))) from None
    except OSError as exc:
        raise VideoDownloadError(video_id, redact(f"{type(exc).__name__}: {exc}")) from None
    if info.get("_type") == "playlist":
        entries = [e for e in info.get("entries") or [] if e]
        info = entries[0] if entries else {}
    return info


def _recording_filter(expr: str, rejected: list[str]):
    """yt-dlp's duration match filter, remembering why a video was skipped (yt-dlp only logs it)."""
    from yt_dlp.utils import match_filter_func

    check = match_filter_func(expr)

    def _filter(info_dict, incomplete=False):
        reason = check(info_dict, incomplete)
        if reason:
            rejected.append(f"duration {info_dict.get('duration')} s outside the allowed range: {reason}")
        return reason

    return _filter


def _downloaded_file(tmp: Path, info: dict[str, Any]) -> Path | None:
    for item in info.get("requested_downloads") or []:
        fp = item.get("filepath")
        if fp and Path(fp).is_file() and Path(fp).stat().st_size > 0:
            return Path(fp)
    files = [p for p in tmp.iterdir() if p.is_file() and p.name.startswith("video.")
             and not p.name.endswith((".part", ".ytdl", ".temp")) and p.stat().st_size > 0]
    return max(files, key=lambda p: p.stat().st_size) if files else None


def _check_duration(path: Path, video_id: str, lo: float | None, hi: float | None) -> None:
    try:
        duration = probe_video(path).duration_s
    except VideoDecodeError as exc:
        raise VideoDownloadError(video_id, f"downloaded file is not a decodable video: {exc.reason}") from None
    if (lo is not None and duration < lo) or (hi is not None and duration > hi):
        raise VideoDownloadError(video_id, f"duration {duration:.1f} s outside the allowed range [{lo}, {hi}] s")


def _publish(src: Path, final) -> None:
    """Move a finished local file to its final place atomically (copy through atomic_write remotely)."""
    if lake.is_local(lake.as_path(final)):
        Path(str(final)).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, str(final))
        return
    with open(src, "rb") as fin, lake.atomic_write(final, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _cookie_values(cookiefile, video_id: str) -> list[str]:
    """Every cookie value in the file, read by yt-dlp's own parser (it keeps ``#HttpOnly_`` lines,
    which the standard library's MozillaCookieJar skips as comments)."""
    from yt_dlp.cookies import YoutubeDLCookieJar

    jar = YoutubeDLCookieJar()
    try:
        jar.load(str(cookiefile), ignore_discard=True, ignore_expires=True)
    except (OSError, http.cookiejar.LoadError) as exc:
        # Only the path and the kind of failure: the parser's message may quote file content.
        raise VideoDownloadError(video_id, f"cookie file {cookiefile} is unreadable ({type(exc).__name__})") from None
    return [c.value for c in jar if c.value and len(c.value) >= 3]


def _private_copy(cookiefile: Path) -> str:
    """A 0600 copy in the system temporary folder (never in the lake, which others may read)."""
    fd, path = tempfile.mkstemp(prefix="cookies-", suffix=".txt")
    with os.fdopen(fd, "wb") as out, open(cookiefile, "rb") as src:
        shutil.copyfileobj(src, out)
    os.chmod(path, 0o600)
    return path


def _redactor(secrets: Iterable[str]):
    secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(text: str) -> str:
        for s in secrets:
            text = text.replace(s, "***")
        return text

    return redact


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class _YdlLogger:
    """Routes yt-dlp's messages to ``logging``, with cookie values removed."""

    def __init__(self, redact):
        self.redact = redact

    def debug(self, msg: str) -> None:
        log.debug(self.redact(_strip_ansi(msg)))

    def info(self, msg: str) -> None:
        log.debug(self.redact(_strip_ansi(msg)))

    def warning(self, msg: str) -> None:
        log.warning(self.redact(_strip_ansi(msg)))

    def error(self, msg: str) -> None:
        log.error(self.redact(_strip_ansi(msg)))


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
    local_dir = Path(str(dest)).parent if lake.is_local(dest) else None
    if local_dir is not None:
        local_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(str(dest)).name}.", suffix=".tmp.wav", dir=local_dir)
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
        _publish(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return Path(str(dest))
