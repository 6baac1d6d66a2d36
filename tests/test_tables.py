"""Tables with history (Delta Lake), manifests per materialisation, retention and rollback, as plain
functions: on local disk, with hostile video ids, and on the real S3 server."""

import datetime as dt
import subprocess
import sys

import pyarrow as pa
import pytest

from lcaffect_pipeline import lake, retention, schema, tables, versions

from conftest import ROOT
from lcaffect_ml.contracts import naming

HOSTILE = ["plain", "../escape", "a/b", "弹幕 测试", "video_key=x", "50%", "CON", "a" * 300]


def _comments(vid: str, texts: list[str]) -> pa.Table:
    rows = [dict(platform="bilibili", video_id=vid, comment_id=str(i), offset_ms=1000 * i, text=t, mode="scroll",
                 superchat=False, source_file="f", posted_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
            for i, t in enumerate(texts)]
    return pa.Table.from_pylist(rows, schema=schema.CLEAN_COMMENTS_SCHEMA)


def _refresh(root, texts_by_video: dict[str, list[str]]) -> int:
    changes = {vid: tables.write(root, "clean_comments", _comments(vid, texts), vid) for vid, texts in texts_by_video.items()}
    return tables.commit(root, "clean_comments", changes)


def test_per_video_commits_touch_only_changed_videos_and_keep_every_version(tmp_path) -> None:
    root = tmp_path / "lake"
    v0 = _refresh(root, {vid: ["a", "b"] for vid in HOSTILE})
    assert v0 == 0 and tables.read(root, "clean_comments").num_rows == 2 * len(HOSTILE)
    assert _refresh(root, {vid: ["a", "b"] for vid in HOSTILE}) == 0  # nothing changed: no version
    v1 = _refresh(root, {"../escape": ["a", "b", "c"]})
    assert v1 == 1
    before, after = tables.digests(root, "clean_comments", 0), tables.digests(root, "clean_comments", 1)
    assert {k for k in before if before[k] != after[k]} == {naming.safe_name("../escape")}
    assert tables.read(root, "clean_comments", 0).num_rows == 2 * len(HOSTILE)  # version 0 as it was
    assert tables.read(root, "clean_comments").num_rows == 2 * len(HOSTILE) + 1
    # Every file stays under the table's folder, named by its content.
    for uri in tables.files(root, "clean_comments").values():
        path = lake.as_path(uri)
        assert path.resolve().is_relative_to((root / "clean_comments").resolve())
        assert lake.table_hash(lake.read_parquet(path, schema.CLEAN_COMMENTS_SCHEMA)) == path.stem
    assert [h["version"] for h in tables.versions(root, "clean_comments")] == [0, 1]


def test_a_missing_table_or_version_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(tables.VersionError, match="no clean_comments table"):
        tables.read(tmp_path, "clean_comments")
    _refresh(tmp_path, {"v": ["x"]})
    with pytest.raises(tables.VersionError, match="has no version 7"):
        tables.read(tmp_path, "clean_comments", 7)
    with pytest.raises(tables.VersionError, match="no versioned table 'comments'"):
        tables.version(tmp_path, "comments")
    with pytest.raises(tables.VersionError, match="not in the lake"):
        tables.read_file(tmp_path, "clean_comments", "v", "0" * 32)


def test_manifests_are_added_never_replaced_and_lineage_follows_reads(tmp_path) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    clean = versions.write_manifest(tmp_path, "clean_comments", {"table_version": {"clean_comments": 0}}, now=t0)
    again = versions.write_manifest(tmp_path, "clean_comments", {"table_version": {"clean_comments": 1}},
                                    now=t0 + dt.timedelta(seconds=1))
    assert versions.manifest_ids(tmp_path, "clean_comments") == [clean["manifest_id"], again["manifest_id"]]
    assert versions.load(tmp_path, "clean_comments")["manifest_id"] == again["manifest_id"]  # the latest
    assert versions.load(tmp_path, "clean_comments", clean["manifest_id"])["table_version"] == {"clean_comments": 0}
    model = versions.write_manifest(tmp_path, "v2lc_encoder", {"reads": versions.reads({"clean_comments": clean})})
    rows = versions.lineage(tmp_path, "v2lc_encoder", model["manifest_id"])
    assert versions.table_versions(rows) == {"clean_comments": [0]}
    with pytest.raises(versions.ManifestError):
        versions.load(tmp_path, "clean_comments", "../../etc/passwd")
    broken = versions.write_manifest(tmp_path, "report", {"reads": {"v2lc_encoder": "gone"}})
    assert versions.lineage(tmp_path, "report", broken["manifest_id"])[1]["missing"] is True


def _three_versions(root) -> dict[str, dict]:
    """clean_comments versions 0, 1, 2 (one video changed each time); a model built from version 0."""
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    made = {}
    for v, texts in enumerate((["a"], ["a", "b"], ["a", "b", "c"])):
        assert _refresh(root, {"x": texts, "y": ["same"]}) == v
        made[v] = versions.write_manifest(root, "clean_comments", {"table_version": {"clean_comments": v}},
                                          now=t0 + dt.timedelta(days=v))
    versions.write_manifest(root, "v2lc_encoder", {"reads": versions.reads({"clean_comments": made[0]})})
    return made


def test_retention_frees_by_count_and_keeps_what_a_model_was_built_from(tmp_path) -> None:
    _three_versions(tmp_path)
    middle = tables.files(tmp_path, "clean_comments", 1)[naming.safe_name("x")]
    report = retention.run(tmp_path, keep_last=1)
    clean = report["tables"]["clean_comments"]
    assert (clean["versions"], clean["referenced"], clean["kept"]) == ([1], [0], [2])
    assert clean["files"] == 1 and report["bytes"] > 0 and not lake.as_path(middle).exists()
    assert tables.read(tmp_path, "clean_comments", 0).num_rows == 2  # the model's version is whole
    with pytest.raises(tables.VersionError, match="freed by retention"):
        tables.read(tmp_path, "clean_comments", 1)
    with pytest.raises(tables.VersionError, match="freed by retention"):
        retention.rollback(tmp_path, {"clean_comments": 1})
    # y's file is shared by every version: never freed while a kept version holds it
    assert lake.as_path(tables.files(tmp_path, "clean_comments", 0)[naming.safe_name("y")]).exists()


def test_retention_by_age_keeps_young_versions_and_needs_a_limit(tmp_path) -> None:
    _three_versions(tmp_path)
    now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    young = retention.plan(tmp_path, max_age_days=1, now_ms=now)["clean_comments"]
    assert young["free"] == []  # all committed just now
    later = retention.plan(tmp_path, max_age_days=1, now_ms=now + 3 * 86_400_000)["clean_comments"]
    assert later == {"free": [1], "keep": [2], "referenced": [0]}
    both = retention.plan(tmp_path, keep_last=2, max_age_days=1, now_ms=now + 3 * 86_400_000)["clean_comments"]
    assert both["free"] == []  # version 1 is among the newest two: kept although old
    with pytest.raises(ValueError, match="keep_last or max_age_days"):
        retention.plan(tmp_path)


def test_rollback_restores_a_version_as_a_new_one(tmp_path) -> None:
    _three_versions(tmp_path)
    out = retention.rollback(tmp_path, {"clean_comments": 0})
    assert out["clean_comments"]["version"] == 3
    assert tables.digests(tmp_path, "clean_comments") == tables.digests(tmp_path, "clean_comments", 0)
    assert tables.read(tmp_path, "clean_comments", 2).num_rows == 4  # nothing was deleted
    latest = versions.latest(tmp_path, "clean_comments")
    assert latest["rolled_back_to"] == 0 and latest["table_version"] == {"clean_comments": 3}


def _cli(root, *args):
    return subprocess.run([sys.executable, "-m", "lcaffect_pipeline.versions_cli", "--lake", str(root), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_the_cli_lists_versions_and_refuses_bad_input(tmp_path) -> None:
    empty = _cli(tmp_path, "list")
    assert empty.returncode == 1 and "no versioned tables" in empty.stderr
    _three_versions(tmp_path)
    listed = _cli(tmp_path, "list")
    assert listed.returncode == 0 and listed.stdout.count("\n  v") == 3
    for args, message in ((("rollback", "clean_comments=x"), "TABLE=VERSION"), (("rollback", "nope=1"), "no versioned table"),
                          (("sql", "SELECT 1", "--as-of", "clean_comments=9"), "no version 9"),
                          (("lineage", "ablation_report"), "has no manifest")):
        bad = _cli(tmp_path, *args)
        assert bad.returncode != 0 and message in bad.stderr, (args, bad.stderr)
    dry = _cli(tmp_path, "retain", "--keep-last", "1", "--dry-run")
    assert dry.returncode == 0 and "would free versions [1]" in dry.stdout
    assert tables.read(tmp_path, "clean_comments", 1).num_rows == 3  # a dry run deletes nothing


@pytest.mark.slow
def test_tables_versions_and_retention_on_the_s3_server(tmp_path, monkeypatch) -> None:
    from s3_lake import s3_env, s3_server

    monkeypatch.setenv("LCAFFECT_SCRATCH", str(tmp_path / "scratch"))
    with s3_server() as env, s3_env(env) as fs:
        root = f"s3://{env['LCAFFECT_S3_BUCKET']}/versions-test"
        _three_versions(root)
        assert tables.read(root, "clean_comments", 0).num_rows == 2
        assert tables.read(root, "clean_comments").num_rows == 4
        from lcaffect_pipeline.corpus import connect_as_of

        count = "SELECT count(*) FROM clean_comments"
        assert connect_as_of(root, {"clean_comments": 1}).execute(count).fetchone()[0] == 3
        middle = tables.files(root, "clean_comments", 1)[naming.safe_name("x")]
        assert fs.exists(middle)
        report = retention.run(root, keep_last=1)
        assert report["tables"]["clean_comments"]["versions"] == [1] and not fs.exists(middle)
        assert retention.rollback(root, {"clean_comments": 0})["clean_comments"]["version"] == 3
        assert tables.read(root, "clean_comments").num_rows == 2
        assert versions.latest(root, "clean_comments")["rolled_back_to"] == 0


def test_the_retention_job_reports_what_it_freed(tmp_path) -> None:
    from lcaffect_pipeline.defs.resources import LakeResource
    from lcaffect_pipeline.definitions import defs

    _three_versions(tmp_path)
    job = defs.resolve_job_def("retention_job")
    result = job.execute_in_process(run_config={"ops": {"lake_retention": {"config": {"keep_last": 1}}}},
                                    resources={"lake": LakeResource(root=str(tmp_path))})
    assert result.success
    meta = result.get_step_success_events()[0]  # the one op
    report = result.output_for_node("lake_retention")
    assert report["tables"]["clean_comments"]["versions"] == [1] and report["files"] == 1
    mats = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    md = mats[0].event_specific_data.metadata["tables"].value
    assert "| clean_comments | [1] | [2] | [0] | 1 |" in md and meta.step_key == "lake_retention"
    assert defs.resolve_schedule_def("weekly_retention").default_status.value == "STOPPED"


# ---------------------------------------------------------------- leases and limits (issue 26, item 5)


def test_retention_keeps_what_a_lease_names_until_it_lapses(tmp_path) -> None:
    from lcaffect_pipeline import leases

    _three_versions(tmp_path)
    middle = tables.files(tmp_path, "clean_comments", 1)[naming.safe_name("x")]
    with leases.held(tmp_path, "pinned reader", versions={"clean_comments": [1]}):
        assert retention.plan(tmp_path, keep_last=1)["clean_comments"]["free"] == []
        assert retention.run(tmp_path, keep_last=1)["files"] == 0 and lake.as_path(middle).exists()
    leases.take(tmp_path, "crashed reader", versions={"clean_comments": [1]}, ttl_s=-1)  # lapsed
    assert retention.run(tmp_path, keep_last=1)["tables"]["clean_comments"]["versions"] == [1]
    assert not lake.as_path(middle).exists()


def test_a_stage_that_finds_its_file_in_the_lake_leases_it_until_the_commit(tmp_path) -> None:
    _three_versions(tmp_path)  # x: ["a"], ["a", "b"], ["a", "b", "c"]
    # a stage recomputes x's version-1 rows: the file exists (version 1 holds it), so it is not written
    digest = tables.write(tmp_path, "clean_comments", _comments("x", ["a", "b"]), "x")
    report = retention.run(tmp_path, keep_last=1)  # retention runs before the stage's collect step
    assert report["tables"]["clean_comments"]["versions"] == [1] and report["files"] == 0
    assert tables.commit(tmp_path, "clean_comments", {"x": digest}) == 3  # the file is still there
    assert tables.read(tmp_path, "clean_comments").num_rows == 3
    assert not list((tmp_path / "_leases").glob("*.json"))  # released by the commit


def test_an_unreadable_lease_stops_retention(tmp_path) -> None:
    from lcaffect_pipeline import leases

    _three_versions(tmp_path)
    (tmp_path / "_leases").mkdir(exist_ok=True)
    (tmp_path / "_leases" / "x.json").write_text("{trunc")
    with pytest.raises(leases.LeaseError, match="x.json"):
        retention.run(tmp_path, keep_last=1)
    assert tables.read(tmp_path, "clean_comments", 1).num_rows == 3


@pytest.mark.parametrize("args", [("--keep-last", "0"), ("--keep-last", "-1"), ("--max-age-days", "-1"),
                                  ("--max-age-days", "0"), ("--max-age-days", "nan")])
def test_the_cli_refuses_the_limits_the_job_refuses(tmp_path, args) -> None:
    _three_versions(tmp_path)
    bad = _cli(tmp_path, "retain", *args)
    assert bad.returncode == 2 and args[0].strip("-").replace("-", "_") in bad.stderr and "Traceback" not in bad.stderr
    assert tables.read(tmp_path, "clean_comments", 1).num_rows == 3  # nothing freed
    from lcaffect_pipeline.defs.retention import RetentionConfig

    with pytest.raises(Exception, match="greater than"):
        RetentionConfig(**{args[0].strip("-").replace("-", "_"): float(args[1])})


# ---------------------------------------------------------------- a damaged Delta log (issue 26, item 8)


def _truncate_last_log_entry(root) -> None:
    log = root / "clean_comments" / "_delta_log" / f"{2:020d}.json"
    log.write_text(log.read_text()[: len(log.read_text()) // 2])


def test_a_truncated_log_is_one_line_from_the_cli_and_the_repair_goes_back_to_the_last_readable_version(tmp_path) -> None:
    _three_versions(tmp_path)
    _truncate_last_log_entry(tmp_path)
    listed = _cli(tmp_path, "list")
    assert listed.returncode == 2 and "Traceback" not in listed.stderr, listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1
    assert "clean_comments" in listed.stderr and "from version 2" in listed.stderr and "repair clean_comments" in listed.stderr
    with pytest.raises(tables.DamagedTableError, match="last readable version 1"):
        tables.read(tmp_path, "clean_comments")
    repaired = _cli(tmp_path, "repair", "clean_comments")
    assert repaired.returncode == 0 and "now at version 1" in repaired.stdout, repaired.stderr
    assert list((tmp_path / "clean_comments" / "_delta_log_damaged").rglob(f"{2:020d}.json"))  # kept aside
    assert _cli(tmp_path, "list").returncode == 0
    assert tables.read(tmp_path, "clean_comments").num_rows == 3  # version 1: x has a, b; y has same
    # the stage's next run commits its videos again
    assert _refresh(tmp_path, {"x": ["a", "b", "c"], "y": ["same"]}) == 2
    assert tables.read(tmp_path, "clean_comments").num_rows == 4


def test_the_corpus_job_fails_at_its_first_step_on_a_damaged_log(tmp_path) -> None:
    import dagster as dg

    from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS_ASSETS

    from conftest import demo_resources

    _three_versions(tmp_path)
    _truncate_last_log_entry(tmp_path)
    result = dg.materialize(CORPUS_ASSETS, resources=demo_resources(tmp_path), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "video_catalogue" and "repair clean_comments" in str(failure.event_specific_data.error)
    assert not (tmp_path / "demo_world").exists() and not (tmp_path / "raw_comments").exists()  # no work was done


def test_a_pinned_query_from_the_cli_holds_a_lease_while_it_reads(tmp_path, monkeypatch, capsys) -> None:
    from lcaffect_pipeline import corpus, leases, versions_cli

    _three_versions(tmp_path)
    seen = []
    real = corpus.connect_as_of
    monkeypatch.setattr(corpus, "connect_as_of", lambda root, pins: seen.append(leases.active(root)[0]) or real(root, pins))
    assert versions_cli.main(["--lake", str(tmp_path), "sql", "SELECT count(*) FROM clean_comments",
                              "--as-of", "clean_comments=1"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "3"
    assert seen == [{"clean_comments": {1}}] and leases.active(tmp_path) == ({}, set())  # released after
