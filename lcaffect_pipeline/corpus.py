"""The live-comment corpus: catalogue → raw comments → clean comments → DuckDB catalog.

Plain functions over the lake; the Dagster assets in ``defs/`` are thin wrappers around them.
Lake layout (all under one root):

    catalogue/                                the video catalogue (CATALOGUE_SCHEMA), a Delta table
    sources/{platform}/{video}/...            fetched comment files, as the platform serves them
    raw_comments/video_key={video}/{hash}.parquet    every comment that parses (COMMENTS_SCHEMA)
    clean_comments/video_key={video}/{hash}.parquet  cleaned (CLEAN_COMMENTS_SCHEMA)
    corpus.duckdb                             views over one version of each table + the dataset card

The three tables are Delta tables with history (``lcaffect_pipeline.tables``): each run that
changes something commits a version, and every earlier version stays readable.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import yaml

from . import lake, schema, tables
from .stages import Skip, VideoResult
from lcaffect_ml import atomic


class CatalogueError(ValueError):
    """The catalogue file cannot be used; names the file and the reason."""


# ---------------------------------------------------------------- catalogue


def load_catalogue(path: str | os.PathLike) -> pa.Table:
    """Read a YAML (``videos: [...]``) or CSV catalogue into CATALOGUE_SCHEMA.

    Local paths in ``source``/``video`` are resolved against the catalogue's folder, so a
    catalogue can travel with its files.
    """
    path = lake.source_path(path)
    try:
        # Bytes, not read_text(): newlines inside quoted CSV fields stay as written. utf-8-sig:
        # spreadsheet exports start with a byte-order mark.
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read catalogue: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{path}: not UTF-8: {exc}") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))  # not splitlines(): it splits quoted fields at \x85
    else:
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise CatalogueError(f"{path}: not valid YAML: {exc}") from exc
        rows = doc.get("videos") if isinstance(doc, dict) else doc
        if not isinstance(rows, list):
            raise CatalogueError(f"{path}: expected a list under 'videos'")
    return pa.Table.from_pylist([_catalogue_row(path, i, r) for i, r in enumerate(rows)], schema=schema.CATALOGUE_SCHEMA)


def _catalogue_row(path, i: int, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict) or not row.get("source"):
        raise CatalogueError(f"{path}: entry {i} needs at least a 'source'")
    platform = (row.get("platform") or "local").strip().lower()
    if platform not in schema.PLATFORMS:
        raise CatalogueError(f"{path}: entry {i}: unknown platform {platform!r} (one of {', '.join(schema.PLATFORMS)})")
    source, video = str(row["source"]).strip(), (str(row["video"]).strip() if row.get("video") else None)
    source, video = _resolve_local(path, source), _resolve_local(path, video)
    video_id = str(row.get("video_id") or _default_video_id(source)).strip()
    return {
        "video_id": video_id,
        "platform": platform,
        "source": source,
        "video": video,
        "language": row.get("language"),
        **{key: _text(row.get(key)) for key in ("genre", "title", "series", "uploader", "group")},
    }


def _text(value: Any) -> str | None:
    """A free-text catalogue column as text (YAML reads ``series: 2`` as a number), None when empty."""
    return None if value is None or value == "" else str(value).strip()


def _resolve_local(catalogue, value: str | None) -> str | None:
    """A path relative to the catalogue's folder (a local one, or a file store's: ``s3://…``),
    made absolute when it exists there; URLs and platform ids (BV…, av…, sm…) are left as they are."""
    if not value or "://" in value:
        return value
    if not lake.is_local(catalogue):
        candidate = catalogue.parent.joinpath(*value.split("/"))
        return str(candidate) if candidate.exists() else value
    candidate = Path(value) if Path(value).is_absolute() else lake.local_path(catalogue, "a catalogue").parent / value
    return str(candidate.resolve()) if candidate.exists() else value


def _default_video_id(source: str) -> str:
    """The file or page name (``弹幕测试`` for ``…/弹幕测试.xml``, ``BV1xx`` for ``…/video/BV1xx/``),
    the ``v`` of a YouTube ``watch?v=`` URL, with ``_p{n}`` for a Bilibili part ``?p=n`` (n > 1)."""
    if "://" in source:
        source = urllib.parse.urlsplit(source)._replace(fragment="").geturl()
    path, _, query_text = source.partition("?")
    query = urllib.parse.parse_qs(query_text)
    tail = path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    if query.get("v", [""])[0]:
        tail = query["v"][0]
    part = query.get("p", [""])[0]
    if tail and part.isascii() and part.isdigit() and int(part) > 1:
        tail = f"{tail}_p{int(part)}"
    return tail or hashlib.sha1(source.encode()).hexdigest()[:12]


def check_unique_ids(table: pa.Table, path: str) -> None:
    counts = collections.Counter(table.column("video_id").to_pylist())  # linear: catalogues have 10^5 entries
    dupes = sorted(v for v, n in counts.items() if n > 1)
    if dupes:
        raise CatalogueError(f"{path}: duplicate video_id {', '.join(dupes[:5])}")


# ---------------------------------------------------------------- per-video stages


def raw_path(root, video_id: str, digest: str):
    """One video's raw comments as one version of ``raw_comments`` holds them (content-addressed)."""
    return tables.data_file(root, "raw_comments", video_id, digest)


