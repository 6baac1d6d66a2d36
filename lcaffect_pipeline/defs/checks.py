"""Asset checks over the Parquet lake (DuckDB): schema, unique ids, offsets inside the video."""


import duckdb
import dagster as dg
import pyarrow.parquet as pq

from .. import lake, schema
from .resources import LakeResource


def _files(root, table: str) -> list[str]:
    base = lake.as_path(root) / table
    return sorted(str(p) for p in base.glob("*/*.parquet")) if base.exists() else []


def comments_checks(table: str, expected) -> list[dg.AssetChecksDefinition]:
    @dg.asset_check(asset=table, name="schema", description=f"Every {table} file has the declared Arrow schema")
    def schema_check(lake: LakeResource) -> dg.AssetCheckResult:
        bad = [f for f in _files(lake.path(), table) if not pq.read_schema(f).remove_metadata().equals(expected.remove_metadata())]
        return dg.AssetCheckResult(passed=not bad, metadata={"files": len(_files(lake.path(), table)), "mismatched": "\n".join(bad[:20])})

    @dg.asset_check(asset=table, name="unique_ids", description="No comment id appears twice for a video")
    def unique_check(lake: LakeResource) -> dg.AssetCheckResult:
        files = _files(lake.path(), table)
        if not files:
            return dg.AssetCheckResult(passed=True, metadata={"duplicates": 0})
        dupes = duckdb.execute(
            f"SELECT count(*) FROM (SELECT platform, video_id, comment_id FROM read_parquet({files!r}) "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicates": int(dupes)})

    @dg.asset_check(asset=table, name="offsets_in_video", description="Offsets are >= 0 and within the video duration where it is known")
    def offsets_check(lake: LakeResource) -> dg.AssetCheckResult:
        files = _files(lake.path(), table)
        if not files:
            return dg.AssetCheckResult(passed=True, metadata={"outside": 0})
        durations = _known_durations(lake.path())
        con = duckdb.connect()
        con.register("durations", durations)
        outside = con.execute(
            f"SELECT count(*) FROM read_parquet({files!r}) c LEFT JOIN durations d USING (video_id) "
            "WHERE c.offset_ms < 0 OR (d.duration_ms IS NOT NULL AND c.offset_ms > d.duration_ms + 1000)"
        ).fetchone()[0]
        return dg.AssetCheckResult(
            passed=outside == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"outside": int(outside), "videos_with_known_duration": durations.num_rows},
        )

    return [schema_check, unique_check, offsets_check]


def _known_durations(root):
    """Durations from the video probes (clips stage) or crawl metadata, as an Arrow table."""
    import json

    import pyarrow as pa

    out: dict[str, int] = {}
    for stage in ("raw_comments", "video_probes"):
        base = lake.as_path(root) / "_state" / stage
        if not base.exists():
            continue
        for p in base.glob("*.json"):
            state = json.loads(p.read_text())
            dur = (state.get("metrics") or {}).get("duration_s")
            if dur:
                out[state["video_id"]] = int(float(dur) * 1000)
    return pa.table({"video_id": pa.array(list(out), pa.string()), "duration_ms": pa.array(list(out.values()), pa.int64())})


CHECKS = [
    *comments_checks("raw_comments", schema.COMMENTS_SCHEMA),
    *comments_checks("clean_comments", schema.CLEAN_COMMENTS_SCHEMA),
]
