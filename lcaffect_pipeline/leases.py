"""Leases: what a running reader or stage needs from the lake, which retention keeps.

A lease is a small JSON file in the lake, ``_leases/{holder}.json`` (so it works on an object
store as on disk, and every machine that runs retention sees it): the table versions and the
data files its holder needs, and when it lapses. A run pinned to earlier versions leases them
when it reads them (``as_of_json``); a stage that finds its output file already in the lake
(the same rows as an earlier version: it skips writing it) leases that file until its collect
step commits it; ``versions_cli sql --as-of`` leases its versions while the query runs.
Retention keeps every version and file of a lease that has not lapsed. A lease lapses after
``ttl_s`` (a crashed holder never blocks retention for long); an unreadable lease file stops
retention rather than let it free what the lease may name.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Iterable, Iterator, Mapping

from lcaffect_ml.contracts import lakepaths, naming

from . import lake

LEASES = "_leases"
DEFAULT_TTL_S = 24 * 3600  # longer than any stage or pinned run the pipeline runs


class LeaseError(ValueError):
    """A lease file that cannot be read: retention stops rather than free what it may name."""


def lease_path(root, holder: str):
    return lake.as_path(root) / LEASES / naming.safe_name(holder, ".json")


def take(root, holder: str, *, versions: Mapping[str, Iterable[int]] | None = None, files: Iterable[str] = (),
         ttl_s: float = DEFAULT_TTL_S) -> None:
    """Lease ``versions`` ({table: [version]}) and ``files`` (paths in the lake) for ``ttl_s`` seconds."""
    body = {"holder": holder, "expires_ms": int((time.time() + ttl_s) * 1000),
            "versions": {t: sorted({int(v) for v in vs}) for t, vs in (versions or {}).items()},
            "files": [str(f) for f in files]}
    lake.atomic_write_bytes(lease_path(root, holder), json.dumps(lakepaths.to_lake(root, body), sort_keys=True).encode())


def release(root, holder: str) -> None:
    lease_path(root, holder).unlink(missing_ok=True)


@contextlib.contextmanager
def held(root, holder: str, **lease) -> Iterator[None]:
    """``take`` for the duration of a block."""
    take(root, holder, **lease)
    try:
        yield
    finally:
        release(root, holder)


def _leases(root) -> list[tuple[str, dict]]:
    folder = lake.as_path(root) / LEASES
    out = []
    for path in (sorted(folder.glob("*.json")) if folder.exists() else []):
        try:
            body = lakepaths.from_lake(root, json.loads(path.read_text()), str(path))
            if not isinstance(body.get("expires_ms"), int):
                raise ValueError("no expiry (expires_ms)")
        except FileNotFoundError:
            continue  # released while we listed
        except (OSError, ValueError, AttributeError) as exc:
            raise LeaseError(f"{path}: unreadable lease ({exc}); retention keeps what it may name: fix or "
                             "remove the file") from exc
        out.append((path.name, body))
    return out


def active(root, now_ms: int | None = None) -> tuple[dict[str, set[int]], set[str]]:
    """``({table: versions}, files)`` that leases which have not lapsed hold."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    versions: dict[str, set[int]] = {}
    files: set[str] = set()
    for _, body in _leases(root):
        if body["expires_ms"] < now_ms:
            continue
        for table, found in (body.get("versions") or {}).items():
            versions.setdefault(table, set()).update(int(v) for v in found)
        files.update(body.get("files") or [])
    return versions, files


def release_files(root, prefix: str, names: Iterable[str]) -> None:
    """Release the leases ``{prefix}{name}`` that exist (one listing, not one request per name)."""
    folder = lake.as_path(root) / LEASES
    wanted = {naming.safe_name(f"{prefix}{n}", ".json") for n in names}
    for path in (folder.glob("*.json") if folder.exists() else []):
        if path.name in wanted:
            path.unlink(missing_ok=True)