def clean_path(root, video_id: str, digest: str):
    return tables.data_file(root, "clean_comments", video_id, digest)


def source_dir(root, platform: str, video_id: str):
    return lake.under(root, "sources", platform, video_id)


def _files_fingerprint(files: list[str]) -> str:
    return lake.combine_hashes({lake.as_path(f).name: lake.file_hash(f) for f in files})


def _lake_source_files(table: pa.Table, names: dict[str, str]) -> pa.Table:
    """``source_file`` names the file in the lake, not the scratch copy the parser read."""
    if all(k == v for k, v in names.items()):
        return table
    i = table.schema.get_field_index("source_file")
    values = [names.get(v, v) if v is not None else None for v in table.column(i).to_pylist()]
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def fetch_and_parse(video: dict[str, Any], prev: dict | None, *, root, crawl, session=None, refresh: bool, salt: str | None) -> VideoResult:
    """Fetch one video's comment files (skipped when complete, unless ``refresh``) and parse them.

    ``crawl`` is a ``sources.SourceConfig``; pass one ``session`` per batch so the per-host
    rate limit holds across videos.
    """
    from .formats import read_comments
    from .sources import fetch_comments

    vid, platform = video["video_id"], video["platform"]
    fetched = fetch_comments(platform, video["source"], source_dir(root, platform, vid), config=crawl, refresh=refresh, session=session)
    if fetched.status not in ("complete", "skipped"):
        raise RuntimeError(fetched.error or f"fetch ended {fetched.status}")
    fingerprint = (fetched.content_hash or _files_fingerprint(fetched.files)) + (salt and hashlib.sha1(salt.encode()).hexdigest()[:8] or "")
    if prev and prev.get("fingerprint") == fingerprint and prev.get("output_hash") \
            and raw_path(root, vid, prev["output_hash"]).exists():
        raise Skip
    with lake.local_copies(fetched.files, "the comment parsers") as files:
        table = read_comments(files, platform=platform, video_id=vid, author_salt=salt)
        table = _lake_source_files(table, {str(f): str(src) for f, src in zip(files, fetched.files)})
    digest = tables.write(root, "raw_comments", table, vid)
    skipped = int((table.schema.metadata or {}).get(b"lcaffect.skipped", b"0") or 0)
    return VideoResult(vid, "done", fingerprint, digest, table.num_rows, metrics={"bad_elements": skipped, **_meta_metrics(fetched)})


def _meta_metrics(fetched) -> dict[str, Any]:
    meta = getattr(fetched, "metadata", None) or {}
    return {k: meta[k] for k in ("duration_s", "title") if meta.get(k) is not None}


