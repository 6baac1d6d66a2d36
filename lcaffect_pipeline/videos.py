"""Videos: download (yt-dlp) and local copies; probing (ffprobe) and audio extraction (ffmpeg)
are in ``probe``.

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
from pathlib import Path
from typing import Any, Iterable


from . import lake
from .probe import VideoDecodeError, VideoDownloadError, probe_video
from lcaffect_ml.contracts import naming

log = logging.getLogger(__name__)

# Fields of yt-dlp's info dict worth keeping next to the file (the rest is large and volatile).
INFO_KEYS = (
    "id", "title", "ext", "duration", "width", "height", "fps", "vcodec", "acodec",
    "format_id", "webpage_url", "original_url", "extractor", "extractor_key", "filesize", "uploader",
)
_EXT = re.compile(r"[A-Za-z0-9]{1,8}")
_INFO_SUFFIX = ".info.json"


@dataclass(frozen=True)
class VideoFile:
    path: Path  # a local path, or a universal_pathlib path where the lake is on an object store
    video_id: str
    info: dict[str, Any] = field(default_factory=dict)
    source_key: str | None = None  # source_key() of the URL or path it came from, where known


def source_key(source: str | os.PathLike) -> str:
    """A short hash of where a video came from: sidecars compare it without storing the URL
    (a URL may carry a token)."""
    return hashlib.sha256(str(source).encode("utf-8", "surrogatepass")).hexdigest()[:32]


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
    stem = naming.safe_name(video_id)
    sidecar = root / f"{stem}{_INFO_SUFFIX}"
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
            path = root / meta["file"]
            if path.exists() and path.stat().st_size > 0:
                # no source_sha256: where the file came from is unknown, so the next fetch downloads it again
                return VideoFile(_plain(path), video_id, meta.get("info", {}), meta.get("source_sha256"))
        except (OSError, ValueError, KeyError):
            pass  # a damaged sidecar only costs a look at the files themselves
    if not root.exists():
        return None
    for path in _copies(root, stem):
        if path.stat().st_size > 0:
            return VideoFile(_plain(path), video_id, {})
    return None


def _copies(root, stem: str) -> list:
    """Every video file named ``{stem}.{ext}`` in ``root`` (not the sidecar, not other ids)."""
    return [p for p in sorted(root.glob(f"{stem}.*")) if _EXT.fullmatch(p.name[len(stem) + 1:])]


def _record(root, video_id: str, final, info: dict[str, Any], source: str | os.PathLike) -> VideoFile:
    """Write the sidecar for ``final`` and remove older copies of the video under another
    extension (a replaced ``.mkv`` must not shadow the new ``.mp4``)."""
    key = source_key(source)
    sidecar = {"video_id": video_id, "file": final.name, "source_sha256": key, "info": info}
    lake.atomic_write_bytes(root / f"{naming.safe_name(video_id)}{_INFO_SUFFIX}",
                            json.dumps(sidecar, ensure_ascii=False, indent=1).encode())
    for old in _copies(root, naming.safe_name(video_id)):
        if old.name != final.name:
            old.unlink()
    return VideoFile(_plain(final), video_id, info, key)


def _plain(path):
    """A local lake's file as a plain ``Path`` (tools and callers expect one); others as they are."""
    return lake.local_path(path, "a video") if lake.is_local(lake.as_path(path)) else lake.as_path(path)


def copy_local_video(source: str | os.PathLike, dest_dir: str | os.PathLike, video_id: str) -> VideoFile:
    """Copy a local video file (or one in a file store: ``s3://…``) to
    ``dest_dir / f"{safe_name(video_id)}.{ext}"`` atomically."""
    source = lake.source_path(source)
    ext = source.suffix.lstrip(".").lower()
    root = lake.under(dest_dir)
    final = root / f"{naming.safe_name(video_id)}.{ext if _EXT.fullmatch(ext) else 'mp4'}"
    with lake.atomic_write(final) as out, source.open("rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)
    return _record(root, video_id, final, {}, source.resolve() if lake.is_local(source) else source)


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
    local_root = lake.local_path(root, "yt-dlp") if lake.is_local(root) else None
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
        final = root / f"{naming.safe_name(video_id)}.{ext}"
        lake.publish_file(downloaded, final)
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
