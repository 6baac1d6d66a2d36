"""The lake's tables with history: Delta Lake tables (delta-rs, no JVM, no server).

Each per-video table (``raw_comments``, ``clean_comments``, ``segments``) is a Delta table
partitioned by ``video_key`` (the video id's safe file name, ``lake.safe_name``). A stage writes
one video's rows as a content-addressed Parquet file, ``{table}/video_key={key}/{hash}.parquet``
(the hash of its rows, ``lake.table_hash``), while the batch is still running; the collect step
then commits one Delta version that removes the replaced files of the videos that changed and
adds their new files. So:

- a refresh of one video touches that video's files only, and a run that changed nothing adds no
  version;
- a file is never overwritten: every earlier version stays readable (``read(..., version=)``)
  until retention frees it (``lcaffect_pipeline.versions``);
- the chunk steps never commit, so parallel steps and pods do not contend for the log: the one
  writer of a table is its asset's collect step.

Tables with one file per version (``catalogue``, the downstream ``utterances_{task}``) use the
same path without a partition. The data files hold every column of the one schema
(``lcaffect_pipeline.schema``), so DuckDB reads a version's file list directly
(``files``), and our own readers read a video's file by its hash.

Why Delta rather than Iceberg: docs/ARCHITECTURE.md ("Versions").
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from lcaffect_ml.contracts import lakepaths, naming
from lcaffect_ml.contracts import tables as contract_tables

from . import lake, leases, schema

KEY = "video_key"  # the partition column: safe_name(video_id)

# name -> (schema of the data files, partitioned by video)
TABLES: dict[str, tuple[pa.Schema, bool]] = {
    "catalogue": (schema.CATALOGUE_SCHEMA, False),
    "raw_comments": (schema.COMMENTS_SCHEMA, True),
    "clean_comments": (schema.CLEAN_COMMENTS_SCHEMA, True),
    "segments": (schema.SEGMENTS_SCHEMA, True),
}


# name -> folder under the lake root, where it is not the name itself
PATHS: dict[str, str] = {}
# Each downstream task's utterance table (one file per version) sits in the task's folder, beside
# the prepared media its rows name relative to that folder.
for _task in contract_tables.DOWNSTREAM_TASKS:
    TABLES[f"{_task}_utterances"] = (contract_tables.UTTERANCES_SCHEMA, False)
    PATHS[f"{_task}_utterances"] = f"downstream/{_task}"


WRITE_LEASE = "write-"  # the lease a stage takes on an existing data file it commits (``write``)


class VersionError(LookupError):
    """A table or version that the lake does not have (or no longer has: retention freed it)."""


class DamagedTableError(VersionError):
    """A table whose Delta log cannot be read (a truncated or corrupt entry): names the table, the
    first damaged version and the repair (``versions_cli repair``)."""


def register(name: str, data_schema: pa.Schema, per_video: bool = False, path: str | None = None) -> None:
    """Declare another versioned table (the downstream utterance tables register theirs)."""
    TABLES[name] = (data_schema, per_video)
    if path:
        PATHS[name] = path


def _spec(table: str) -> tuple[pa.Schema, bool]:
    if table not in TABLES:
        raise VersionError(f"no versioned table {table!r}; the lake's tables: {', '.join(sorted(TABLES))}")
    return TABLES[table]


def table_path(root, table: str):
    _spec(table)
    return lake.as_path(root) / PATHS.get(table, table)


def video_key(video_id: str) -> str:
    return naming.safe_name(video_id)


def file_name(digest: str) -> str:
    return f"{digest}.parquet"


def relative_file(table: str, video_id: str | None, digest: str) -> str:
    """A data file's path relative to its table: content-addressed, so never overwritten."""
    return f"{KEY}={video_key(video_id)}/{file_name(digest)}" if _spec(table)[1] else file_name(digest)


def data_file(root, table: str, video_id: str | None, digest: str):
    return table_path(root, table) / relative_file(table, video_id, digest)


# ----------------------------------------------------------------------------- writing