def clean_one(video: dict[str, Any], prev: dict | None, *, root, raw_hash: str | None, config: dict[str, Any]) -> VideoResult:
    """Clean one video's raw comments; skipped when raw content and config are unchanged."""
    from .cleaning import CleaningConfig, clean_comments

    vid = video["video_id"]
    if raw_hash is None:
        raise RuntimeError("no raw comments (the fetch failed)")
    fingerprint = lake.combine_hashes({"raw": raw_hash, "config": json.dumps(config, sort_keys=True, default=str)})
    if prev and prev.get("fingerprint") == fingerprint and prev.get("output_hash") \
            and clean_path(root, vid, prev["output_hash"]).exists():
        raise Skip
    raw = tables.read_file(root, "raw_comments", vid, raw_hash)
    clean, drops = clean_comments(raw, CleaningConfig(**config))
    digest = tables.write(root, "clean_comments", clean, vid)
    return VideoResult(vid, "done", fingerprint, digest, clean.num_rows, metrics={"raw_rows": raw.num_rows, "drops": dict(drops)})


# ---------------------------------------------------------------- the corpus catalog


CORPUS_TABLES = ("catalogue", "raw_comments", "clean_comments")


def corpus_versions(root, pinned: dict[str, int] | None = None) -> dict[str, int | None]:
    """The version of each corpus table to read: ``pinned``'s, else the current one."""
    pinned = pinned or {}
    return {t: pinned[t] if pinned.get(t) is not None else tables.version(root, t) for t in CORPUS_TABLES}


def build_corpus_catalog(root, durations: dict[str, float] | None = None,
                         versions: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Write ``corpus.duckdb``: views over one version of each corpus table plus the dataset card.

    ``versions`` ({table: version}, default the current ones) fixes what the views read: a view
    lists the data files of that Delta version, so the catalog is a snapshot of the corpus and
    later refreshes do not change what it shows. Hours per video come from the known duration
    (crawl metadata or the video probe) and fall back to the last comment's offset where no
    duration is known. On an object store the database file is built in a local scratch folder
    (DuckDB writes local files) and uploaded; its views read the Parquet from the lake's URLs, so
    a reader opens it with ``connect(root, path)``, which registers the lake's file system.
    """
    versions = corpus_versions(root, versions)
    root_p = lake.as_path(root)
    if not lake.is_local(root_p):
        with lake.scratch("the DuckDB corpus catalog") as folder:
            card = _write_catalog(folder / "corpus.duckdb", root_p, durations or {}, versions)
            lake.publish_copy(folder / "corpus.duckdb", root_p / "corpus.duckdb")
        return {**card, "path": str(root_p / "corpus.duckdb"), "versions": versions}
    root_p = lake.local_path(root, "the DuckDB corpus catalog")
    db_path = root_p / "corpus.duckdb"
    atomic.sweep_stale_temps(root_p)
    tmp = atomic.temp_path(db_path)  # one per build: two runs building at once do not collide
    try:
        card = _write_catalog(tmp, root_p, durations or {}, versions)
        os.replace(tmp, db_path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return {**card, "path": str(db_path), "versions": versions}


def _write_catalog(db_file: Path, root, durations: dict[str, float], versions: dict[str, int | None]) -> dict[str, Any]:
    con = connect(root, db_file)
    try:
        _create_catalog(con, root, durations, versions)
        return _dataset_card(con)
    finally:
        con.close()


def connect(root, database: str | os.PathLike = ":memory:"):
    """A DuckDB connection that reads the lake at ``root``: a lake on an object store has its
    fsspec file system registered (no DuckDB extension is downloaded or loaded)."""
    con = duckdb.connect(str(database))
    root_p = lake.as_path(root)
    if not lake.is_local(root_p):
        con.execute("SET autoinstall_known_extensions = false; SET autoload_known_extensions = false")
        con.register_filesystem(root_p.fs)
    return con


def connect_as_of(root, versions: dict[str, int] | None = None):
    """An in-memory DuckDB connection whose views ``catalogue``, ``raw_comments`` and
    ``clean_comments`` read the corpus as of ``versions`` ({table: version}; the current
    version for a table not named): ``connect_as_of(lake, {"clean_comments": 3}).sql(...)``."""
    con = connect(root)
    _create_views(con, root, corpus_versions(root, versions))
    return con


def _sql_string(value: str) -> str:
    """A SQL string literal. Views are stored in the database, so their paths cannot be bound
    as parameters; quoting keeps a lake root holding ``'`` working (and inert)."""
    return "'" + str(value).replace("'", "''") + "'"


def _file_list(root, table: str, version: int | None) -> list[str]:
    return [] if version is None else sorted(tables.files(root, table, version).values())


def _create_views(con, root, versions: dict[str, int | None]) -> None:
    for table in CORPUS_TABLES:
        files = _file_list(root, table, versions.get(table))
        if files:
            listed = ", ".join(_sql_string(f) for f in files)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listed}], union_by_name=true)")
        else:
            con.register(f"_{table}_empty", tables.TABLES[table][0].empty_table())
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM _{table}_empty")
    con.execute("CREATE TABLE corpus_versions AS SELECT * FROM (VALUES " + ", ".join(
        f"({_sql_string(t)}, {'NULL' if v is None else int(v)})" for t, v in versions.items()) + ") t(table_name, version)")


