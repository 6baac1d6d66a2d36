"""The lake on a real object store (SeaweedFS from scripts/s3_server.sh, through s3fs): the
pipeline's stages write every file there and keep nothing on the local disk, writes are atomic
for a reader, a copied lake still resolves its shards, and a store that refuses connections for
a while (a restart) is waited for, or, when it stays away, the re-run completes the work with
nothing lost or duplicated. Skipped with the reason where the server cannot start; a failure
under CI.
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any
import time

import dagster as dg
import numpy as np
import pytest

from conftest import ROOT, demo_resources, need_ffmpeg

from lcaffect_pipeline.versions import MANIFESTS
from s3_lake import RefusingProxy, listing, s3_env, s3_server, temporaries

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
N_VIDEOS = 4
STAGES = ("raw_comments", "clean_comments", "videos", "video_probes", "audio", "segments")


@pytest.fixture(scope="module")
def store():
    with s3_server() as env:
        yield env


@pytest.fixture
def s3(store, tmp_path, monkeypatch):
    """The store's file system, with the lake's scratch folder in tmp_path (checked empty after)."""
    monkeypatch.setenv("LCAFFECT_SCRATCH", str(tmp_path / "scratch"))
    with s3_env(store) as fs:
        yield fs, store["LCAFFECT_S3_BUCKET"]


def corpus_and_clips():
    from lcaffect_pipeline.defs.checks import CHECKS as COMMENT_CHECKS
    from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS, CHECKS
    from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS

    return [*CORPUS, *CLIPS, *CHECKS, *COMMENT_CHECKS]


def materialize(root: str, assets=None, selection=None) -> dg.ExecuteInProcessResult:
    from lcaffect_pipeline.defs.resources import CatalogueResource, LakeResource

    lake = LakeResource(root=root, author_salt="test-salt")
    res = demo_resources(None, lake=lake, catalogue=CatalogueResource(demo=True, demo_videos=N_VIDEOS))
    return dg.materialize(assets or corpus_and_clips(), resources=res, raise_on_error=False, selection=selection)


def manifests(fs, prefix: str) -> dict[str, dict]:
    """Each stage's latest manifest as the pipeline reads it: its lake-relative paths resolved
    against the lake's URL (``versions.latest``)."""
    from lcaffect_pipeline import versions

    return {s: versions.latest(f"s3://{prefix}", s) for s in (*STAGES, "training_shards")}


def outputs(fs, m: dict[str, dict]) -> dict[str, Any]:
    """Per stage, every video's status, rows and content hash: what a run made. The comment
    tables name their source files in the lake (the lake's URL), so their rows are compared;
    the segment rows name their shards' version folder, a hash of the inputs (those comments
    included), so the shards' bytes are compared instead: every shard's video, samples, sha256."""
    def made(stage, r):
        return ("failed" if r["status"] == "failed" else "ok", r.get("rows"),
                None if stage.endswith("comments") or stage == "segments" else r.get("output_hash"))

    index = json.loads(fs.cat(m["training_shards"]["index"].removeprefix("s3://")))
    shards = sorted((e["video_id"], e["samples"], e["sha256"]) for e in index)
    return {"shards": shards, **{s: {v: made(s, r) for v, r in m[s]["results"].items()} for s in STAGES}}


def layout(keys) -> set[str]:
    """The keys with the names that hash a lake's own content masked (shard version folders,
    content-addressed index and table files, manifest ids): the same for two lakes made alike."""
    return {re.sub(r"\d{8}T\d{12}Z-[0-9a-f]{12}|[0-9a-f]{16,}", "#", k) for k in keys}


@pytest.fixture(scope="module")
def reference(store, tmp_path_factory):
    """One uninterrupted corpus + clips run on the store: what every other run must equal."""
    need_ffmpeg()
    scratch = tmp_path_factory.mktemp("scratch")
    saved = os.environ.get("LCAFFECT_SCRATCH")
    os.environ["LCAFFECT_SCRATCH"] = str(scratch)
    try:
        with s3_env(store) as fs:
            prefix = f"{store['LCAFFECT_S3_BUCKET']}/reference"
            result = materialize(f"s3://{prefix}")
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            yield prefix, listing(fs, prefix), manifests(fs, prefix), scratch, result
    finally:
        if saved is None:
            os.environ.pop("LCAFFECT_SCRATCH", None)
        else:
            os.environ["LCAFFECT_SCRATCH"] = saved


