"""Versions of what the pipeline built: one manifest per materialisation, lineage between them.

Every asset value the IO manager stores is a *manifest*: ``_manifests/{asset}/{id}.json``, never
overwritten (``{id}`` is the UTC time and a hash of the content), plus ``_manifests/{asset}.json``,
a copy of the latest one for readers that want "now". A manifest names what it wrote (a table
version, ``table_version``; a content-addressed file or run folder) and, in ``reads``, the
manifest id of every input it was built from. ``lineage`` follows ``reads`` down to the corpus,
so a model, a feature set or a report resolves to the exact table versions behind it, reading
only files inside ``_manifests``. Paths inside the lake are stored relative to it
(``lakepaths.to_lake``) and resolved against the lake they are read from, so a copied or moved
lake reads only itself (``upgrade`` rewrites a lake written before that).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any, Iterable, Mapping

from lcaffect_ml.contracts import lakepaths, naming

from . import lake

MANIFESTS = "_manifests"


class ManifestError(LookupError):
    """A manifest the lake does not have."""


def manifest_dir(root, asset: str):
    return lake.as_path(root) / MANIFESTS / asset


def latest_path(root, asset: str):
    return lake.as_path(root) / MANIFESTS / f"{asset}.json"


def _encode(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


def write_manifest(root, asset: str, value: Mapping[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """Store ``value`` as a new manifest of ``asset`` (and as its latest); returns it with its
    ``manifest_id``. The history file is written first: a crash never leaves a latest without it."""
    body = {k: v for k, v in value.items() if k != "manifest_id"}
    kept = lakepaths.to_lake(root, body)  # paths inside the lake stored relative to it
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    manifest_id = f"{stamp}-{hashlib.sha256(_encode(kept)).hexdigest()[:12]}"
    data = _encode({**kept, "manifest_id": manifest_id})
    lake.atomic_write_bytes(manifest_dir(root, asset) / f"{manifest_id}.json", data)
    lake.atomic_write_bytes(latest_path(root, asset), data)
    return {**body, "manifest_id": manifest_id}


def _path(root, asset: str, manifest_id: str | None, source: str):
    """A manifest's file, which must be in ``_manifests`` (an asset name read from a manifest's
    ``reads`` is lake content: ``../x`` is refused, naming ``source``)."""
    name = f"{asset}.json" if manifest_id is None else f"{asset}/{naming.safe_name(manifest_id)}.json"
    return lake.as_path(lakepaths.resolve(root, name, source, base=MANIFESTS))


def _read(root, path) -> dict[str, Any]:
    return lakepaths.from_lake(root, json.loads(path.read_text()), str(path))


def latest(root, asset: str) -> dict[str, Any] | None:
    path = _path(root, asset, None, "the asset name")
    return _read(root, path) if path.exists() else None


def load(root, asset: str, manifest_id: str | None = None, source: str = "the asset name") -> dict[str, Any]:
    """One manifest of ``asset`` (the latest when ``manifest_id`` is None); ``source``: where the
    asset's name was read (a manifest's ``reads``), named when it points outside ``_manifests``."""
    path = _path(root, asset, manifest_id, source)
    if not path.exists():
        raise ManifestError(f"{path}: {asset} has no manifest {manifest_id or '(none materialised yet)'} in this lake")
    return _read(root, path)


def upgrade(root, old_root=None) -> int:
    """Rewrite a lake written before paths were stored relative (``versions_cli upgrade``): in every
    manifest and stage state file, the absolute paths under ``old_root`` (where the lake was
    written; by default where it is) become relative to the lake. Returns the files rewritten."""
    base = lake.as_path(root)
    changed = 0
    for folder in (base / MANIFESTS, base / "_state"):
        for path in (folder.rglob("*.json") if folder.exists() else []):
            stored = json.loads(path.read_text())
            if not isinstance(stored, dict) or lakepaths.POINTERS in stored:
                continue
            kept = lakepaths.to_lake(old_root or root, stored)
            if kept != stored:
                lake.atomic_write_bytes(path, _encode(kept))
                changed += 1
    return changed


def manifest_ids(root, asset: str) -> list[str]:
    """Every manifest id of ``asset``, oldest first."""
    folder = manifest_dir(root, asset)
    return sorted(p.name.removesuffix(".json") for p in folder.glob("*.json")) if folder.exists() else []


def assets(root) -> list[str]:
    folder = lake.as_path(root) / MANIFESTS
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def reads(upstreams: Mapping[str, Any] | None) -> dict[str, str]:
    """``{upstream asset: manifest id}`` of the manifests an asset was built from."""
    return {name: value["manifest_id"] for name, value in (upstreams or {}).items()
            if isinstance(value, Mapping) and value.get("manifest_id")}


# ----------------------------------------------------------------------------- lineage


def lineage(root, asset: str, manifest_id: str | None = None, cache: dict | None = None) -> list[dict[str, Any]]:
    """The manifests behind one, breadth first: ``{asset, manifest_id, depth, table_version,
    reads}`` for it and every manifest its ``reads`` reach (each once, each read once; ``cache``
    shares the manifests read between calls)."""
    return lineage_of(root, asset, load(root, asset, manifest_id), cache)


def lineage_of(root, asset: str, start: Mapping[str, Any], cache: dict | None = None) -> list[dict[str, Any]]:
    """``lineage`` of a manifest already read (``start``)."""
    cache = {} if cache is None else cache
    rows, seen = [], set()
    frontier = [(asset, start, 0)]
    while frontier:
        name, manifest, depth = frontier.pop(0)
        rows.append({"asset": name, "manifest_id": manifest.get("manifest_id"), "depth": depth,
                     "table_version": manifest.get("table_version") or {}, "reads": manifest.get("reads") or {},
                     **({"missing": True} if manifest.get("missing") else {})})
        for up, up_id in sorted((manifest.get("reads") or {}).items()):
            if (up, up_id) in seen:
                continue
            seen.add((up, up_id))
            if (up, up_id) not in cache:
                try:  # only what lineage needs is kept: manifests hold every video's results
                    found = load(root, up, up_id, source=f"{MANIFESTS}/{name}/{manifest.get('manifest_id')}.json (reads)")
                    cache[(up, up_id)] = {k: found.get(k) for k in ("manifest_id", "reads", "table_version")}
                except ManifestError:
                    cache[(up, up_id)] = {"manifest_id": up_id, "missing": True}
            frontier.append((up, cache[(up, up_id)], depth + 1))
    return rows


def table_versions(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[int]]:
    """``{table: [versions]}`` that a lineage reaches (a table read at two versions lists both)."""
    out: dict[str, set[int]] = {}
    for row in rows:
        for table, version in (row.get("table_version") or {}).items():
            if version is not None:
                out.setdefault(table, set()).add(int(version))
    return {t: sorted(v) for t, v in sorted(out.items())}


def lineage_markdown(root, manifest: Mapping[str, Any], asset: str | None = None) -> str:
    """What the UI shows: the inputs behind a materialisation, down to the corpus versions."""
    rows = lineage_of(root, asset or "(this)", {**manifest, "manifest_id": "(this run)"})
    lines = ["| asset | manifest | table versions |", "|---|---|---|"]
    for r in rows:
        tv = ", ".join(f"{t} v{v}" for t, v in sorted(r["table_version"].items())) or ""
        lines.append(f"| {'→ ' * r['depth']}{r['asset']} | {r['manifest_id']}{' (missing)' if r.get('missing') else ''} | {tv} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- reading as of a version

# the table each asset writes, where the names differ (every other table is written by its namesake)
ASSET_TABLES = {"video_catalogue": "catalogue"}


def parse_as_of(text: str | None) -> dict[str, int | str]:
    """``RunScope.as_of_json``: a table's version (``{"clean_comments": 3}``) or an asset's manifest
    id (``{"v2lc_encoder": "20261202T…-ab12…"}``) that this run's assets read instead of the latest."""
    from .json_options import json_object
    from .tables import TABLES

    value = json_object(text, "scope.as_of_json")
    for key, v in value.items():
        if key in TABLES:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"scope.as_of_json: {key} is a table: its version is a whole number >= 0, not {v!r}")
        elif key in ASSET_TABLES:
            raise ValueError(f"scope.as_of_json: {key} writes the table {ASSET_TABLES[key]!r}: pin that by version")
        elif not isinstance(v, str) or not re.fullmatch(r"[0-9]{8}T[0-9]{12}Z-[0-9a-f]{12}", v):
            raise ValueError(f"scope.as_of_json: {key!r} is not a table ({', '.join(sorted(TABLES))}); an asset is "
                             f"pinned by a manifest id (versions_cli lineage shows them), not {v!r}")
    return dict(value)


