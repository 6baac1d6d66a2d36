"""Paths read from lake content (manifests, Delta actions, segment rows, shard indexes) stay in the
lake: ``lcaffect_ml.contracts.lakepaths.resolve`` and everything that reads or deletes through it."""

import os

import pytest

from lcaffect_ml.contracts.lakepaths import LakeContentError, relative, resolve


@pytest.mark.parametrize("value", ["../../victim/file", "shards/../../victim", "/etc/passwd", "file:///etc/passwd",
                                   "pipe:id > MARKER; cat x.tar", "s3://other-bucket/lake/x.tar",
                                   "http://attacker.example/x.tar", "", "a\x00b", "shards/..", "."])
def test_escapes_and_other_schemes_are_refused_naming_the_file(tmp_path, value) -> None:
    with pytest.raises(LakeContentError, match="index-1.json"):
        resolve(tmp_path / "lake", value, "shards/index-1.json", base="shards")


def test_relative_and_inside_paths_resolve_under_the_current_root(tmp_path) -> None:
    root = tmp_path / "lake"
    assert resolve(root, "v/1/v-00000.tar", "idx", base="shards") == str(root / "shards" / "v" / "1" / "v-00000.tar")
    # an absolute path inside the lake (a Delta log may name its files so) is kept
    assert resolve(root, str(root / "shards" / "x.tar"), "idx", base="shards") == str(root / "shards" / "x.tar")
    assert resolve(root, "shards/./a/../b.tar", "idx") == str(root / "shards" / "b.tar")
    assert relative(root, str(root / "a" / "b.json")) == "a/b.json" and relative(root, str(tmp_path / "x")) is None
    # a sibling folder whose name starts like the lake's is not inside it
    assert relative(root, str(tmp_path / "lake-copy" / "a")) is None


def test_a_path_must_stay_inside_its_folder(tmp_path) -> None:
    with pytest.raises(LakeContentError, match="not inside shards/"):
        resolve(tmp_path, "_manifests/x.json", "segments file", inside="shards")
    with pytest.raises(LakeContentError, match="not inside shards/"):
        resolve(tmp_path, "shards", "segments file", inside="shards")  # never the folder itself


def test_a_symbolic_link_out_of_the_lake_is_refused(tmp_path) -> None:
    root = tmp_path / "lake"
    (root / "shards").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    os.symlink(tmp_path / "victim", root / "shards" / "v")
    with pytest.raises(LakeContentError, match="symbolic link"):
        resolve(root, "v/x.tar", "idx", base="shards")


def test_an_object_store_lake_admits_only_its_own_urls() -> None:
    root = "s3://bucket/lake"
    assert resolve(root, "shards/v/x.tar", "idx") == "s3://bucket/lake/shards/v/x.tar"
    assert resolve(root, "s3://bucket/lake/shards/x.tar", "idx") == "s3://bucket/lake/shards/x.tar"
    for bad in ("s3://bucket/lake-other/x.tar", "s3://bucket/x.tar", "gs://bucket/lake/x.tar", "/bucket/lake/x.tar",
                "../x.tar"):
        with pytest.raises(LakeContentError):
            resolve(root, bad, "idx")


# ---------------------------------------------------------------- the attacks of issue 26, item 2

import datetime as dt  # noqa: E402
import json  # noqa: E402

import pyarrow as pa  # noqa: E402

from lcaffect_pipeline import lake, retention, schema, tables  # noqa: E402


