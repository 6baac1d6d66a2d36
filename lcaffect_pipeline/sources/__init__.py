"""Comment sources: fetch one video's raw live-comment files into the lake.

Each video gets one folder that the caller chooses (``{lake}/sources/{platform}/{safe_name(id)}``):

    {folder}/<raw files, named as the platform or yt-dlp names them>
    {folder}/manifest.json    written last: files with sha256 and size, fetch time, status,
                              video metadata (never cookies)

Work in progress is staged in a hidden sibling folder ``.{name}.staging`` (with a ``partial``
manifest saying what is missing and why), so a failed or interrupted fetch leaves no file under a
final name and no ``complete`` manifest; the next run reuses what was staged and fetches only the
rest. Web fetchers commit only what parses (``commit(validate=True)``): a stored reply the
parser would reject is dropped and the fetch fails, so that the next run fetches it again. A
fetch that got only a stand-in for the data (Bilibili's capped XML sample after a passing
failure) is committed with status ``incomplete``: readable now, fetched again by the next run.
A web source's folder whose manifest says ``complete`` is skipped unless ``refresh=True`` (a
local source is compared with its files on every run, see ``local``); a refresh
fetches everything into staging and replaces only the files whose content changed, and
``FetchResult.changed`` says whether anything did, so data versions stay put when a re-crawl
brings nothing new. Readers should take the file list from the manifest.

``fetch_comments(platform, source, dest_dir, config=...)`` picks the fetcher: a Bilibili BV/av id
or video URL goes to ``bilibili.BilibiliClient``, another http(s) URL to yt-dlp
(``ytdlp_comments``), an existing path to ``local``. It never raises for one bad video: the
error comes back in the ``FetchResult`` so that a batch goes on.

The fetchers are imported lazily (yt-dlp alone takes a second to import).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from lcaffect_ml.contracts.hashing import sha256_bytes
from lcaffect_pipeline.lake import as_path, atomic_write_bytes, combine_hashes, is_local
from lcaffect_pipeline.schema import PLATFORMS
from lcaffect_pipeline.sources.http import (
    DEFAULT_MAX_BYTES,
    DEFAULT_USER_AGENT,
    FetchError,
    PoliteSession,
    mask_obj,
    mask_text,
    masked_logger,
    utc_now_iso,
)

log = masked_logger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
DEFAULT_TRACKS = ("danmaku", "comments", "live_chat")
STATUSES = ("complete", "skipped", "failed")


@dataclass
class FetchResult:
    """What one fetch did. ``status``: complete (fetched now), skipped (already complete), failed."""

    video_id: str
    files: list[str]
    changed: bool
    status: str
    metadata: dict = field(default_factory=dict)
    error: str | None = None
    folder: str | None = None
    content_hash: str | None = None  # combined sha256 of the files: a data version

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class SourceFolder:
    """One video's raw-comment folder in the lake, its manifest and its staging area."""

    def __init__(self, dest_dir: str | Path):
        self.path = as_path(dest_dir)
        self.staging = self.path.parent / f".{self.path.name}.staging"

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def _read_json(path) -> dict | None:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            log.warning("%s is unreadable (%s); treating the folder as not fetched", path, exc)
            return None

    def manifest(self) -> dict | None:
        return self._read_json(self.path / MANIFEST)

    def completed(self) -> FetchResult | None:
        """A ``skipped`` result if the manifest says complete and every listed file is there."""
        man = self.manifest()
        if not man or man.get("status") != "complete":
            return None
        files = man.get("files") or {}
        missing = [n for n in files if not (self.path / n).exists()]
        if missing:
            log.warning("%s: manifest lists missing files %s; fetching again", self.path, missing)
            return None
        return self._result(man, status="skipped", changed=False)

    def _result(self, man: dict, *, status: str, changed: bool) -> FetchResult:
        return FetchResult(
            video_id=man.get("video_id", ""),
            files=[str(self.path / n) for n in man.get("files", {})],
            changed=changed,
            status=status,
            metadata=man.get("metadata", {}),
            folder=str(self.path),
            content_hash=man.get("content_hash"),
        )

    # -- staging -------------------------------------------------------------------------------
    def begin(self, *, reuse: bool) -> None:
        """Prepare staging; ``reuse=False`` (a refresh, or an all-or-nothing fetcher) empties it."""
        if not reuse:
            self.discard_staging()

    def is_staged(self, name: str) -> bool:
        return (self.staging / _check_name(name)).exists()

    def stage(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.staging / _check_name(name), data)

    def discard_staging(self) -> None:
        if is_local(self.staging):
            shutil.rmtree(str(self.staging), ignore_errors=True)
        elif self.staging.exists():
            self.staging.fs.rm(self.staging.path, recursive=True)

    def record_failure(self, *, platform: str, video_id: str, source: str, expected: list[str], error: str, metadata: dict) -> None:
        """Write a ``partial`` manifest into staging: what is there, what is missing, and why."""
        staged = [n for n in expected if self.is_staged(n)]
        man = {
            "manifest_version": MANIFEST_VERSION,
            "status": "partial",
            "platform": platform,
            "video_id": video_id,
            "source": mask_text(source),
            "updated_at": utc_now_iso(),
            "staged": staged,
            "missing": [n for n in expected if n not in staged],
            "error": mask_text(error),
            "metadata": mask_obj(metadata),
        }
        atomic_write_bytes(self.staging / MANIFEST, _dump(man))

    # -- committing ----------------------------------------------------------------------------
    def commit(
        self, names: list[str], *, platform: str, video_id: str, source: str, metadata: dict,
        incomplete: str | None = None, validate: bool = False,
    ) -> FetchResult:
        """Move staged ``names`` into the folder (only those whose content changed), then the
        manifest, then drop files the manifest no longer lists and the staging folder.

        ``validate``: first parse the staged files as the pipeline will; a file that does not
        parse is dropped from staging and FetchError raised (a partial manifest says why).
        ``incomplete``: why this is not all of the data; the manifest says ``incomplete`` and
        the next run fetches again.
        """
        if validate:
            self._check_parses(names, platform=platform, video_id=video_id, source=source, metadata=metadata)
        old = self.manifest() or {}
        old_files = old.get("files", {}) if old.get("status") in ("complete", "incomplete") else {}
        entries: dict[str, dict] = {}
        changed = set(old_files) != set(names)
        for name in names:
            data = (self.staging / _check_name(name)).read_bytes()
            digest = sha256_bytes(data)
            final = self.path / name
            same = old_files.get(name, {}).get("sha256") == digest
            if not same:
                changed = True
            if not same or not final.exists():
                atomic_write_bytes(final, data)
            entries[name] = {"sha256": digest, "bytes": len(data)}
        now = utc_now_iso()
        if incomplete:
            metadata = {**metadata, "incomplete": incomplete}
        man = {
            "manifest_version": MANIFEST_VERSION,
            "status": "incomplete" if incomplete else "complete",
            "platform": platform,
            "video_id": video_id,
            "source": mask_text(source),
            # fetched_at moves only when the content does: a refresh that brings nothing new
            # leaves the data version (content_hash) and this date alone.
            "fetched_at": now if changed or "fetched_at" not in old else old["fetched_at"],
            "checked_at": now,
            "content_hash": combine_hashes({n: e["sha256"] for n, e in entries.items()}),
            "files": entries,
            "metadata": mask_obj(metadata),
        }
        atomic_write_bytes(self.path / MANIFEST, _dump(man))
        self._drop_unlisted(set(names))
        self.discard_staging()
        return self._result(man, status="complete", changed=changed)

    def _check_parses(self, names: list[str], *, platform: str, video_id: str, source: str, metadata: dict) -> None:
        from lcaffect_pipeline.formats import CommentFormatError, read_comments
        from lcaffect_pipeline.schema import PLATFORMS

        if not is_local(self.staging) or not names:
            return  # the readers take local paths; remote lakes are checked when parsed
        try:
            read_comments([str(self.staging / n) for n in names], platform=platform if platform in PLATFORMS else None, video_id=video_id)
        except CommentFormatError as exc:
            bad = Path(exc.path).name
            if bad in names:
                (self.staging / bad).unlink(missing_ok=True)
            reason = f"{bad} was fetched but does not parse ({exc.reason}); not kept, the next run fetches it again"
            self.record_failure(platform=platform, video_id=video_id, source=source, expected=names, error=reason, metadata=metadata)
            raise FetchError(mask_text(source), reason) from None

    def _drop_unlisted(self, keep: set[str]) -> None:
        for child in self.path.iterdir():
            if child.name not in keep and child.name != MANIFEST and child.is_file():
                child.unlink()