def test_corpus_and_clips_run_with_the_lake_on_the_store(reference) -> None:
    prefix, keys, m, scratch, result = reference
    assert all(m[s]["failed"] == 0 and m[s]["done"] == N_VIDEOS for s in STAGES), {s: m[s]["failed"] for s in STAGES}
    assert m["training_shards"]["samples"] == m["segments"]["rows"] > 0
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks  # DuckDB and pyarrow read the comment tables from the store
    segments_file = f"segments/video_key=demo_00/{m['segments']['results']['demo_00']['output_hash']}.parquet"
    index = m["training_shards"]["index"]
    assert index.startswith(f"s3://{prefix}/shards/index-")  # content-addressed, on the store
    for part in ("demo_world/catalogue.yaml", "catalogue/_delta_log/00000000000000000000.json",
                 "clean_comments/_delta_log/00000000000000000000.json", "segments/_delta_log/00000000000000000000.json",
                 "corpus.duckdb", "shards/index.json", segments_file, index.removeprefix(f"s3://{prefix}/"),
                 "audio/demo_00.wav", "videos/demo_00.mp4", f"{MANIFESTS}/segments.json"):
        assert part in keys, part
    assert sum(k.startswith("shards/demo_") and k.endswith(".tar") for k in keys) == N_VIDEOS
    assert temporaries(keys) == []
    assert list(scratch.iterdir()) == []  # the local copies and DuckDB's file are gone
    assert not (ROOT / "s3:").exists()  # no local folder named after the URL


def test_the_corpus_catalog_reads_the_parquet_from_the_store(reference, store) -> None:
    from lcaffect_pipeline import corpus

    prefix, keys, m, scratch, _ = reference
    with s3_env(store) as fs:
        local = scratch / "corpus.duckdb"
        fs.get(f"{prefix}/corpus.duckdb", str(local))
        con = corpus.connect(f"s3://{prefix}", local)  # the views read s3:// through the registered fsspec
        try:
            comments = con.execute("SELECT count(*) FROM clean_comments").fetchone()[0]
            videos = con.execute("SELECT count(*) FROM videos").fetchone()[0]
        finally:
            con.close()
            local.unlink()
    assert videos == N_VIDEOS and comments == sum(r["rows"] for r in m["clean_comments"]["results"].values()) > 0


def test_a_copied_lake_resolves_its_shards_in_the_copy(reference, store) -> None:
    from lcaffect_ml.data import iter_raw_samples, load_shard_index

    prefix, keys, m, scratch, _ = reference
    with s3_env(store) as fs:
        copy = prefix.rsplit("/", 1)[0] + "/moved"
        fs.copy(f"{prefix}/shards", f"{copy}/shards", recursive=True)
        shards = load_shard_index(f"s3://{copy}/shards/index.json")
        assert shards and all(s.url.startswith(f"s3://{copy}/shards/") for s in shards)
        samples = sum(1 for s in shards for _ in iter_raw_samples(s.url))
        fs.rm(copy, recursive=True)
    assert samples == m["training_shards"]["samples"]


def test_a_write_that_fails_part_way_leaves_no_object(s3) -> None:
    from lcaffect_pipeline import lake

    fs, bucket = s3
    path = lake.as_path(f"s3://{bucket}/atomic/shard.tar")
    with pytest.raises(RuntimeError, match="disk full"):
        with lake.atomic_write(path) as fh:
            fh.write(os.urandom(12 * 2**20))  # past S3's 5 MiB part size
            raise RuntimeError("disk full")
    assert not fs.exists(f"{bucket}/atomic/shard.tar")
    lake.atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with lake.atomic_write(path) as fh:
            fh.write(b"new, half")
            raise RuntimeError("killed")
    assert fs.cat(f"{bucket}/atomic/shard.tar") == b"old"  # the last whole version stays
    assert fs.find(f"{bucket}/atomic") == [f"{bucket}/atomic/shard.tar"]