def _create_catalog(con, root, durations: dict[str, float], versions: dict[str, int | None]) -> None:
    _create_views(con, root, versions)
    con.register("_durations", pa.table({"video_id": list(durations), "duration_s": [float(v) for v in durations.values()]}))
    con.execute(
        """
        CREATE TABLE videos AS
        SELECT c.video_id, c.platform, coalesce(c.language, 'unknown') AS language,
               coalesce(c.genre, 'unknown') AS genre,
               coalesce(d.duration_s, s.last_offset_ms / 1000.0, 0) AS duration_s,
               coalesce(s.comments, 0) AS comments
        FROM catalogue c
        LEFT JOIN _durations d USING (video_id)
        LEFT JOIN (SELECT video_id, count(*) AS comments, max(offset_ms) AS last_offset_ms
                   FROM clean_comments GROUP BY video_id) s USING (video_id)
        """
    )
    con.execute(
        """
        CREATE TABLE dataset_card AS
        SELECT 'all' AS dimension, 'all' AS value, count(*) AS videos,
               round(sum(duration_s) / 3600, 3) AS hours, sum(comments) AS comments FROM videos
        UNION ALL SELECT 'platform', platform, count(*), round(sum(duration_s) / 3600, 3), sum(comments) FROM videos GROUP BY platform
        UNION ALL SELECT 'language', language, count(*), round(sum(duration_s) / 3600, 3), sum(comments) FROM videos GROUP BY language
        UNION ALL SELECT 'genre', genre, count(*), round(sum(duration_s) / 3600, 3), sum(comments) FROM videos GROUP BY genre
        ORDER BY dimension, value
        """
    )


def _dataset_card(con) -> dict[str, Any]:
    rows = con.execute("SELECT dimension, value, videos, hours, comments FROM dataset_card").fetchall()
    total = next(r for r in rows if r[0] == "all")
    return {
        "videos": int(total[2]),
        "hours": float(total[3] or 0),
        "comments": int(total[4] or 0),
        "card": [dict(zip(("dimension", "value", "videos", "hours", "comments"), r)) for r in rows],
    }


def card_markdown(card: list[dict[str, Any]]) -> str:
    lines = ["| dimension | value | videos | hours | comments |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['dimension']} | {r['value']} | {r['videos']} | {r['hours']} | {r['comments']} |" for r in card]
    return "\n".join(lines)


def write_catalogue(root, table: pa.Table, source: str = "") -> tuple[str, int]:
    """Commit ``table`` as the lake's catalogue (a new version only when it changed); returns
    (content hash, version)."""
    check_unique_ids(table, source or "the catalogue")
    digest = tables.write(root, "catalogue", table)
    return digest, tables.commit(root, "catalogue", {None: digest}, operation="catalogue", info={"source": source})


def load_catalogue_from_lake(root, version: int | None = None) -> list[dict[str, Any]]:
    """The catalogue rows (dicts) as last materialised into the lake (or as of ``version``)."""
    if tables.version(root, "catalogue") is None:
        raise CatalogueError(f"{tables.table_path(root, 'catalogue')}: no catalogue in this lake yet "
                             "(materialise video_catalogue first)")
    return tables.read(root, "catalogue", version).to_pylist()