def _check_name(name: str) -> str:
    """A fetched file's name must be a plain, visible name inside the folder."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name == MANIFEST:
        raise ValueError(f"{name!r} cannot be a raw comment file name")
    return name


def _dump(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")


# -- configuration and dispatch --------------------------------------------------------------
@dataclass
class SourceConfig:
    """Settings shared by all fetchers (the Dagster resource's fields map onto these)."""

    api_base: str = "https://api.bilibili.com"
    comment_base: str = "https://comment.bilibili.com"
    min_interval_s: float = 1.0
    timeout_s: float = 30.0
    attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 120.0
    user_agent: str = DEFAULT_USER_AGENT
    cookie_file: str | None = None
    refresh: bool = False
    tracks: tuple[str, ...] = DEFAULT_TRACKS
    max_response_bytes: int = DEFAULT_MAX_BYTES  # per reply, on the wire and after decompression
    deadline_s: float = 120.0  # per request attempt, whole answer (timeout_s is per read)
    max_segments: int = 1000  # Bilibili 6-minute segments per video (100 hours)
    max_redirects: int = 5
    redirect_hosts: tuple[str, ...] = ()  # hosts a redirect may lead to besides the one asked
    rate_limit_dir: str | None = None  # lock files pacing each host; default: a temp folder

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
    path = Path(source[len("file://") :] if source.startswith("file://") else source).expanduser()
    if path.exists():
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


__all__ = [
    "DEFAULT_TRACKS",
    "FetchError",
    "FetchResult",
    "MANIFEST",
    "SourceConfig",
    "SourceFolder",
    "choose_fetcher",
    "fetch_comments",
]
