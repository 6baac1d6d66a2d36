"""Corpus + clips assets on the demo world through Dagster: shards, checks, incremental refresh."""

import json
from pathlib import Path

import dagster as dg
import pytest

from lcaffect_pipeline import clips
from lcaffect_pipeline.defs.checks import CHECKS
from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS_ASSETS
from lcaffect_pipeline.defs.clips_assets import CHECKS as CLIPS_CHECKS
from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS_ASSETS
from lcaffect_pipeline.defs.resources import CatalogueResource, ClipsResource, RunScope
from lcaffect_pipeline.demo_world import SEGMENTS_PER_VIDEO

from conftest import demo_resources, manifest, need_ffmpeg

N = 3
ALL = [*CORPUS_ASSETS, *CLIPS_ASSETS]


def resources(root: Path, catalogue: CatalogueResource | None = None, **scope) -> dict:
    return demo_resources(root, scope=RunScope(**scope), catalogue=catalogue or CatalogueResource(demo=True, demo_videos=N),
                          clips=ClipsResource(size=32, frames_per_segment=4, max_shard_bytes=200_000))





@pytest.fixture(scope="module")
def clips_run(tmp_path_factory):
    need_ffmpeg()
    root = tmp_path_factory.mktemp("lake")
    result = dg.materialize([*ALL, *CHECKS, *CLIPS_CHECKS], resources=resources(root))
    assert result.success
    return root, result


def test_demo_videos_become_shards(clips_run) -> None:
    root, result = clips_run
    segs = manifest(root, "segments")
    assert segs["failed"] == 0 and segs["rows"] == N * SEGMENTS_PER_VIDEO
    index = json.loads((root / "shards" / "index.json").read_text())
    entries = index if isinstance(index, list) else index["shards"]
    assert sum(e["samples"] for e in entries) == N * SEGMENTS_PER_VIDEO
    table = clips.segments_of(root, "demo_00", segs["results"]["demo_00"]["output_hash"])
    counts = [len(c) for c in table.column("comments").to_pylist()]
    assert all(1 <= n <= 32 for n in counts) and max(counts) > 5  # every distinct comment, not a top 5
    assert all((root / "shards" / s).exists() for s in table.column("shard").to_pylist())  # relative: the lake can move
    audio = manifest(root, "audio")
    assert audio["failed"] == 0 and (root / "audio" / "demo_00.wav").exists()
    checks = result.get_asset_check_evaluations()
    assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
    mats = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    assert "contact_sheet" in mats["segments"].materialization.metadata


def test_adding_a_video_processes_only_that_video(clips_run, tmp_path: Path, monkeypatch) -> None:
    from lcaffect_pipeline import probe as videos  # where probe_video and its ffprobe call live

    root, _ = clips_run
    before = {p.name: p.stat().st_mtime_ns for p in (root / "shards").rglob("*.tar")}
    probed: list[str] = []
    real_ffprobe = videos._ffprobe
    monkeypatch.setattr(videos, "_ffprobe", lambda path, **kw: (probed.append(Path(path).name), real_ffprobe(path, **kw))[1])
    # the demo world with one more video: the first N are byte-identical
    result = dg.materialize([*ALL, *CLIPS_CHECKS], resources=resources(root, CatalogueResource(demo=True, demo_videos=N + 1)))
    assert result.success
    segs = manifest(root, "segments")
    assert segs["done"] == 1 and segs["skipped"] == N
    # One ffprobe per new video, of the local file before it is copied: the probe stage, audio
    # and segments take the recorded probe, not their own.
    assert len(probed) == 1 and probed[0].startswith(f"demo_{N:02d}"), probed
    # The shard check reads back the new video's samples only; the others against the index.
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and check.metadata["segments_read_back"].value == SEGMENTS_PER_VIDEO
    assert check.metadata["segments"].value == (N + 1) * SEGMENTS_PER_VIDEO
    after = {p.name: p.stat().st_mtime_ns for p in (root / "shards").rglob("*.tar")}
    assert all(after[name] == mtime for name, mtime in before.items())  # old shards untouched
    assert len(after) > len(before)