def write(root, table: str, data: pa.Table, video_id: str | None = None) -> str:
    """Write one video's rows (or a whole unpartitioned table) as a content-addressed data file;
    returns its hash (the name). Not visible in the table until ``commit``."""
    data_schema, per_video = _spec(table)
    if per_video and video_id is None:
        raise ValueError(f"{table} is per video: pass video_id")
    data = data.cast(data_schema)
    digest = lake.table_hash(data)
    path = data_file(root, table, video_id, digest)
    if path.exists():  # same rows, same name: an existing file (an earlier version's) already holds
        # them; leased until the commit, so that retention does not free it in between
        leases.take(root, f"{WRITE_LEASE}{table}-{digest}", files=[str(path)])
    else:
        lake.write_parquet(data, path)
    return digest


def read_file(root, table: str, video_id: str | None, digest: str) -> pa.Table:
    path = data_file(root, table, video_id, digest)
    if not path.exists():
        raise VersionError(f"{path}: the {table} file of {video_id or 'the table'} with hash {digest} is not in the lake "
                           "(freed by retention, or never written)")
    return lake.read_parquet(path, _spec(table)[0])


def commit(root, table: str, changes: Mapping[str | None, str | None], *, operation: str = "refresh",
           info: Mapping[str, Any] | None = None, rows: Mapping[str | None, int] | None = None) -> int:
    """Make ``changes`` ({video_id: new hash, or None to drop the video}; for an unpartitioned
    table {None: hash}) the table's next version. Returns the version that holds them: the current
    one when nothing changed. Retried when another writer committed first. ``rows`` (the row count
    of each new file, where the caller knows it) saves reading each file's footer for the log."""
    from deltalake.exceptions import CommitFailedError

    for attempt in range(8):
        try:
            committed = _commit_once(root, table, changes, operation, info or {}, rows or {})
            leases.release_files(root, f"{WRITE_LEASE}{table}-", [d for d in changes.values() if d])
            return committed
        except CommitFailedError:
            if attempt == 7:
                raise
            time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


def _commit_once(root, table: str, changes, operation: str, info: Mapping[str, Any], rows: Mapping) -> int:
    from deltalake import Schema as DeltaSchema
    from deltalake.transaction import AddAction, CommitProperties, RemoveAction, create_table_with_add_actions

    data_schema, per_video = _spec(table)
    dt = _open(root, table, missing_ok=True)
    current = _current_files(dt, per_video) if dt is not None else {}
    now = int(time.time() * 1000)
    adds, removes = [], []
    for vid, digest in changes.items():
        key = video_key(vid) if per_video else None
        new = relative_file(table, vid, digest) if digest else None
        old = current.get(key, [])
        if new is not None and old == [new]:
            continue  # unchanged
        parts = {KEY: key} if per_video else {}
        removes += [RemoveAction(path, True, now, partition_values=parts) for path in old if path != new]
        if new is not None and new not in old:
            path = data_file(root, table, vid, digest)
            count = rows.get(vid)
            if count is None:
                with path.open("rb") as fh:
                    count = pq.ParquetFile(fh).metadata.num_rows
            adds.append(AddAction(new, path.stat().st_size, parts, now, True, json.dumps({"numRecords": int(count)})))
    delta_schema = DeltaSchema.from_arrow(_delta_arrow_schema(data_schema, per_video))
    props = CommitProperties(custom_metadata={"lcaffect.operation": operation,
                                              **{f"lcaffect.{k}": str(v) for k, v in info.items()}})
    partition_by = [KEY] if per_video else None
    if dt is None:
        create_table_with_add_actions(_uri(root, table), delta_schema, adds, mode="error", partition_by=partition_by,
                                      name=table, commit_properties=props, storage_options=storage_options(root))
        return 0
    if not adds and not removes:
        return dt.version()
    dt.create_write_transaction([*removes, *adds], mode="append", schema=delta_schema, partition_by=partition_by,
                                commit_properties=props)
    return _open(root, table).version()


def _delta_arrow_schema(data_schema: pa.Schema, per_video: bool) -> pa.Schema:
    # Delta keeps microsecond timestamps; the data files keep the schema's own unit (DuckDB and
    # our readers read the files, so they see it unchanged).
    fields = [pa.field(f.name, pa.timestamp("us", tz=f.type.tz), f.nullable) if pa.types.is_timestamp(f.type) else f
              for f in data_schema.remove_metadata()]
    return pa.schema(fields + ([pa.field(KEY, pa.string(), nullable=False)] if per_video else []))