def test_shards_that_fail_part_way_keep_the_previous_version(s3) -> None:
    import pyarrow as pa

    from lcaffect_pipeline.schema import SEGMENTS_SCHEMA
    from lcaffect_pipeline.shards import write_shard_stream

    fs, bucket = s3
    rows = [{"video_id": "v", "segment_index": i, "start_ms": i * 8000, "end_ms": (i + 1) * 8000, "comments": ["hi"],
             "comment_ids": ["c"], "comment_count": 1, "frame_times_ms": [i * 8000]} for i in range(3)]
    table = pa.Table.from_pylist(rows, schema=SEGMENTS_SCHEMA)
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    root = f"s3://{bucket}/failing/shards"
    write_shard_stream(table, ((frames, r["frame_times_ms"]) for r in rows), root, "v", version="a" * 16, max_shard_bytes=1)
    before = {k: fs.cat(k) for k in fs.find(f"{bucket}/failing")}

    def dying():
        yield frames + 1, rows[0]["frame_times_ms"]
        raise OSError("decoder died")

    with pytest.raises(OSError, match="decoder died"):
        write_shard_stream(table, dying(), root, "v", version="a" * 16, max_shard_bytes=1)
    assert {k: fs.cat(k) for k in fs.find(f"{bucket}/failing")} == before


def test_a_store_that_refuses_connections_for_a_while_is_waited_for(reference, store, tmp_path, monkeypatch) -> None:
    import s3fs

    prefix_ref, keys_ref, m_ref, _, _ = reference
    monkeypatch.setenv("LCAFFECT_SCRATCH", str(tmp_path / "scratch"))
    proxy = RefusingProxy(store["AWS_ENDPOINT_URL_S3"])
    outage = {}
    try:
        with s3_env(store, endpoint=proxy.url) as fs:
            prefix = f"{store['LCAFFECT_S3_BUCKET']}/outage"
            direct = s3fs.S3FileSystem(endpoint_url=store["AWS_ENDPOINT_URL_S3"], skip_instance_cache=True, use_listings_cache=False)
            stop = threading.Event()

            def restart_mid_run():  # once the comments are in, the store goes away for 4 s
                while not stop.is_set() and not direct.exists(f"{prefix}/{MANIFESTS}/clean_comments.json"):
                    time.sleep(0.1)
                if not stop.is_set():
                    proxy.refuse()
                    outage["at"] = time.monotonic()
                    time.sleep(4)
                    proxy.serve()

            watcher = threading.Thread(target=restart_mid_run, daemon=True)
            watcher.start()
            result = materialize(f"s3://{prefix}")
            stop.set()
            watcher.join()
            assert "at" in outage, "the run ended before the outage"
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            assert layout(listing(direct, prefix)) == layout(keys_ref)
            assert outputs(direct, manifests(direct, prefix)) == outputs(direct, m_ref)
    finally:
        proxy.close()


def test_a_run_that_fails_while_the_store_is_away_completes_when_run_again(reference, store, tmp_path, monkeypatch) -> None:
    import s3fs

    prefix_ref, keys_ref, m_ref, _, _ = reference
    monkeypatch.setenv("LCAFFECT_SCRATCH", str(tmp_path / "scratch"))
    proxy = RefusingProxy(store["AWS_ENDPOINT_URL_S3"])
    try:
        with s3_env(store, endpoint=proxy.url):
            prefix = f"{store['LCAFFECT_S3_BUCKET']}/down"
            direct = s3fs.S3FileSystem(endpoint_url=store["AWS_ENDPOINT_URL_S3"], skip_instance_cache=True, use_listings_cache=False)
            stop = threading.Event()

            def stop_after_the_videos():  # the store stays away for the rest of the run
                while not stop.is_set() and not direct.exists(f"{prefix}/{MANIFESTS}/videos.json"):
                    time.sleep(0.1)
                proxy.refuse()

            watcher = threading.Thread(target=stop_after_the_videos, daemon=True)
            watcher.start()
            with monkeypatch.context() as m:
                m.setattr(s3fs.S3FileSystem, "retries", 1)  # fail fast instead of waiting 30 s a call
                failed = materialize(f"s3://{prefix}")
            stop.set()
            watcher.join()
            assert not failed.success
            assert not direct.exists(f"{prefix}/{MANIFESTS}/training_shards.json")
            proxy.serve()
            again = materialize(f"s3://{prefix}")
            assert again.success, [e.message for e in again.all_events if e.is_failure]
            keys = listing(direct, prefix)
            assert layout(keys) == layout(keys_ref) and temporaries(keys) == []
            assert outputs(direct, manifests(direct, prefix)) == outputs(direct, m_ref)
    finally:
        proxy.close()


