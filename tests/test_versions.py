"""The versioned lake end to end (issue 16): a V2LC encoder trained, then two refreshes that change
comments; the first corpus version stays readable and hash-equal to what the encoder read, the
encoder's lineage resolves to it, a reproduction run on it gives the same shards, retention frees
what nothing kept was built from, and a rollback makes an old version current."""

import json
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from lcaffect_pipeline import corpus, lake, leases, retention, tables, versions
from lcaffect_pipeline.defs.checks import CHECKS
from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS_ASSETS
from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS_ASSETS
from lcaffect_pipeline.defs.model_assets import ASSETS as MODEL_ASSETS
from lcaffect_pipeline.defs.resources import CatalogueResource, RunScope
from lcaffect_pipeline.demo_world import generate_demo_world

from conftest import ROOT, demo_resources, manifest, need_ffmpeg
from lcaffect_ml.contracts import naming

N_VIDEOS = 4
CHANGED = "demo_00"  # the demo's Bilibili XML video: its comment file is edited between refreshes


def _resources(root: Path, catalogue: Path, **scope) -> dict:
    return demo_resources(root, catalogue=CatalogueResource(path=str(catalogue)), scope=RunScope(**scope))


def _add_comment(world: Path, text: str) -> None:
    xml = next((world / "comments" / CHANGED).glob("*.xml"))
    body = xml.read_text(encoding="utf-8")
    xml.write_text(body.replace("</i>", f'<d p="1.00000,1,25,16777215,1700000000,0,abc,{abs(hash(text))},10">{text}</d></i>'),
                   encoding="utf-8")


def _index(value: dict) -> list[tuple[str, str]]:
    return sorted((e["url"], e["sha256"]) for e in json.loads(Path(value["index"]).read_text()))


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Run 1 trains the encoder on corpus version 0; two refreshes then change one video's comments."""
    need_ffmpeg()
    base = tmp_path_factory.mktemp("versions")
    world, root = base / "world", base / "lake"
    catalogue = generate_demo_world(world, n_videos=N_VIDEOS)
    first = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=_resources(root, catalogue))
    assert first.success
    state = {"root": root, "world": world, "catalogue": catalogue,
             "encoder": manifest(root, "v2lc_encoder"), "shards": manifest(root, "training_shards"),
             "clean_v0": tables.version(root, "clean_comments")}
    state["index_v0"] = _index(state["shards"])
    for text in ("第一次刷新 new comment", "第二次刷新 another one"):
        _add_comment(world, text)
        assert dg.materialize(CORPUS_ASSETS, resources=_resources(root, catalogue, refresh=True)).success
    # the clips follow the new corpus: demo_00's segments and shards get a new version
    assert dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS], resources=_resources(root, catalogue),
                          selection=["segments", "training_shards"]).success
    state["index_now"] = _index(manifest(root, "training_shards"))
    return state


def test_two_refreshes_add_versions_and_keep_the_first_readable(history) -> None:
    root, v0 = history["root"], history["clean_v0"]
    log = tables.versions(root, "clean_comments")
    assert [h["version"] for h in log] == [v0, v0 + 1, v0 + 2]  # one version per refresh that changed something
    first, now = tables.read(root, "clean_comments", v0), tables.read(root, "clean_comments")
    assert now.num_rows == first.num_rows + 2
    changed = naming.safe_name(CHANGED)
    before, after = tables.digests(root, "clean_comments", v0), tables.digests(root, "clean_comments")
    assert {k for k in before if before[k] != after[k]} == {changed}  # only that video's file was replaced
    # The first version is, by hash, what the encoder's segments read: the lineage names the clean
    # manifest, whose per-video hashes are the files of version 0.
    rows = versions.lineage(root, "v2lc_encoder", history["encoder"]["manifest_id"])
    clean = next(r for r in rows if r["asset"] == "clean_comments")
    read = versions.load(root, "clean_comments", clean["manifest_id"])["results"]
    assert {naming.safe_name(v): r["output_hash"] for v, r in read.items()} == before
    assert all(lake.table_hash(tables.read_file(root, "clean_comments", v, r["output_hash"])) == r["output_hash"]
               for v, r in read.items())


