"""Asset checks over the Parquet lake (DuckDB): schema, unique ids, offsets inside the video."""


import contextlib

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from .. import lake, schema, stages, tables
from ..corpus import CatalogueError, connect, load_catalogue_from_lake
from .resources import LakeResource


def _files(root, table: str) -> list[str]:
    """The data files of the table's current version (earlier versions' files stay in the lake)."""
    return sorted(tables.files(root, table).values()) if tables.version(root, table) is not None else []


def comments_checks(table: str, expected) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset=table, name="schema", description=f"Every {table} file has the declared Arrow schema (no files: not passed)")
    def schema_check(lake: LakeResource) -> dg.AssetCheckResult:
        files = _files(lake.path(), table)
        if not files:
            return _nothing_to_check(f"no {table} files in the lake")
        bad = [f for f in files if not _schema(f).remove_metadata().equals(expected.remove_metadata())]
        return dg.AssetCheckResult(passed=not bad, metadata={"files": len(files), "mismatched": "\n".join(bad[:20])})

    @dg.asset_check(asset=table, name="unique_ids", description="No comment id appears twice for a video (no rows: not passed)")
    def unique_check(lake: LakeResource) -> dg.AssetCheckResult:
        files = _files(lake.path(), table)
        with contextlib.closing(connect(lake.path())) as con:
            rows, dupes = (con.execute(
                "WITH c AS (SELECT platform, video_id, comment_id FROM read_parquet(?)) SELECT (SELECT count(*) FROM c), "
                "(SELECT count(*) FROM (SELECT platform, video_id, comment_id FROM c GROUP BY ALL HAVING count(*) > 1))", [files]
            ).fetchone() if files else (0, 0))
        if not rows:
            return _nothing_to_check(f"no {table} rows to check")
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"rows": int(rows), "duplicates": int(dupes)})

    # After the probes where a run has them too: the probe is where a local video's duration is known.
    @dg.asset_check(asset=table, name="offsets_in_video", additional_deps=["video_probes"],
                    description="Offsets are >= 0 and within the video duration (no rows or no known duration: not passed)")
    def offsets_check(lake: LakeResource) -> dg.AssetCheckResult:
        files = _files(lake.path(), table)
        durations = known_durations(lake.path())
        if not files:
            return _nothing_to_check(f"no {table} rows to check", severity=dg.AssetCheckSeverity.WARN)
        with contextlib.closing(connect(lake.path())) as con:  # an object store's fsspec registered
            con.register("durations", durations)
            rows, negative, past_end, checked = con.execute(
                "SELECT count(*), count(*) FILTER (c.offset_ms < 0), "
                "count(*) FILTER (c.offset_ms > d.duration_ms + 1000), count(d.duration_ms) "
                "FROM read_parquet(?) c LEFT JOIN durations d USING (video_id)", [files]
            ).fetchone()
        metadata = {"rows": int(rows), "negative": int(negative), "past_end": int(past_end), "outside": int(negative + past_end),
                    "rows_with_known_duration": int(checked), "videos_with_known_duration": durations.num_rows}
        if not checked:
            metadata["reason"] = "no comment has a known video duration (crawl metadata or video_probes): nothing checked"
        return dg.AssetCheckResult(passed=bool(checked) and negative + past_end == 0,
                                   severity=dg.AssetCheckSeverity.WARN, metadata=metadata)

    return [schema_check, unique_check, offsets_check]


def _schema(path: str) -> pa.Schema:
    with lake.as_path(path).open("rb") as fh:  # a local file or an object (pyarrow's own S3 is not configured)
        return pq.read_schema(fh)


def _nothing_to_check(reason: str, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    """A check that found nothing to check has not passed: it says so rather than passing."""
    return dg.AssetCheckResult(passed=False, severity=severity, metadata={"reason": reason})


def known_durations(root) -> pa.Table:
    """Durations (ms) per catalogued video, from its video probe or else its crawl metadata.

    Read through ``stages.load_state`` so the check finds the state files wherever the lake's
    naming rule puts them (a hand-built ``_state/...`` path went blind when that rule renamed
    the folder)."""
    out: dict[str, int] = {}
    try:
        videos = load_catalogue_from_lake(root)
    except CatalogueError:
        videos = []
    for video in videos:
        vid = video["video_id"]
        for stage in ("video_probes", "raw_comments"):
            dur = ((stages.load_state(root, stage, vid) or {}).get("metrics") or {}).get("duration_s")
            if dur:
                out[vid] = int(float(dur) * 1000)
                break
    return pa.table({"video_id": pa.array(list(out), pa.string()), "duration_ms": pa.array(list(out.values()), pa.int64())})


CHECKS = [
    *comments_checks("raw_comments", schema.COMMENTS_SCHEMA),
    *comments_checks("clean_comments", schema.CLEAN_COMMENTS_SCHEMA),
]