def restore(root, table: str, version: int) -> int:
    """Make ``version``'s contents the table's next version (nothing is deleted); returns it."""
    dt = _open(root, table)
    check_readable(root, table, version)
    dt.restore(version)
    return _open(root, table).version()


# ----------------------------------------------------------------------------- reading


def _uri(root, table: str) -> str:
    return str(table_path(root, table)).rstrip("/")


def storage_options(root) -> dict[str, str] | None:
    """delta-rs's options for the lake's object store (None on local disk): the endpoint and
    credentials s3fs uses. Only the table's collect step commits, so the store needs no lock
    (``AWS_S3_ALLOW_UNSAFE_RENAME``: delta-rs otherwise refuses S3 without a locking provider)."""
    root_p = lake.as_path(root)
    if lake.is_local(root_p):
        return None
    fs = root_p.fs
    kwargs = {**(getattr(fs, "client_kwargs", None) or {}), **(getattr(fs, "storage_options", None) or {})}
    endpoint = (getattr(fs, "endpoint_url", None) or kwargs.get("endpoint_url")
                or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    opts = {"AWS_S3_ALLOW_UNSAFE_RENAME": "true",
            "AWS_REGION": os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            # a store that refuses connections for a while is waited for, as s3fs waits (lake.py):
            # delta-rs's default back-off spends its retries in about 3 s
            "max_retries": str(lake.OBJECT_STORE_RETRIES), "backoff_config.init_backoff": "500ms",
            "backoff_config.max_backoff": "5s", "backoff_config.base": "2"}
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        opts["AWS_ALLOW_HTTP"] = "true" if endpoint.startswith("http://") else "false"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(name):
            opts[name] = os.environ[name]
    key, secret = kwargs.get("key") or getattr(fs, "key", None), kwargs.get("secret") or getattr(fs, "secret", None)
    if key and secret:
        opts.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    return opts


def _open(root, table: str, version: int | None = None, *, missing_ok: bool = False):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = _uri(root, table)
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options(root))
    except TableNotFoundError:
        if missing_ok:
            return None
        raise VersionError(f"{uri}: no {table} table in this lake yet") from None
    except Exception as exc:  # delta-rs raises a generic error for a version it has no log entry for
        if version is not None and "version" in str(exc).lower() and "json error" not in str(exc).lower():
            raise VersionError(f"{uri}: {table} has no version {version} ({exc})") from None
        last, bad = readable_until(root, table)
        if not bad:
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # delta-rs appends a Rust backtrace
        raise DamagedTableError(f"{uri}: the {table} table cannot be read: {reason}; its log is damaged from version "
                                f"{_log_version(bad[0])} (last readable version {last}); `python -m "
                                f"lcaffect_pipeline.versions_cli repair {table}` moves the damaged entries aside "
                                "(docs/VERSIONS.md)") from None


# ----------------------------------------------------------------------------- a damaged log