def _comments(vid: str, texts: list[str]) -> pa.Table:
    rows = [dict(platform="bilibili", video_id=vid, comment_id=str(i), offset_ms=1000 * i, text=t, mode="scroll",
                 superchat=False, source_file="f", posted_at=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
            for i, t in enumerate(texts)]
    return pa.Table.from_pylist(rows, schema=schema.CLEAN_COMMENTS_SCHEMA)


def _refresh(root, texts_by_video: dict[str, list[str]], table: str = "clean_comments") -> int:
    changes = {vid: tables.write(root, table, _comments(vid, texts), vid) for vid, texts in texts_by_video.items()}
    return tables.commit(root, table, changes)


def _log_entry(root, table: str, version: int, actions: list[dict]) -> None:
    """Append a hand-made Delta log entry (what an attacker with write access to the lake can do)."""
    log = lake.local_path(tables.table_path(root, table), "test") / "_delta_log" / f"{version:020d}.json"
    now = int(dt.datetime.now().timestamp() * 1000)
    body = [{"commitInfo": {"timestamp": now, "operation": "WRITE"}}, *actions]
    log.write_text("\n".join(json.dumps(a) for a in body) + "\n")


def _victim(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("precious")
    return victim / "file"


def test_retention_never_deletes_a_delta_action_path_outside_the_lake(tmp_path) -> None:
    root = tmp_path / "deep" / "lake"
    victim = _victim(tmp_path)
    _refresh(root, {"x": ["a"]})
    now = int(dt.datetime.now().timestamp() * 1000)
    evil = os.path.relpath(victim, root / "clean_comments")
    _log_entry(root, "clean_comments", 1, [{"add": {"path": evil, "size": 8, "partitionValues": {"video_key": "z"},
                                                    "modificationTime": now, "dataChange": True}}])
    _log_entry(root, "clean_comments", 2, [{"remove": {"path": evil, "deletionTimestamp": now, "dataChange": True,
                                                       "partitionValues": {"video_key": "z"}}}])
    with pytest.raises(LakeContentError, match="_delta_log"):
        retention.run(root, keep_last=1)
    assert victim.read_text() == "precious"


def test_retention_never_removes_a_shard_folder_a_segments_row_puts_outside_the_lake(tmp_path) -> None:
    root = tmp_path / "deep" / "lake"
    victim = _victim(tmp_path)
    segments_file = root / "segments" / "video_key=v" / "bad.parquet"
    segments_file.parent.mkdir(parents=True)
    evil = os.path.relpath(victim.parent, root / "shards") + "/x-00000.tar"
    lake.write_parquet(pa.table({"shard": ["v/1/v-00000.tar", evil]}), segments_file)
    with pytest.raises(LakeContentError, match="segments"):
        retention._shard_folders_named(root, {str(segments_file)})
    assert victim.read_text() == "precious"


# ---------------------------------------------------------------- shard indexes (item 1)


def test_a_shard_index_names_only_shards_of_its_own_lake(tmp_path) -> None:
    from lcaffect_ml.data import ShardIndexError, load_shard_index
    from lcaffect_ml.synthetic import write_synthetic_shards

    index = write_synthetic_shards(tmp_path / "lake", n_videos=1, segments_per_video=2)
    good = json.loads(index.read_text())
    assert not os.path.isabs(good[0]["url"])  # indexes store lake-relative paths
    assert load_shard_index(index)[0].url == str(index.parent / good[0]["url"])
    marker = tmp_path / "MARKER"
    other = write_synthetic_shards(tmp_path / "other", n_videos=1, segments_per_video=2)
    for url in (f"pipe:id > {marker}; cat {index.parent / good[0]['url']}", str(other.parent / good[0]["url"]),
                "http://attacker.example/x.tar", "../../outside.tar", f"file://{other.parent / good[0]['url']}"):
        bad = index.with_name("index-bad.json")
        bad.write_text(json.dumps([{**good[0], "url": url}]))
        with pytest.raises(ShardIndexError, match="index-bad.json"):
            load_shard_index(bad)
    assert not marker.exists()


# ---------------------------------------------------------------- manifests and state files (item 9)

from lcaffect_pipeline import stages, versions  # noqa: E402


def test_manifests_store_lake_relative_paths_and_resolve_them_in_the_lake_they_are_read_from(tmp_path) -> None:
    root, copy = tmp_path / "lake", tmp_path / "copy"
    index = str(root / "shards" / "index-1.json")
    stored = versions.write_manifest(root, "training_shards", {"index": index, "results": {"v": {"metrics": {"path": str(
        root / "videos" / "v.mp4")}}}, "source": str(tmp_path / "catalogue.csv")})
    assert stored["index"] == index  # the caller's value, as it gave it
    on_disk = json.loads(versions.latest_path(root, "training_shards").read_text())
    assert on_disk["index"] == "shards/index-1.json" and on_disk["source"] == str(tmp_path / "catalogue.csv")
    assert on_disk["lake_paths"] == [["index"], ["results", "v", "metrics", "path"]]
    import shutil

    shutil.copytree(root, copy)
    read = versions.load(copy, "training_shards")
    assert read["index"] == str(copy / "shards" / "index-1.json") and "lake_paths" not in read
    assert read["results"]["v"]["metrics"]["path"] == str(copy / "videos" / "v.mp4")
    assert versions.load(copy, "training_shards", stored["manifest_id"])["index"] == read["index"]
    # a stage's per-video state file too
    stages.save_state(root, "videos", stages.VideoResult("v", "done", metrics={"path": str(root / "videos" / "v.mp4")}))
    shutil.copytree(root / "_state", copy / "_state")
    assert stages.load_state(copy, "videos", "v")["metrics"]["path"] == str(copy / "videos" / "v.mp4")


def test_a_manifest_pointing_out_of_the_lake_is_refused_naming_it(tmp_path) -> None:
    root = tmp_path / "lake"
    versions.write_manifest(root, "training_shards", {"index": "x"})
    path = versions.latest_path(root, "training_shards")
    path.write_text(json.dumps({"index": "../../etc/passwd", "lake_paths": [["index"]], "manifest_id": "m"}))
    with pytest.raises(LakeContentError, match="training_shards.json"):
        versions.latest(root, "training_shards")


def test_lineage_reads_only_manifests_inside_the_manifests_folder(tmp_path) -> None:
    root = tmp_path / "lake"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "m.json").write_text(json.dumps({"table_version": {"segments": 9}}))
    model = versions.write_manifest(root, "v2lc_encoder", {"reads": {"../../outside": "m"}})
    with pytest.raises(LakeContentError, match="reads"):
        versions.lineage(root, "v2lc_encoder", model["manifest_id"])
    with pytest.raises(LakeContentError):
        versions.load(root, "../../outside", "m")


def test_a_lake_written_with_absolute_paths_is_upgraded_by_the_cli(tmp_path) -> None:
    import subprocess
    import sys

    from conftest import ROOT

    old, moved = tmp_path / "old", tmp_path / "moved"
    legacy = {"index": str(old / "shards" / "index-1.json"), "manifest_id": "20260101T000000000000Z-abcdefabcdef"}
    for path in (versions.latest_path(moved, "training_shards"),
                 versions.manifest_dir(moved, "training_shards") / f"{legacy['manifest_id']}.json",
                 moved / "_state" / "videos" / "v.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(legacy))
    read = versions.latest(moved, "training_shards")["index"]  # another lake's path: nothing reads it
    with pytest.raises(LakeContentError, match="outside the lake"):
        resolve(moved, read, "training_shards.json")
    run = subprocess.run([sys.executable, "-m", "lcaffect_pipeline.versions_cli", "--lake", str(moved), "upgrade",
                          "--from", str(old)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.startswith("3 "), run.stderr
    assert versions.latest(moved, "training_shards")["index"] == str(moved / "shards" / "index-1.json")
    assert versions.load(moved, "training_shards", legacy["manifest_id"])["manifest_id"] == legacy["manifest_id"]
    assert versions.upgrade(moved, old) == 0  # done once


def test_a_lake_naming_its_own_files_by_absolute_path_is_refused_until_upgraded(tmp_path) -> None:
    from lcaffect_pipeline import versions_cli

    root = tmp_path / "lake"
    stored = {"index": str(root / "shards" / "index-1.json"), "manifest_id": "20260101T000000000000Z-abcdefabcdef"}
    for path in (versions.latest_path(root, "training_shards"), stages.state_path(root, "videos", "v")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored))
    with pytest.raises(LakeContentError, match="by absolute path") as refused:
        versions.latest(root, "training_shards")
    assert "training_shards.json" in str(refused.value) and "versions_cli --lake LAKE upgrade" in str(refused.value)
    assert stages.load_state(root, "videos", "v") is None  # a state file refused only costs a recomputation
    assert versions_cli.main(["--lake", str(root), "upgrade"]) == 0
    assert versions.latest(root, "training_shards")["index"] == stored["index"]
    assert stages.load_state(root, "videos", "v")["index"] == stored["index"]


def test_manifests_and_leases_on_an_object_store_lake() -> None:
    from lcaffect_pipeline import leases

    root = lake.as_path("memory://lcaffect-test/h6-lake")
    copy = lake.as_path("memory://lcaffect-test/h6-copy")
    versions.write_manifest(root, "training_shards", {"index": f"{root}/shards/index-1.json"})
    stored = versions.latest_path(root, "training_shards").read_text()
    assert json.loads(stored)["index"] == "shards/index-1.json"
    versions.latest_path(copy, "training_shards").write_text(stored)
    assert versions.latest(copy, "training_shards")["index"] == "memory://lcaffect-test/h6-copy/shards/index-1.json"
    leases.take(root, "reader", versions={"segments": [2]}, files=[f"{root}/segments/a.parquet"])
    assert leases.active(root) == ({"segments": {2}}, {f"{root}/segments/a.parquet"})
    leases.release(root, "reader")
    assert leases.active(root) == ({}, set())


def test_shard_folders_and_sidecars_name_only_the_lakes_shards(tmp_path) -> None:
    from lcaffect_pipeline import shards

    root = tmp_path / "lake" / "shards"
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shards.json").write_text(json.dumps({"shards": [{"url": "/etc/passwd"}]}))
    with pytest.raises(LakeContentError, match="version folders"):
        shards.write_shard_index(root, ["../../outside"])
    folder = root / "v" / "1"
    folder.mkdir(parents=True)
    (folder / "shards.json").write_text(json.dumps({"video_id": "v", "segments": "h", "shards": [
        {"url": "../../../outside/shards.json", "bytes": 1}]}))
    assert shards.complete_version(root, "v", "1") is None  # not reused: written again