def pinned_input(root, asset: str, latest_manifest: dict[str, Any], pins: Mapping[str, int | str]) -> dict[str, Any]:
    """What a run reads of ``asset``: its latest manifest, or the pinned table version or manifest."""
    table = ASSET_TABLES.get(asset, asset)
    if isinstance(pins.get(table), int) and not isinstance(pins.get(table), bool):
        return as_of(root, asset, latest_manifest, pins[table])
    if isinstance(pins.get(asset), str):
        return {**load(root, asset, pins[asset]), "as_of": pins[asset]}
    return latest_manifest


def manifest_for_version(root, asset: str, table: str, version: int) -> dict[str, Any] | None:
    """The newest manifest of ``asset`` that recorded writing ``table`` at ``version``."""
    for manifest_id in reversed(manifest_ids(root, asset)):
        manifest = load(root, asset, manifest_id)
        if (manifest.get("table_version") or {}).get(table) == version:
            return manifest
    return None


def as_of(root, asset: str, manifest: dict[str, Any], version: int) -> dict[str, Any]:
    """The upstream manifest a stage reads when its table is pinned to ``version``: the one that
    wrote that version; per-video results follow the table itself (the truth, e.g. after a
    rollback), so every video reads exactly the file that version holds."""
    from . import tables

    table = ASSET_TABLES.get(asset, asset)
    found = manifest_for_version(root, asset, table, version) or {"manifest_id": None, "results": {}}
    if not tables.TABLES[table][1]:
        tables.files(root, table, version)  # the version exists and is readable
        return {**manifest, **found, "table_version": {table: version}, "as_of": version}
    hashes = tables.digests(root, asset, version)
    by_key = {tables.video_key(vid): (vid, r) for vid, r in {**manifest.get("results", {}), **found.get("results", {})}.items()}
    results = {}
    for key, digest in hashes.items():
        vid, r = by_key.get(key, (None, {}))
        if vid is None:
            continue  # a video the catalogue no longer has
        results[vid] = {**r, "video_id": vid, "output_hash": digest, "status": "skipped", "reason": None}
    return {**found, "results": results, "table_version": {asset: version}, "as_of": version}