def test_a_models_lineage_resolves_to_its_corpus_version(history) -> None:
    root = history["root"]
    rows = versions.lineage(root, "v2lc_encoder")
    assert [r["asset"] for r in rows][:3] == ["v2lc_encoder", "training_shards", "segments"]
    found = versions.table_versions(rows)
    assert found["clean_comments"] == [history["clean_v0"]]
    assert found["raw_comments"] == [0] and found["catalogue"] == [0]
    assert tables.version(root, "clean_comments") == history["clean_v0"] + 2  # the corpus moved on since
    # The same from the shell, as JSON.
    out = subprocess.run([sys.executable, "-m", "lcaffect_pipeline.versions_cli", "--lake", str(root), "lineage",
                          "v2lc_encoder", "--json"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout)["table_versions"]["clean_comments"] == [history["clean_v0"]]


def test_the_catalog_queries_the_corpus_as_of_a_version(history) -> None:
    root, v0 = history["root"], history["clean_v0"]
    sql = "SELECT count(*) FROM clean_comments WHERE video_id = 'demo_00'"
    then = corpus.connect_as_of(root, {"clean_comments": v0}).execute(sql).fetchone()[0]
    now = corpus.connect_as_of(root).execute(sql).fetchone()[0]
    assert now == then + 2
    out = subprocess.run([sys.executable, "-m", "lcaffect_pipeline.versions_cli", "--lake", str(root), "sql", sql,
                          "--as-of", f"clean_comments={v0}"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.splitlines()[1] == str(then)


def test_a_reproduction_on_the_old_version_gives_the_same_shards_and_model(history) -> None:
    root = history["root"]
    changed = {url for url, _ in history["index_now"]} - {url for url, _ in history["index_v0"]}
    assert changed and all(url.startswith(f"{CHANGED}/") for url in changed)  # the refresh moved demo_00 on
    pinned = json.dumps({"clean_comments": history["clean_v0"]})
    res = _resources(root, history["catalogue"], as_of_json=pinned)
    result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=res,
                            selection=["segments", "training_shards", "v2lc_encoder"])
    assert result.success
    again = manifest(root, "training_shards")
    assert _index(again) == history["index_v0"]  # same shard files, byte for byte
    encoder = manifest(root, "v2lc_encoder")
    assert encoder["output_dir"] == history["encoder"]["output_dir"]  # the same run: its weights are reused
    assert versions.table_versions(versions.lineage(root, "v2lc_encoder"))["clean_comments"] == [history["clean_v0"]]
    assert history["clean_v0"] in leases.active(root)[0]["clean_comments"]  # the pinned run leased what it read


def test_a_pin_to_a_version_the_table_lacks_fails_the_run_and_names_it(history) -> None:
    res = _resources(history["root"], history["catalogue"], as_of_json='{"clean_comments": 99}')
    result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS], resources=res, selection=["segments"], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "clean_comments" in str(failure.event_specific_data.error) and "99" in str(failure.event_specific_data.error)
    with pytest.raises(ValueError, match="is not a table"):
        RunScope(as_of_json='{"comments": 1}')


def test_retention_frees_unreferenced_versions_and_keeps_referenced_ones(history) -> None:
    root, v0 = history["root"], history["clean_v0"]
    middle = tables.files(root, "clean_comments", v0 + 1)[naming.safe_name(CHANGED)]
    size = Path(middle).stat().st_size
    planned = retention.run(root, keep_last=1, dry_run=True)
    assert planned["tables"]["clean_comments"]["versions"] == [v0 + 1] and lake.as_path(middle).exists()
    report = retention.run(root, keep_last=1)
    clean = report["tables"]["clean_comments"]
    assert clean["versions"] == [v0 + 1] and clean["referenced"] == [v0] and clean["kept"] == [v0 + 2]
    assert clean["files"] == 1 and clean["bytes"] == size and not Path(middle).exists()
    # segments: version 1 (from the refreshed comments) is neither current nor what the encoder
    # read; its shard folder goes with it, the encoder's stays
    segs = report["tables"]["segments"]
    assert segs["versions"] == [1] and report["shard_folders"] == 1
    shards = root / "shards"
    assert all((shards / url).is_file() for url, _ in history["index_v0"])
    assert not any((shards / url).exists() for url, _ in set(history["index_now"]) - set(history["index_v0"]))
    assert tables.read(root, "clean_comments", v0).num_rows > 0  # the encoder's version is whole
    with pytest.raises(tables.VersionError, match="freed by retention"):
        tables.read(root, "clean_comments", v0 + 1)
    assert retention.run(root, keep_last=1)["files"] == 0  # nothing left to free


def test_rollback_makes_an_old_version_current_and_the_next_run_reads_it(history) -> None:
    root, v0 = history["root"], history["clean_v0"]
    out = subprocess.run([sys.executable, "-m", "lcaffect_pipeline.versions_cli", "--lake", str(root), "rollback",
                          f"clean_comments={v0}"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    current = tables.version(root, "clean_comments")
    assert re.search(rf"clean_comments: version {v0} is current again, as version {current}", out.stdout)
    assert tables.digests(root, "clean_comments") == tables.digests(root, "clean_comments", v0)
    latest = manifest(root, "clean_comments")
    assert latest["rolled_back_to"] == v0 and latest["table_version"] == {"clean_comments": current}
    assert {naming.safe_name(v): r["output_hash"] for v, r in latest["results"].items()} == tables.digests(root, "clean_comments", v0)
    assert not list((root / "_state" / "clean_comments").glob("*.json"))  # the next run recomputes
    bad = subprocess.run([sys.executable, "-m", "lcaffect_pipeline.versions_cli", "--lake", str(root), "rollback",
                          "clean_comments=12345"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "12345" in bad.stderr
    assert tables.version(root, "clean_comments") == current  # a refused rollback changed nothing


def test_a_copied_lake_trains_and_reads_on_its_own_with_the_original_moved_away(history, tmp_path) -> None:
    """Issue 26 item 9: manifests, state files and indexes hold lake-relative paths."""
    import shutil

    from lcaffect_ml.contracts.lakepaths import relative
    from lcaffect_ml.data import iter_raw_samples, load_shard_index
    from lcaffect_pipeline.defs.resources import LakeResource

    root, copy = history["root"], tmp_path / "copy"
    shutil.copytree(root, copy)
    away = root.with_name(root.name + "-away")
    root.rename(away)
    try:
        shards = manifest(copy, "training_shards")
        specs = load_shard_index(shards["index"])
        assert all(relative(copy, s.url) for s in specs)
        assert next(iter_raw_samples(specs[0].url))["__key__"]
        res = {**_resources(copy, history["catalogue"]), "lake": LakeResource(root=str(copy), author_salt="test-salt")}
        result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=res,
                                selection=["training_shards", "v2lc_encoder"])
        assert result.success
        encoder = manifest(copy, "v2lc_encoder")
        assert relative(copy, encoder["output_dir"]).startswith("models/v2lc/")
        assert (Path(encoder["output_dir"]) / "model.safetensors").exists()
    finally:
        away.rename(root)
    # with the original back in place, nothing the copy's manifests name is in it
    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    named = [s for asset in versions.assets(copy) for s in strings(versions.latest(copy, asset) or {})]
    assert named and not [s for s in named if relative(root, s)]