def test_shard_versions_on_the_store(s3) -> None:
    """Version folders, their completeness and the content-addressed index work on the store too."""
    import pyarrow as pa

    from lcaffect_pipeline.schema import SEGMENTS_SCHEMA
    from lcaffect_pipeline.shards import (complete_version, referenced_folders, unversioned_folders, write_shard_index,
                                          write_shard_stream)

    fs, bucket = s3
    rows = [{"video_id": "v", "segment_index": i, "start_ms": i * 8000, "end_ms": (i + 1) * 8000, "comments": ["hi"],
             "comment_ids": ["c"], "comment_count": 1, "frame_times_ms": [i * 8000]} for i in range(2)]
    table = pa.Table.from_pylist(rows, schema=SEGMENTS_SCHEMA)
    root = f"s3://{bucket}/versions/shards"
    old = write_shard_stream(table, ((np.zeros((1, 8, 8, 3), np.uint8), r["frame_times_ms"]) for r in rows), root, "v",
                             version="a" * 16)
    first, _ = write_shard_index(root, referenced_folders(old.column("shard").to_pylist()))
    before = {k: fs.cat(k) for k in fs.find(f"{bucket}/versions/shards/v")}
    new = write_shard_stream(table, ((np.ones((1, 8, 8, 3), np.uint8), r["frame_times_ms"]) for r in rows), root, "v",
                             version="b" * 16)
    write_shard_index(root, referenced_folders(new.column("shard").to_pylist()))
    assert {k: fs.cat(k) for k in before} == before  # the first version is untouched
    assert sorted(fs.ls(f"{bucket}/versions/shards/v", refresh=True)) == [f"{bucket}/versions/shards/v/{c * 16}" for c in "ab"]
    assert unversioned_folders(root) == []
    assert complete_version(root, "v", "a" * 16)["shards"] == json.loads(fs.cat(str(first).removeprefix("s3://")))
    fs.rm(f"{bucket}/versions", recursive=True)


def test_the_human_evaluation_kit_and_report_on_the_store(s3, tmp_path) -> None:
    """The kit (frames from the store's shards, clips cut from its videos, the comment bank through
    DuckDB on s3fs) lands in the bucket whole; the report reads a rating file from the bucket."""
    from lcaffect_pipeline.defs.evaluation_assets import ASSETS as EVALUATION
    from lcaffect_pipeline.defs.model_assets import ASSETS as MODEL

    fs, bucket = s3
    need_ffmpeg()
    result = materialize(f"s3://{bucket}/human", [*corpus_and_clips(), *MODEL, *EVALUATION])
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    keys = listing(fs, f"{bucket}/human/human_eval")
    (kit_id,) = {k.split("/")[0] for k in keys}
    key = json.loads(fs.cat(f"{bucket}/human/human_eval/{kit_id}/key.json"))
    assert f"{kit_id}/page/index.html" in keys and not temporaries(keys)
    assert all(keys[f"{kit_id}/page/clips/item-{it['item']:03d}.mp4"] > 0 for it in key["items"])
    ratings = [{"item": it["item"], "best": "A", "scores": {"A": 3}} for it in key["items"]]
    fs.pipe(f"{bucket}/human/human_eval/{kit_id}/ratings/ana.json",
            json.dumps({"kit_id": kit_id, "rater": "ana", "ratings": ratings}).encode())
    again = materialize(f"s3://{bucket}/human", [*corpus_and_clips(), *MODEL, *EVALUATION], selection=["human_eval_report"])
    (report,) = [e.materialization for e in again.get_asset_materialization_events()
                 if e.materialization.asset_key.to_user_string() == "human_eval_report"]
    assert report.metadata["raters"].value == 1 and report.metadata["rejected_files"].value == 0
    assert list((tmp_path / "scratch").glob("*")) == []  # local copies removed
