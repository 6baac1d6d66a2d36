"""One video's source folder: the staged fetch, the manifest written last, ``FetchResult``
(the package docstring describes the layout)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lcaffect_ml.contracts.hashing import sha256_bytes
from lcaffect_pipeline.lake import as_path, atomic_write_bytes, combine_hashes, is_local
from lcaffect_pipeline.schema import PLATFORMS
from lcaffect_pipeline.sources.http import FetchError, mask_obj, mask_text, masked_logger, utc_now_iso

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
