"""``fetch_comments``: pick the fetcher for a source (Bilibili, yt-dlp, a local path) and run it,
never raising for one bad video; ``SourceConfig``, its settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from lcaffect_ml.options import check_bounds, opt

from lcaffect_pipeline import lake
from lcaffect_pipeline.schema import PLATFORMS
from lcaffect_pipeline.sources.http import DEFAULT_MAX_BYTES, DEFAULT_USER_AGENT, FetchError, PoliteSession, mask_text, masked_logger

from .folder import DEFAULT_TRACKS, FetchResult

log = masked_logger(__name__)

@dataclass
class SourceConfig:
    """Settings shared by all fetchers (the Dagster resource's fields map onto these)."""

    api_base: str = "https://api.bilibili.com"
    comment_base: str = "https://comment.bilibili.com"
    min_interval_s: float = opt(1.0, "seconds between requests to one host", low=0)
    timeout_s: float = opt(20.0, "seconds per read", above=0)
    attempts: int = opt(6, "attempts per request before the video is reported failed", low=1, high=100)
    backoff_base_s: float = opt(1.0, "base of the exponential back-off", low=0)
    backoff_max_s: float = opt(60.0, "longest back-off", low=0)
    retry_after_max_s: float = opt(120.0, "longest Retry-After honoured", low=0)
    user_agent: str = DEFAULT_USER_AGENT
    cookie_file: str | None = None
    refresh: bool = False
    tracks: tuple[str, ...] = DEFAULT_TRACKS
    max_response_bytes: int = opt(DEFAULT_MAX_BYTES, "per reply, on the wire and after decompression", low=1)
    deadline_s: float = opt(120.0, "per request attempt, whole answer (timeout_s is per read)", above=0)
    max_segments: int = opt(1000, "Bilibili 6-minute segments per video (100 hours)", low=1)
    max_redirects: int = opt(5, "redirects followed per request", low=0, high=50)
    redirect_hosts: tuple[str, ...] = ()  # hosts a redirect may lead to besides the one asked
    rate_limit_dir: str | None = None  # lock files pacing each host; default: a temp folder

    def __post_init__(self) -> None:
        check_bounds(self, "crawler: ")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "SourceConfig":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown source config keys {unknown}; known: {sorted(known)}")
        for key in ("tracks", "redirect_hosts"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def session(self) -> PoliteSession:
        """One session per batch: its spacing then holds across videos."""
        return PoliteSession(
            min_interval_s=self.min_interval_s,
            timeout_s=self.timeout_s,
            attempts=self.attempts,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            retry_after_max_s=self.retry_after_max_s,
            user_agent=self.user_agent,
            cookie_file=self.cookie_file,
            max_bytes=self.max_response_bytes,
            deadline_s=self.deadline_s,
            max_redirects=self.max_redirects,
            redirect_hosts=self.redirect_hosts,
            slots_dir=self.rate_limit_dir,
        )


def _is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def choose_fetcher(platform: str, source: str) -> str:
    """``"bilibili"``, ``"ytdlp"`` or ``"local"`` for a catalogue row; ValueError if none fits."""
    from lcaffect_pipeline.sources.bilibili import parse_bilibili_ref

    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r} for {mask_text(source)!r}; known: {PLATFORMS}")
    if platform == "bilibili":
        try:
            parse_bilibili_ref(source)
            return "bilibili"
        except ValueError:
            pass  # a bangumi URL or a local file: handled below
    if _is_url(source):
        return "ytdlp"
    if lake.source_path(source).exists():  # a local file, or one in a file store (s3://…)
        return "local"
    raise ValueError(
        f"cannot tell how to fetch {mask_text(source)!r} for platform {platform}: "
        "not a Bilibili id or URL, not an http(s) URL, not an existing path"
    )


def fetch_comments(
    platform: str,
    source: str,
    dest_dir: str | Path,
    *,
    config: SourceConfig | Mapping[str, Any] | None = None,
    refresh: bool | None = None,
    session: PoliteSession | None = None,
) -> FetchResult:
    """Fetch one video's raw comment files into ``dest_dir``; failures come back as results.

    Pass one ``session`` (``config.session()``) for a whole batch so that the per-host spacing
    holds across videos. ``refresh`` overrides ``config.refresh``.
    """
    cfg = config if isinstance(config, SourceConfig) else SourceConfig.from_mapping(config)
    refresh = cfg.refresh if refresh is None else refresh
    try:
        kind = choose_fetcher(platform, source)
        if kind == "bilibili":
            from lcaffect_pipeline.sources.bilibili import BilibiliClient

            client = BilibiliClient(cfg.api_base, cfg.comment_base, session=session or cfg.session(), max_segments=cfg.max_segments)
            return client.fetch(source, dest_dir, refresh=refresh)
        if kind == "ytdlp":
            from lcaffect_pipeline.sources.ytdlp_comments import fetch_ytdlp_comments

            return fetch_ytdlp_comments(
                source,
                dest_dir,
                tracks=cfg.tracks,
                cookiefile=cfg.cookie_file,
                refresh=refresh,
                retries=cfg.attempts,
                socket_timeout=cfg.timeout_s,
                sleep_interval_s=cfg.min_interval_s,
                platform=platform,
            )
        from lcaffect_pipeline.sources.local import fetch_local

        return fetch_local(source, dest_dir, refresh=refresh, platform=platform)
    except (FetchError, ValueError, OSError) as exc:
        error = mask_text(f"{type(exc).__name__}: {exc}")
        log.warning("%s %s failed: %s", platform, mask_text(source), error)
        return FetchResult(
            video_id=mask_text(source), files=[], changed=False, status="failed",
            error=error, folder=str(dest_dir),
        )