def _log_version(path) -> int | None:
    stem = lake.as_path(path).name.split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def _entry_readable(path) -> bool:
    try:
        lines = [line for line in lake.as_path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        return bool(lines) and all(isinstance(json.loads(line), dict) for line in lines)
    except (OSError, ValueError):
        return False


def readable_until(root, table: str) -> tuple[int | None, list]:
    """(the last version whose log entries, and every one before it, parse; the log's files after
    it: damaged entries and whatever follows them)."""
    log = table_path(root, table) / "_delta_log"
    files = sorted((p for p in log.iterdir() if _log_version(p) is not None), key=lambda p: (_log_version(p), p.name))
    entries = [p for p in files if p.name.endswith(".json")]
    last = None
    for path in entries:
        version = _log_version(path)
        if (last is not None and version != last + 1) or not _entry_readable(path):
            break
        last = version
    return last, [p for p in files if last is None or _log_version(p) > last]


def repair(root, table: str) -> dict[str, Any]:
    """Move the damaged log entries of ``table`` (the first unreadable one and all after it, with
    any checkpoint past the last readable version) to ``{table}/_delta_log_damaged/{time}/``: the
    table is then its last readable version. The data files stay (content-addressed), so the next
    run of the stage that writes the table commits its videos again."""
    last, bad = readable_until(root, table)
    if last is None:
        raise DamagedTableError(f"{_uri(root, table)}: no readable version in the {table} log to go back to; "
                                "rebuild the table by re-running its stage with refresh")
    log = table_path(root, table) / "_delta_log"
    pointer = log / "_last_checkpoint"
    if pointer.exists():
        try:
            if json.loads(pointer.read_text()).get("version", -1) > last:
                bad.append(pointer)
        except ValueError:
            bad.append(pointer)
    aside = table_path(root, table) / "_delta_log_damaged" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for path in bad:
        (aside / path.name).parent.mkdir(parents=True, exist_ok=True)
        path.rename(aside / path.name)
    freed = expired(root, table)
    if any(v > last for v in freed):  # version numbers past ``last`` are given to new commits again
        lake.atomic_write_bytes(_expired_path(root, table), json.dumps(sorted(v for v in freed if v <= last)).encode())
    return {"table": table, "version": _open(root, table).version(), "moved": [p.name for p in bad], "to": str(aside)}


def check_readable_tables(root) -> None:
    """Open every table the lake has: a damaged log fails here (a run's first step) with the
    table, the version and the repair, not after the run's work at its commit."""
    for table in sorted(TABLES):
        _open(root, table, missing_ok=True)


def _current_files(dt, per_video: bool) -> dict[str | None, list[str]]:
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pydict()  # an arro3 table: Arrow's C interface
    files: dict[str | None, list[str]] = {}
    keys = actions.get(f"partition.{KEY}", [None] * len(actions["path"]))
    for path, key in zip(actions["path"], keys):
        files.setdefault(key if per_video else None, []).append(path)
    return files


def version(root, table: str) -> int | None:
    """The table's current version (None: no table yet)."""
    dt = _open(root, table, missing_ok=True)
    return None if dt is None else dt.version()


def versions(root, table: str) -> list[dict[str, Any]]:
    """The table's history, oldest first: version, time (ms), operation and our commit info."""
    dt = _open(root, table)
    out = []
    for entry in reversed(dt.history()):
        out.append({"version": entry["version"], "timestamp": entry.get("timestamp"),
                    "operation": entry.get("lcaffect.operation") or entry.get("operation"),
                    **{k[len("lcaffect."):]: v for k, v in entry.items() if k.startswith("lcaffect.") and k != "lcaffect.operation"}})
    return out


def files(root, table: str, version: int | None = None) -> dict[str | None, str]:
    """``{video_key: data file URI}`` of a version (the current one by default)."""
    dt = _open(root, table, version)
    check_readable(root, table, dt.version())
    per_video = _spec(table)[1]
    log = f"{_uri(root, table)}/_delta_log (version {dt.version()})"
    folder = PATHS.get(table, table)
    out: dict[str | None, str] = {}
    for key, paths in _current_files(dt, per_video).items():
        for path in paths:  # a log action names a file of this table's folder, nothing else
            out[key if per_video else None] = lakepaths.resolve(root, path, log, base=folder)
    return out


def digests(root, table: str, version: int | None = None) -> dict[str | None, str]:
    """``{video_key: content hash}`` of a version: what a consumer of that version read."""
    return {key: lake.as_path(uri).name.removesuffix(".parquet") for key, uri in files(root, table, version).items()}


def read(root, table: str, version: int | None = None) -> pa.Table:
    """The whole table as of ``version`` (rows of every video, in video-key order)."""
    data_schema = _spec(table)[0]
    found = files(root, table, version)
    parts = [lake.read_parquet(found[key], data_schema) for key in sorted(found, key=str)]
    return pa.concat_tables(parts) if parts else data_schema.empty_table()


# ----------------------------------------------------------------------------- freed versions


def _expired_path(root, table: str):
    return lake.as_path(root) / "_versions" / f"{table}.expired.json"


def expired(root, table: str) -> set[int]:
    path = _expired_path(root, table)
    return set(json.loads(path.read_text())) if path.exists() else set()


def mark_expired(root, table: str, freed: set[int]) -> None:
    lake.atomic_write_bytes(_expired_path(root, table), json.dumps(sorted(expired(root, table) | set(freed))).encode())


def check_readable(root, table: str, version: int) -> None:
    if version in expired(root, table):
        raise VersionError(f"{table} version {version} was freed by retention (its data files are deleted); "
                           "see _versions/ in the lake")
