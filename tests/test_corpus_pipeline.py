"""The corpus assets through the real Dagster machinery: materialize, checks, re-runs, CLI."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from lcaffect_pipeline import defs
from lcaffect_pipeline.defs.automation import catalogue_changed, daily_corpus_refresh
from lcaffect_pipeline.defs.checks import CHECKS
from lcaffect_pipeline.defs.corpus_assets import ASSETS
from lcaffect_pipeline.defs.resources import CatalogueResource, RunScope
from lcaffect_pipeline.demo import demo_comments

from conftest import ROOT, demo_resources, fixture_path, manifest, need_ffmpeg

N_VIDEOS = 5


def resources(root: Path, **scope) -> dict:
    return demo_resources(root, scope=RunScope(**scope), catalogue=CatalogueResource(demo=True, demo_videos=N_VIDEOS))





def versions(result) -> dict[str, str]:
    out = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.step_materialization_data.materialization
        out[mat.asset_key.to_user_string()] = mat.tags["dagster/data_version"]
    return out


def test_definitions_resolve() -> None:
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"corpus_job", "full_pipeline"}
    assert defs.resolve_schedule_def("daily_corpus_refresh")
    assert defs.resolve_sensor_def("catalogue_changed")
    repo = defs.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} >= {
        "video_catalogue", "raw_comments", "clean_comments", "corpus_catalog"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    need_ffmpeg()
    root = tmp_path_factory.mktemp("lake")
    first = dg.materialize([*ASSETS, *CHECKS], resources=resources(root))
    assert first.success
    return root, first


def test_demo_corpus_materialises(demo_run) -> None:
    root, result = demo_run
    expected = sum(len(demo_comments(i)) for i in range(N_VIDEOS))
    raw = manifest(root, "raw_comments")
    assert raw["rows"] == expected and raw["failed"] == 0 and raw["done"] == N_VIDEOS
    clean = manifest(root, "clean_comments")
    assert 0 < clean["rows"] < expected  # cleaning removed duplicates and noise, kept the rest
    checks = result.get_asset_check_evaluations()
    # The comment files do not say how long the demo videos are, and no probe ran: the offsets
    # check has nothing to compare with, so it says so instead of passing.
    blind = [c for c in checks if c.check_name == "offsets_in_video"]
    assert len(blind) == 2 and not any(c.passed for c in blind)
    assert all("no comment has a known video duration" in c.metadata["reason"].value for c in blind)
    others = [c for c in checks if c.check_name != "offsets_in_video"]
    assert others and all(c.passed for c in others), [(c.check_name, c.asset_key, {k: v.value for k, v in c.metadata.items()}) for c in others if not c.passed]
    con = duckdb.connect(str(root / "corpus.duckdb"), read_only=True)
    assert con.execute("SELECT videos FROM dataset_card WHERE dimension='all'").fetchone()[0] == N_VIDEOS
    platforms = {r[0] for r in con.execute("SELECT value FROM dataset_card WHERE dimension='platform'").fetchall()}
    assert platforms == {"bilibili", "niconico", "youtube", "acfun"}  # the five demo formats
    # authors are salted hashes, never the raw demo user ids
    authors = con.execute("SELECT DISTINCT author FROM raw_comments WHERE author IS NOT NULL").fetchall()
    assert authors and not any(a[0].startswith("user") for a in authors)


def test_rerun_with_nothing_changed_is_a_noop(demo_run) -> None:
    root, first = demo_run
    second = dg.materialize([*ASSETS], resources=resources(root))
    assert second.success
    assert manifest(root, "raw_comments")["skipped"] == N_VIDEOS
    assert manifest(root, "clean_comments")["skipped"] == N_VIDEOS
    assert versions(second) == versions(first)


def test_one_video_can_be_rerun_alone(demo_run) -> None:
    root, first = demo_run
    result = dg.materialize([*ASSETS], resources=resources(root, videos=["demo_02"], force=True))
    assert result.success
    raw = manifest(root, "raw_comments")
    assert raw["results"]["demo_02"]["status"] == "done"
    assert {r["status"] for v, r in raw["results"].items() if v != "demo_02"} == {"skipped"}
    assert versions(result)["raw_comments"] == versions(first)["raw_comments"]  # same content


def test_bad_video_is_reported_and_the_batch_goes_on(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue.yaml"
    good = fixture_path("bilibili", "xml", "18678311.xml")
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"\x00\x01 not a comment file")
    catalogue.write_text(f"videos:\n  - {{video_id: good, platform: bilibili, source: {good}}}\n  - {{video_id: bad, platform: bilibili, source: {broken}}}\n")
    res = resources(tmp_path / "lake")
    res["catalogue"] = CatalogueResource(path=str(catalogue))
    result = dg.materialize([*ASSETS], resources=res)
    assert result.success
    raw = manifest(tmp_path / "lake", "raw_comments")
    assert raw["results"]["good"]["status"] == "done" and raw["results"]["good"]["rows"] > 0
    assert raw["results"]["bad"]["status"] == "failed"
    assert "broken.xml" in raw["results"]["bad"]["reason"]


def test_daily_schedule_requests_a_refresh() -> None:
    ctx = dg.build_schedule_context(scheduled_execution_time=__import__("datetime").datetime(2026, 11, 25, 4))
    req = daily_corpus_refresh(ctx)
    assert req.run_config["resources"]["scope"]["config"]["refresh"] is True
    assert req.run_key == "refresh-2026-11-25"


def test_sensor_fires_on_a_changed_catalogue(tmp_path: Path) -> None:
    cat = tmp_path / "c.yaml"
    cat.write_text("videos: []\n")
    ctx = dg.build_sensor_context(resources={"catalogue": CatalogueResource(path=str(cat))})
    first = catalogue_changed(ctx)
    assert isinstance(first, dg.RunRequest)
    ctx2 = dg.build_sensor_context(cursor=ctx.cursor, resources={"catalogue": CatalogueResource(path=str(cat))})
    assert isinstance(catalogue_changed(ctx2), dg.SkipReason)
    cat.write_text("videos: [{source: x.xml}]\n")
    assert isinstance(catalogue_changed(ctx2), dg.RunRequest)


@pytest.mark.slow
def test_dagster_job_execute_from_the_shell(tmp_path: Path) -> None:
    need_ffmpeg()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "LCAFFECT_LAKE": str(tmp_path / "lake")}
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("resources:\n  catalogue:\n    config: {demo: true, demo_videos: 3}\n  lake:\n    config: {author_salt: s}\n  crawler:\n    config: {min_interval_s: 0}\n")
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "job", "execute", "-m", "lcaffect_pipeline", "-j", "corpus_job", "-c", str(cfg)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "lake" / "corpus.duckdb").exists()
    assert manifest(tmp_path / "lake", "clean_comments")["videos"] == 3