def test_a_replaced_local_video_is_picked_up_by_the_next_run(tmp_path: Path) -> None:
    import os
    import shutil

    from conftest import fixture_path

    need_ffmpeg()
    video = tmp_path / "clip.mp4"
    shutil.copy(fixture_path("video", "realshort.mp4"), video)  # 1.2 s, 320x240
    catalogue = tmp_path / "catalogue.yaml"

    def write_catalogue(path: Path) -> None:
        comments = fixture_path("bilibili", "xml", "18678311.xml")
        catalogue.write_text(f"videos:\n  - {{video_id: clip, platform: bilibili, source: {comments}, video: {path}}}\n")

    write_catalogue(video)
    root = tmp_path / "lake"
    res = resources(root, CatalogueResource(path=str(catalogue)))

    def run() -> tuple[dict, dict]:
        result = dg.materialize(ALL, resources=res)
        assert result.success
        status = {a: manifest(root, a)["results"]["clip"]["status"] for a in ("videos", "video_probes", "segments")}
        return status, {e.asset_key.to_user_string(): e.materialization.tags["dagster/data_version"]
                        for e in result.get_asset_materialization_events()}

    def probe() -> dict:
        return manifest(root, "video_probes")["results"]["clip"]["metrics"]

    first_status, first = run()
    assert set(first_status.values()) == {"done"} and probe()["width"] == 320
    status, again = run()  # nothing changed
    assert set(status.values()) == {"skipped"} and again == first
    os.utime(video, ns=(1, 1_000_000_000))  # touched, same bytes: hashed once, still skipped
    status, again = run()
    assert set(status.values()) == {"skipped"} and again == first
    assert manifest(root, "videos")["results"]["clip"]["metrics"]["source_stat"][2] == 1_000_000_000

    shutil.copy(fixture_path("video", "example.mp4"), video)  # replaced under the same name
    status, replaced = run()
    assert set(status.values()) == {"done"} and probe()["width"] == 640
    assert replaced["videos"] != first["videos"] and replaced["training_shards"] != first["training_shards"]
    assert manifest(root, "segments")["results"]["clip"]["rows"] == 2  # 16 s: two 8 s segments

    other = tmp_path / "clip.webm"  # the catalogue now names a WebM: the old .mp4 must not shadow it
    shutil.copy(fixture_path("video", "big_buck_bunny_432_433.webm"), other)
    write_catalogue(other)
    status, _ = run()
    assert set(status.values()) == {"done"} and probe()["width"] == 1280
    assert sorted(p.name for p in (root / "videos").iterdir() if not p.name.startswith(".")) == ["clip.info.json", "clip.webm"]


def test_clips_assets_with_the_decord_frame_backend(tmp_path: Path, caplog) -> None:
    """frame_backend: decord through Dagster: exact frame times, decord's frames in the shards, and a
    file decord refuses (WebM without a duration) done by PyAV instead of failing."""
    import io
    import tarfile

    import numpy as np

    from conftest import fixture_path
    from lcaffect_pipeline.frames import sample_frames

    need_ffmpeg()
    comments = fixture_path("bilibili", "xml", "18678311.xml")
    videos = {"ex": fixture_path("video", "example.mp4"), "nodur": fixture_path("video", "no_duration.webm")}
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text("videos:\n" + "".join(
        f"  - {{video_id: {vid}, platform: bilibili, source: {comments}, video: {path}}}\n" for vid, path in videos.items()))
    root = tmp_path / "lake"
    res = resources(root, CatalogueResource(path=str(catalogue)))
    # exact frames (npy): the comparison below is of the decoders, without a codec's error
    res["clips"] = ClipsResource(size=32, frames_per_segment=4, frame_backend="decord", frame_codec="npy")
    assert dg.materialize(ALL, resources=res).success
    assert {v["status"] for v in manifest(root, "segments")["results"].values()} == {"done"}
    assert "decord refused" in caplog.text and "nodur.webm" in caplog.text and "broken metadata" in caplog.text
    table = clips.segments_of(root, "ex", manifest(root, "segments")["results"]["ex"]["output_hash"])
    assert table.column("frame_times_ms").to_pylist() == [[1000, 3000, 5000, 7000], [9000, 11000, 13000, 15000]]
    row = table.slice(0, 1).to_pylist()[0]
    with tarfile.open(root / "shards" / row["shard"]) as tar:
        stored = np.load(io.BytesIO(tar.extractfile(f"{row['sample_key']}.frames.npy").read()))
    pyav = sample_frames(videos["ex"], np.array(row["frame_times_ms"]), 32, backend="pyav")
    assert np.abs(stored.astype(int) - pyav).mean() < 3  # decord's frames, the same pictures as PyAV's


