"""The corpus assets through the real Dagster machinery: materialize, checks, re-runs, CLI."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from lcaffect_pipeline.definitions import defs
from lcaffect_pipeline.defs.schedules import daily_corpus_refresh
from lcaffect_pipeline.defs.sensors import catalogue_changed
from lcaffect_pipeline.defs.checks import CHECKS
from lcaffect_pipeline.defs.corpus_assets import ASSETS
from lcaffect_pipeline.defs.resources import CatalogueResource, RunScope
from lcaffect_pipeline.demo_world import demo_comments

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
    proc = subprocess.run([str(dagster), "job", "execute", "-m", "lcaffect_pipeline.definitions", "-j", "corpus_job", "-c", str(cfg)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "lake" / "corpus.duckdb").exists()
    assert manifest(tmp_path / "lake", "clean_comments")["videos"] == 3


def _add_xml_comments(path: Path, n: int) -> None:
    """Append ``n`` new comments to a Bilibili XML file, the way a fresh download would differ."""
    new = "".join(f'<d p="{i + 1}.5,1,25,16777215,1600000000,0,abcd{i:04d},9900000{i:03d},1">新的弹幕 {i}</d>' for i in range(n))
    path.write_text(path.read_text(encoding="utf-8").replace("</i>", new + "</i>"), encoding="utf-8")


def _pb_segment(n: int) -> bytes:
    from lcaffect_pipeline.formats.bili_proto import DmSegMobileReply

    reply = DmSegMobileReply()
    for i in range(n):
        e = reply.elems.add()
        e.id, e.idStr, e.progress, e.mode, e.content, e.ctime = 770000 + i, str(770000 + i), 1000 * (i + 1), 1, f"新段 {i}", 1600000000
        e.weight = 10  # low-weight comments are cleaned away
    return reply.SerializeToString()


def test_a_changed_local_file_or_folder_is_picked_up_by_the_next_run(tmp_path: Path) -> None:
    import shutil

    from conftest import fixture_path

    xml = tmp_path / "2170097.xml"
    shutil.copy(fixture_path("bilibili", "xml", "2170097.xml"), xml)
    folder = tmp_path / "18678311"
    shutil.copytree(fixture_path("bilibili", "protobuf", "18678311"), folder)
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(f"videos:\n  - {{source: {xml}, platform: bilibili}}\n  - {{source: {folder}, platform: bilibili}}\n")
    res = resources(tmp_path / "lake")
    res["catalogue"] = CatalogueResource(path=str(catalogue))
    root = tmp_path / "lake"

    def run():
        result = dg.materialize([*ASSETS], resources=res)
        assert result.success
        raw, clean = manifest(root, "raw_comments")["results"], manifest(root, "clean_comments")["results"]
        return ({v: (r["status"], r["rows"]) for v, r in raw.items()},
                {v: r["status"] for v, r in clean.items()}, versions(result))

    raw, _, first = run()
    assert raw == {"2170097": ("done", 973), "18678311": ("done", 5)}

    raw, clean, again = run()  # nothing changed: everything skips, same data versions
    assert {s for s, _ in raw.values()} == {"skipped"} and set(clean.values()) == {"skipped"} and again == first

    os.utime(xml, ns=(1, 1_000_000_000))  # touched, same bytes: re-read, still skipped
    raw, clean, again = run()
    assert {s for s, _ in raw.values()} == {"skipped"} and again == first

    _add_xml_comments(xml, 20)
    raw, clean, changed = run()
    assert raw == {"2170097": ("done", 993), "18678311": ("skipped", 5)}
    assert clean == {"2170097": "done", "18678311": "skipped"}
    assert changed["raw_comments"] != first["raw_comments"] and changed["corpus_catalog"] != first["corpus_catalog"]

    (folder / "18678311-3.pb").write_bytes(_pb_segment(3))  # one file inside the folder changes
    raw, clean, changed_again = run()
    assert raw == {"2170097": ("skipped", 993), "18678311": ("done", 8)}
    assert clean == {"2170097": "skipped", "18678311": "done"}
    assert changed_again["clean_comments"] != changed["clean_comments"]
    con = duckdb.connect(str(root / "corpus.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM raw_comments").fetchone()[0] == 993 + 8
