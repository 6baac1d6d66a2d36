"""Retention and rollback of the versioned lake.

Retention deletes the data files of table versions that are past the configured count and age
(past the newest ``keep_last`` and older than ``max_age_days``; either alone when only one is set),
unless something kept was built from them: a kept manifest is any manifest of a model, feature
set, fusion run or report (every asset but the data-side ones in ``DATA_ASSETS``), and every
table version its lineage reaches is referenced. The current version is always kept, and so is every version and file a lease names
(``lcaffect_pipeline.leases``: a pinned reader, a stage between writing and committing). A freed
version is recorded (``tables.mark_expired``) so that time travel to it says so instead of
failing on a missing file. Shard folders go with the segments versions that name them. Every path
retention deletes was read from the lake (Delta log actions, segments rows) and resolved by
``lcaffect_ml.contracts.lakepaths.resolve``: nothing outside the lake is ever touched.

Rollback makes an earlier version of a table the current one (``DeltaTable.restore``: a new
version, nothing deleted), writes a manifest for the asset that owns the table so the next run
reads the restored files, and forgets the stage's per-video state so that the next run recomputes
those videos rather than re-committing the files they had before the rollback.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from lcaffect_ml.contracts import lakepaths

from . import lake, leases, tables, versions

# Assets whose manifests describe data (tables, media, shards); every other asset's manifests are
# models, features, fusion runs and reports, which retention keeps with everything behind them.
DATA_ASSETS = ("video_catalogue", "raw_comments", "clean_comments", "corpus_catalog", "videos", "video_probes",
               "audio", "segments", "training_shards")


def referenced_versions(root) -> dict[str, set[int]]:
    """``{table: versions}`` that a kept manifest (model, features, fusion, report) was built from."""
    out: dict[str, set[int]] = {}
    cache: dict = {}  # kept manifests share most of their lineage (one encoder, many features)
    for asset in versions.assets(root):
        if asset in DATA_ASSETS:
            continue
        for manifest_id in versions.manifest_ids(root, asset):
            for table, found in versions.table_versions(versions.lineage(root, asset, manifest_id, cache)).items():
                out.setdefault(table, set()).update(found)
    return out


KEEP_LAST_MIN = 1  # the current version is always kept: fewer is meaningless


def check_limits(keep_last: int | None, max_age_days: float | None) -> None:
    """The limits retention accepts (the job's config and ``versions_cli retain``): at least one;
    ``keep_last`` a whole number >= 1, ``max_age_days`` a number > 0."""
    if keep_last is None and max_age_days is None:
        raise ValueError("retention needs keep_last or max_age_days (otherwise every version is kept)")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < KEEP_LAST_MIN):
        raise ValueError(f"keep_last (--keep-last) must be a whole number >= {KEEP_LAST_MIN}, not {keep_last!r}")
    if max_age_days is not None and not (isinstance(max_age_days, (int, float)) and max_age_days > 0):
        raise ValueError(f"max_age_days (--max-age-days) must be a number > 0, not {max_age_days!r}")


def plan(root, *, keep_last: int | None = None, max_age_days: float | None = None,
         now_ms: int | None = None) -> dict[str, dict[str, list[int]]]:
    """Per table: the versions to free, to keep (the newest, the young, the leased), and those kept
    because something was built from them."""
    check_limits(keep_last, max_age_days)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    referenced = referenced_versions(root)
    leased = leases.active(root, now_ms)[0]
    out = {}
    for table in sorted(tables.TABLES):
        if tables.version(root, table) is None:
            continue
        history = tables.versions(root, table)
        newest = [h["version"] for h in history][-(keep_last or 0):] if keep_last else []
        current = history[-1]["version"]
        gone = tables.expired(root, table)
        free, keep, refs = [], [], []
        for h in history:
            v = h["version"]
            # with both limits, a version goes when it is past both (the newest N and the last D days stay)
            past_count = keep_last is None or v not in newest
            past_age = max_age_days is None or (now_ms - (h["timestamp"] or now_ms)) > max_age_days * 86_400_000
            if v in gone:
                continue
            if v == current or not (past_count and past_age):
                keep.append(v)
            elif v in referenced.get(table, set()):
                refs.append(v)
            elif v in leased.get(table, ()):
                keep.append(v)
            else:
                free.append(v)
        out[table] = {"free": free, "keep": keep, "referenced": refs}
    return out


def run(root, *, keep_last: int | None = None, max_age_days: float | None = None, dry_run: bool = False,
        now_ms: int | None = None) -> dict[str, Any]:
    """Free what ``plan`` says; returns the report (per table: versions freed and kept, files, bytes)."""
    report: dict[str, Any] = {"tables": {}, "files": 0, "bytes": 0, "dry_run": dry_run, "shard_folders": 0}
    folders_kept: set[str] = set()
    folders_freed: set[str] = set()
    leased_files = leases.active(root)[1]
    for table, p in plan(root, keep_last=keep_last, max_age_days=max_age_days, now_ms=now_ms).items():
        keep = p["keep"] + p["referenced"]
        kept_files = {f for v in keep for f in tables.files(root, table, v).values()} | leased_files
        freed_files = {f for v in p["free"] for f in tables.files(root, table, v).values()} - kept_files
        if table == "segments":
            folders_kept |= _shard_folders_named(root, kept_files)
            folders_freed |= _shard_folders_named(root, freed_files)
        size = sum(_size(f) for f in freed_files)
        report["tables"][table] = {"table": table, "versions": p["free"], "kept": p["keep"],
                                   "referenced": p["referenced"], "files": len(freed_files), "bytes": size}
        report["files"] += len(freed_files)
        report["bytes"] += size
        if not dry_run:
            for f in freed_files:
                lake.as_path(f).unlink(missing_ok=True)
            if p["free"]:
                tables.mark_expired(root, table, set(p["free"]))
    freed_shards = [lake.as_path(f) for f in sorted(folders_freed - folders_kept) if lake.as_path(f).exists()]
    report["shard_folders"] = len(freed_shards)
    report["bytes"] += sum(_tree_size(f) for f in freed_shards)
    if not dry_run:
        for folder in freed_shards:
            _remove_tree(folder)
    return report


def _size(path) -> int:
    try:
        return lake.as_path(path).stat().st_size
    except FileNotFoundError:
        return 0


def _shard_folders_named(root, segment_files: set[str]) -> set[str]:
    """The shard version folders (their locations, strictly inside ``shards/``) that these
    segments files name; a row naming a folder anywhere else is refused (``LakeContentError``)."""
    from .shards import referenced_folders

    folders: set[str] = set()
    for f in segment_files:
        try:
            named = referenced_folders(lake.read_parquet(f).column("shard").to_pylist())
        except FileNotFoundError:
            continue
        folders |= {lakepaths.resolve(root, folder, f"{f} (column shard)", base="shards") for folder in named}
    return folders


def _tree_size(folder) -> int:
    return sum(p.stat().st_size for p in lake.as_path(folder).rglob("*") if p.is_file())


def _remove_tree(folder) -> None:
    folder = lake.as_path(folder)
    if lake.is_local(folder):
        shutil.rmtree(lake.local_path(folder, "retention"), ignore_errors=True)
    else:
        folder.fs.rm(str(folder), recursive=True)


# ----------------------------------------------------------------------------- rollback


def rollback(root, targets: dict[str, int]) -> dict[str, Any]:
    """Make ``{table: version}`` each table's current contents; returns {table: new version}."""
    from . import stages

    unknown = sorted(set(targets) - set(tables.TABLES))
    if unknown:
        raise tables.VersionError(f"no versioned table {', '.join(unknown)}; tables: {', '.join(sorted(tables.TABLES))}")
    for table, version in targets.items():
        tables.files(root, table, version)  # refuse a missing or freed version before changing anything
    out = {}
    for table, version in sorted(targets.items()):
        new = tables.restore(root, table, version)
        asset = {t: a for a, t in versions.ASSET_TABLES.items()}.get(table, table)
        latest = versions.latest(root, asset) or {}
        manifest = versions.as_of(root, asset, latest, version)
        hashes = {vid: r.get("output_hash") for vid, r in manifest.get("results", {}).items()}
        manifest.update({"table_version": {table: new}, "rolled_back_to": version, "operation": "rollback",
                         "data_version": lake.combine_hashes({k: str(v) for k, v in hashes.items()}) if hashes
                         else manifest.get("data_version")})
        manifest.pop("as_of", None)
        stored = versions.write_manifest(root, asset, manifest)
        stages.forget(root, asset)
        out[table] = {"restored": version, "version": new, "manifest_id": stored["manifest_id"]}
    return out