def test_segmenting_the_same_inputs_twice_gives_byte_identical_shards(tmp_path: Path) -> None:
    """Decoding, sampling and tar writing are deterministic: two lakes, the same bytes and hashes."""
    from conftest import fixture_path
    from lcaffect_ml.contracts.hashing import sha256_file

    need_ffmpeg()
    probe = {"status": "done", "output_hash": "h", "fingerprint": "f",
             "metrics": {"path": str(fixture_path("video", "example.mp4"))}}
    made = {}
    for name in ("a", "b"):
        root = tmp_path / name
        result = clips.segment_one({"video_id": "ex", "platform": "local"}, None, root=root, probe=probe,
                                   comments_hash=None, opts=clips.ClipOptions(size=16, frames_per_segment=4))
        files = {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()}
        made[name] = (result.output_hash, result.metrics["shard_folder"], files)
    assert made["a"] == made["b"]
    assert sum(k.endswith(".tar") for k in made["a"][2]) == 1 and f"segments/video_key=ex/{made['a'][0]}.parquet" in made["a"][2]


def test_new_comments_add_a_version_and_the_old_comments_reproduce_it_without_decoding(tmp_path: Path, monkeypatch) -> None:
    """A refresh with new comments writes a new shard folder and segments file and leaves the old
    ones (and the old index) as they were; going back to the old comments reuses them, decoding
    nothing, and gives the very index the first run wrote."""
    import shutil

    from conftest import fixture_path
    from lcaffect_ml.contracts.hashing import sha256_file
    from lcaffect_ml.data import iter_raw_samples, load_shard_index
    from lcaffect_pipeline import segments as segments_module
    from lcaffect_pipeline import tables

    need_ffmpeg()
    comments = tmp_path / "comments.xml"
    shutil.copy(fixture_path("bilibili", "xml", "18678311.xml"), comments)
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(f"videos:\n  - {{video_id: ex, platform: bilibili, source: {comments}, "
                         f"video: {fixture_path('video', 'example.mp4')}}}\n")
    root = tmp_path / "lake"
    res = resources(root, CatalogueResource(path=str(catalogue)))

    def run() -> tuple[dict, dict]:
        result = dg.materialize([*ALL, *CLIPS_CHECKS], resources=res)
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
        return manifest(root, "segments")["results"]["ex"], manifest(root, "training_shards")

    def on_disk(entries: list[dict]) -> dict[str, str]:
        return {e["url"]: sha256_file(root / "shards" / e["url"]) for e in entries}

    first, shards1 = run()
    index1 = Path(shards1["index"])
    entries1 = json.loads(index1.read_text())
    assert on_disk(entries1) == {e["url"]: e["sha256"] for e in entries1}
    assert shards1["reads"] == {"segments": manifest(root, "segments")["manifest_id"]}
    segments1 = tables.data_file(root, "segments", "ex", first["output_hash"]).read_bytes()

    shutil.copy(fixture_path("bilibili", "xml", "2170097.xml"), comments)  # the refresh brings other comments
    second, shards2 = run()
    assert second["status"] == "done" and second["metrics"]["shard_folder"] != first["metrics"]["shard_folder"]
    assert Path(shards2["index"]) != index1 and shards2["segments_version"] > shards1["segments_version"]
    # The first version is whole: its shards (by sha256), its segments file, its index.
    assert on_disk(entries1) == {e["url"]: e["sha256"] for e in entries1}
    assert tables.data_file(root, "segments", "ex", first["output_hash"]).read_bytes() == segments1
    assert tables.digests(root, "segments", shards1["segments_version"]) == {"ex": first["output_hash"]}
    specs = load_shard_index(str(index1))
    assert sum(1 for s in specs for _ in iter_raw_samples(s.url)) == first["rows"] == shards1["samples"]

    def decoding(*args, **kwargs):
        raise AssertionError("the video was decoded again")

    monkeypatch.setattr(segments_module, "segment_video_stream", decoding)
    shutil.copy(fixture_path("bilibili", "xml", "18678311.xml"), comments)  # back to the first comments
    third, shards3 = run()
    assert third["metrics"]["reused"] and (third["fingerprint"], third["output_hash"]) == (first["fingerprint"], first["output_hash"])
    assert (shards3["index"], shards3["data_version"]) == (shards1["index"], shards1["data_version"])
    assert on_disk(entries1) == {e["url"]: e["sha256"] for e in entries1}
