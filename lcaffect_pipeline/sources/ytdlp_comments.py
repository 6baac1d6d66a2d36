"""Comment tracks through yt-dlp: Bilibili ``danmaku``, Niconico ``comments``, YouTube ``live_chat``.

yt-dlp exposes live comments as subtitle tracks, so fetching them is a subtitle download with
``skip_download``: the tracks land in a private temporary folder under yt-dlp's own names
(``{id}.{track}.{ext}``, e.g. ``BV1xx_p1.danmaku.xml``, ``sm9.comments.json``,
``dQw4w9WgXcQ.live_chat.json``) and are then staged and committed into the lake folder with the
same manifest, skip and refresh rules as every other source (see ``lcaffect_pipeline.sources``).

yt-dlp is used rather than our own clients because it follows each site's extractor changes
(signatures, APIs, live-chat continuation paging) that would be costly to track by hand.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from lcaffect_pipeline.sources.folder import DEFAULT_TRACKS, FetchResult, SourceFolder
from lcaffect_pipeline.sources.http import FetchError, load_cookie_file, mask_text, masked_logger

log = masked_logger(__name__)


class _MaskingLogger:
    """yt-dlp's ``logger`` hook: its messages go to our logger, secrets masked."""

    def __init__(self, secrets: set[str]):
        self._secrets = secrets

    def _mask(self, msg: str) -> str:
        return mask_text(msg, self._secrets)

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", self._mask(msg))

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", self._mask(msg))

    def warning(self, msg: str) -> None:
        log.warning("yt-dlp: %s", self._mask(msg))

    def error(self, msg: str) -> None:
        log.error("yt-dlp: %s", self._mask(msg))


def ydl_options(
    tmp: Path,
    tracks: Iterable[str],
    *,
    cookiefile: str | None,
    retries: int,
    socket_timeout: float,
    sleep_interval_s: float,
    logger: _MaskingLogger,
) -> dict[str, Any]:
    return {
        "skip_download": True,
        "writesubtitles": True,
        "subtitleslangs": list(tracks),
        "outtmpl": str(tmp / "%(id)s.%(ext)s"),
        "restrictfilenames": True,  # ASCII names: they become lake file names
        "noplaylist": True,
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "logger": logger,
        "retries": retries,
        "extractor_retries": retries,
        "socket_timeout": socket_timeout,
        "sleep_interval_requests": sleep_interval_s,
        "sleep_interval_subtitles": sleep_interval_s,
        "cookiefile": cookiefile,
    }


def fetch_ytdlp_comments(
    url: str,
    dest_dir: str | Path,
    *,
    tracks: Iterable[str] = DEFAULT_TRACKS,
    cookiefile: str | Path | None = None,
    refresh: bool = False,
    retries: int = 5,
    socket_timeout: float = 30.0,
    sleep_interval_s: float = 1.0,
    platform: str | None = None,
    ydl_opts: Mapping[str, Any] | None = None,
) -> FetchResult:
    """Download ``url``'s comment tracks into ``dest_dir``; raises FetchError if none came."""
    import yt_dlp  # heavy (about a second): only when a yt-dlp source is fetched

    folder = SourceFolder(dest_dir)
    if not refresh and (done := folder.completed()):
        return done
    tracks = tuple(tracks)
    folder.begin(reuse=False)  # yt-dlp fetches all tracks in one go: nothing to resume
    secrets: set[str] = set()
    shown = mask_text(url)
    with tempfile.TemporaryDirectory(prefix="lcaffect-ytdlp-") as tmpdir:
        tmp = Path(tmpdir)
        private_cookies = None
        if cookiefile is not None:
            # yt-dlp writes the jar back on exit: give it a private copy, never the user's file.
            secrets.update(c.value for c in load_cookie_file(cookiefile) if c.value and len(c.value) >= 4)
            private_cookies = str(tmp / "cookies.txt")
            shutil.copyfile(cookiefile, private_cookies)
        opts = ydl_options(
            tmp / "out", tracks, cookiefile=private_cookies, retries=retries,
            socket_timeout=socket_timeout, sleep_interval_s=sleep_interval_s, logger=_MaskingLogger(secrets),
        )
        opts.update(ydl_opts or {})
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = ydl.extract_info(url, download=True)
        except yt_dlp.utils.YoutubeDLError as exc:
            raise FetchError(shown, mask_text(str(exc), secrets)) from None
        info = yt_dlp.YoutubeDL.sanitize_info(info) if info else {}
        files = _downloaded_tracks(info)
        if not files:
            offered = sorted(_offered_tracks(info))
            raise FetchError(shown, f"no comment track among {list(tracks)}; the page offers {offered}")
        names = []
        for lang, path in files:
            folder.stage(path.name, path.read_bytes())
            names.append(path.name)
    metadata = {
        "id": info.get("id"),
        "title": info.get("title"),
        "duration": info.get("duration"),
        "timestamp": info.get("timestamp"),
        "upload_date": info.get("upload_date"),
        "extractor": info.get("extractor_key"),
        "webpage_url": mask_text(info.get("webpage_url") or url, secrets),
        "tracks": {lang: path.name for lang, path in files},
        "comment_source": "yt-dlp",
    }
    video_id = str(info.get("id") or shown)
    return folder.commit(
        names, platform=platform or _platform_of(info), video_id=video_id, source=url, metadata=metadata, validate=True
    )


def _entries(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [info, *(e for e in (info.get("entries") or []) if e)]


def _downloaded_tracks(info: Mapping[str, Any]) -> list[tuple[str, Path]]:
    """(track, file) for every track yt-dlp wrote, from ``requested_subtitles[*].filepath``."""
    found: dict[Path, str] = {}
    for entry in _entries(info):
        for lang, sub in (entry.get("requested_subtitles") or {}).items():
            path = Path(sub.get("filepath") or "")
            if sub.get("filepath") and path.is_file():
                found[path] = lang
    return [(lang, path) for path, lang in found.items()]


def _offered_tracks(info: Mapping[str, Any]) -> set[str]:
    return {lang for entry in _entries(info) for lang in (entry.get("subtitles") or {})}


def _platform_of(info: Mapping[str, Any]) -> str:
    extractor = str(info.get("extractor_key") or "").lower()
    for platform in ("bilibili", "niconico", "youtube", "acfun"):
        if platform in extractor:
            return platform
    return extractor or "unknown"


__all__ = ["fetch_ytdlp_comments", "ydl_options"]
