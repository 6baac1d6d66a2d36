"""shards.py: WebDataset shards per the shard contract, round trip, size split, index, checks."""

from __future__ import annotations

import functools
import io
import itertools
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import webdataset as wds
from conftest import fixture_path, index_shards, need_ffmpeg, write_frames

from lcaffect_pipeline import lake, stages, versions_cli
from lcaffect_pipeline.schema import SEGMENTS_SCHEMA
from lcaffect_pipeline.segments import segment_video
from lcaffect_ml.data import load_shard_index
from lcaffect_pipeline.shards import (UPGRADE, complete_version, read_shard_index, referenced_folders,
                                      unversioned_folders, verify_shards, write_shard_index)
from lcaffect_ml.contracts.shards import sample_key
from lcaffect_ml.contracts import naming

# These tests check the tar layout, sizes and hashes with exact (npy) frames; the frame codecs have
# their own tests (test_frame_codecs.py).
write_shards = functools.partial(write_frames, codec="npy")
V = "a" * 16  # the version folder write_shards writes in

T, S = 4, 16
# One sample in a tar: a header block for each of its two members, the .npy (128-byte header
# plus data) padded to blocks, and the JSON (under 512 bytes here) in one block.
SAMPLE_BYTES = 512 + 512 * -(-(128 + T * S * S * 3) // 512) + 512 + 512


def _table(video_id: str, n: int) -> pa.Table:
    return pa.table({
        "video_id": [video_id] * n, "segment_index": list(range(n)),
        "start_ms": [8000 * i for i in range(n)], "end_ms": [8000 * (i + 1) for i in range(n)],
        "comments": [[f"第{i}段", "好看"] for i in range(n)], "comment_ids": [[f"{i}a", f"{i}b"] for i in range(n)],
        "comment_count": [7 + i for i in range(n)],
        "frame_times_ms": [[8000 * i + 1000 + 2000 * j for j in range(T)] for i in range(n)],
        "shard": [None] * n, "sample_key": [None] * n,
    }, schema=SEGMENTS_SCHEMA)


def _frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, T, S, S, 3), dtype=np.uint8)


def _read_back(urls: list[str]) -> dict[str, dict]:
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    return {s["__key__"]: s for s in ds}


def test_round_trip_real_video(lake_root):
    need_ffmpeg()
    table, frames = segment_video(fixture_path("video", "example.mp4"), size=32, frames_per_segment=4,
                                  video_id="BV1.example")
    shards_root = lake_root / "shards"
    out = write_shards(table, frames, shards_root, "BV1.example")
    assert out.schema.equals(SEGMENTS_SCHEMA, check_metadata=False)
    keys = out.column("sample_key").to_pylist()
    stem = naming.safe_name("BV1.example", dots=False)  # no dots in keys, and not the key of "BV1_example"
    assert stem.startswith("BV1_example-") and keys == [f"{stem}_000000", f"{stem}_000001"]
    urls = sorted(set(out.column("shard").to_pylist()))
    assert urls == [f"BV1.example/{V}/BV1.example-00000.tar"]  # relative to the shards root
    samples = _read_back([str(shards_root / u) for u in urls])
    assert sorted(samples) == keys
    for row, stack in zip(out.to_pylist(), frames):
        s = samples[row["sample_key"]]
        assert s["frames.npy"].dtype == np.uint8 and np.array_equal(s["frames.npy"], stack)
        meta = s["json"]
        assert meta == {k: row[k] for k in ("video_id", "segment_index", "start_ms", "end_ms", "comments",
                                              "comment_ids", "comment_count", "frame_times_ms")}
    index_shards(shards_root, out)
    assert verify_shards(out, shards_root, check_hashes=True) == []


def test_split_by_size_and_remove_stale_shards(lake_root):
    root = lake_root / "shards"
    limit = 3 * SAMPLE_BYTES + 11 * 1024  # three samples and the tar's end fit, four do not
    out = write_shards(_table("v", 10), _frames(10), root, "v", max_shard_bytes=limit)
    per_shard = [len(list(g)) for _, g in itertools.groupby(out.column("shard").to_pylist())]
    assert per_shard == [3, 3, 3, 1]
    tars = sorted((root / "v" / V).glob("*.tar"))
    assert [p.name for p in tars] == [f"v-{n:05d}.tar" for n in range(4)]
    assert all(p.stat().st_size <= limit for p in tars)
    assert sorted(_read_back([str(p) for p in tars])) == out.column("sample_key").to_pylist()

    shorter = write_shards(_table("v", 4), _frames(4), root, "v", max_shard_bytes=limit)
    assert [p.name for p in sorted((root / "v" / V).glob("*.tar"))] == ["v-00000.tar", "v-00001.tar"]
    index = index_shards(root, shorter)
    assert [(e["samples"], e["video_id"]) for e in index] == [(3, "v"), (1, "v")]
    assert verify_shards(shorter, root) == []


def test_oversized_sample_gets_its_own_shard(lake_root):
    out = write_shards(_table("v", 3), _frames(3), lake_root / "shards", "v", max_shard_bytes=1000)
    assert len(set(out.column("shard").to_pylist())) == 3


def test_index_lists_every_video_and_matches_files(lake_root):
    root = lake_root / "shards"
    a = write_shards(_table("BV1a", 2), _frames(2), root, "BV1a")
    b = write_shards(_table("sm9/../x", 3), _frames(3, seed=1), root, "sm9/../x")  # hostile id
    index = index_shards(root, a, b)
    assert index == read_shard_index(root)
    assert json.loads((root / "index.json").read_text()) == index
    assert {(e["video_id"], e["samples"]) for e in index} == {("BV1a", 2), ("sm9/../x", 3)}
    for e in index:
        assert not Path(e["url"]).is_absolute()  # relative to the index: the lake can move
        path = root / e["url"]
        assert root in path.parents and path.stat().st_size == e["bytes"]
        assert lake.file_hash(path) == e["sha256"][:32]
    assert verify_shards(pa.concat_tables([a, b]), root, check_hashes=True) == []
    assert all("." not in k for k in b.column("sample_key").to_pylist())
    assert sample_key("sm9/../x", 2) == b.column("sample_key")[2].as_py()


def test_long_video_id_round_trips(lake_root):
    video_id = "https://www.bilibili.com/video/" + "BV1" * 60  # safe_name: 120 chars with a hash
    root = lake_root / "shards"
    # Names over 100 bytes: a PAX header (2 blocks) per member; the long id takes the JSON to 2 blocks.
    limit = 2 * (SAMPLE_BYTES + 2 * 1024 + 512) + 11 * 1024
    out = write_shards(_table(video_id, 3), _frames(3), root, video_id, max_shard_bytes=limit)
    keys = out.column("sample_key").to_pylist()
    assert len(keys[0]) > 100 and len(set(out.column("shard").to_pylist())) == 2
    assert all((root / u).stat().st_size <= limit for u in set(out.column("shard").to_pylist()))
    samples = _read_back(sorted(str(root / u) for u in set(out.column("shard").to_pylist())))
    assert sorted(samples) == keys and samples[keys[0]]["json"]["video_id"] == video_id
    index_shards(root, out)
    assert verify_shards(out, root) == []


def test_shards_are_reproducible(lake_root):
    root = lake_root / "shards"
    first = index_shards(root, write_shards(_table("v", 2), _frames(2), root, "v"))
    assert index_shards(root, write_shards(_table("v", 2), _frames(2), root, "v")) == first
    assert index_shards(root, write_shards(_table("v", 2), _frames(2, seed=5), root, "v"))[0]["sha256"] != first[0]["sha256"]


def test_tar_members_follow_the_contract(lake_root):
    out = write_shards(_table("v", 1), _frames(1), lake_root / "shards", "v")
    with tarfile.open(lake_root / "shards" / out.column("shard")[0].as_py()) as tar:
        assert tar.getnames() == ["v_000000.frames.npy", "v_000000.json"]
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_bad_inputs_are_refused(lake_root):
    with pytest.raises(ValueError, match="frame stacks"):
        write_shards(_table("v", 2), _frames(3), lake_root, "v")
    with pytest.raises(ValueError, match="uint8"):
        write_shards(_table("v", 2), _frames(2).astype(np.float32), lake_root, "v")
    with pytest.raises(ValueError, match="other videos"):
        write_shards(_table("w", 2), _frames(2), lake_root, "v")
    with pytest.raises(ValueError, match="need a version"):
        write_shards(_table("v", 2), _frames(2), lake_root, "v", version="")
    assert not list(lake_root.rglob("*.tar"))  # nothing under a final name


# ------------------------------------------------------------------------------ verify_shards


@pytest.fixture
def written(lake_root):
    root = lake_root / "shards"
    out = write_shards(_table("v", 4), _frames(4), root, "v", max_shard_bytes=2 * SAMPLE_BYTES + 11 * 1024)
    index_shards(root, out)
    assert verify_shards(out, root, check_hashes=True) == []
    return root, out


def test_verify_finds_a_missing_index(written):
    root, out = written
    (root / "index.json").unlink()
    assert "index.json unreadable" in verify_shards(out, root)[0]


def test_verify_finds_a_sample_count_mismatch(written):
    root, out = written
    fewer = out.slice(0, 3)  # the table lost a row that the second shard still holds
    problems = verify_shards(fewer, root)
    assert any("index says 2 samples, table has 1" in p for p in problems)
    assert any("unexpected sample v_000003" in p for p in problems)


def test_verify_finds_wrong_frame_shapes(written):
    root, out = written
    url = root / out.column("shard")[0].as_py()
    bad = _frames(2)[:, :, :8]  # (T, 8, 16, 3): not square
    with lake.atomic_write(url) as fh, wds.TarWriter(fh, encoder=False) as tw:
        for row, stack in zip(out.slice(0, 2).to_pylist(), bad):
            buf = io.BytesIO()
            np.save(buf, stack)
            tw.write({"__key__": row["sample_key"], "frames.npy": buf.getvalue(),
                      "json": json.dumps({k: row[k] for k in ("video_id", "segment_index", "start_ms", "end_ms",
                                         "comments", "comment_ids", "comment_count", "frame_times_ms")}).encode()})
    problems = verify_shards(out, root, check_hashes=True)
    assert any("expected uint8 (4, S, S, 3)" in p for p in problems)
    assert any("sha256 differs" in p for p in problems)  # same size: tars pad to 10 KiB records


def test_verify_finds_json_that_differs_and_missing_files(written):
    root, out = written
    changed = out.set_column(out.schema.get_field_index("comment_count"), "comment_count",
                             pa.array([0] * out.num_rows, pa.int32()))
    assert any("differs from the table in ['comment_count']" in p for p in verify_shards(changed, root))
    (root / out.column("shard")[3].as_py()).unlink()
    assert any(p.endswith("is missing") for p in verify_shards(out, root))


def test_verify_finds_rows_without_shards(written):
    root, out = written
    unsharded = out.set_column(out.schema.get_field_index("shard"), "shard", pa.nulls(out.num_rows, pa.string()))
    problems = verify_shards(unsharded, root)
    assert sum("has no shard" in p for p in problems) == 4
    assert sum("does not use" in p for p in problems) == 2


def test_verify_reads_back_only_the_videos_asked_and_checks_the_others_against_the_index(written):
    root, out = written
    changed = out.set_column(out.schema.get_field_index("comment_count"), "comment_count",
                             pa.array([0] * out.num_rows, pa.int32()))
    # The JSON in the shards differs from the table: seen only when video v's samples are read.
    assert any("differs from the table" in p for p in verify_shards(changed, root, deep_videos={"v"}))
    assert verify_shards(changed, root, deep_videos=set()) == []
    url = root / out.column("shard")[0].as_py()
    with open(url, "ab") as fh:  # a shard whose size no longer matches the index is found unread
        fh.write(b"\0" * 512)
    assert any("bytes, index says" in p for p in verify_shards(out, root, deep_videos=set()))
    (root / out.column("shard")[3].as_py()).unlink()
    assert any(p.endswith("is missing") for p in verify_shards(out, root, deep_videos=set()))


# ------------------------------------------------------------------------------ versions


def test_a_new_version_adds_a_folder_and_each_index_stays_readable(lake_root):
    root = lake_root / "shards"
    old = write_shards(_table("v", 3), _frames(3), root, "v", version="a" * 16)
    before = {p: p.read_bytes() for p in (root / "v" / ("a" * 16)).iterdir()}
    first_path, first = write_shard_index(root, ["v/" + "a" * 16])
    new = write_shards(_table("v", 2), _frames(2, seed=3), root, "v", version="b" * 16)
    assert {p: p.read_bytes() for p in (root / "v" / ("a" * 16)).iterdir()} == before  # nothing replaced
    assert old.column("shard")[0].as_py() == f"v/{'a' * 16}/v-00000.tar"  # the URL names its version
    second_path, second = write_shard_index(root, referenced_folders(new.column("shard").to_pylist()))
    assert first_path != second_path and first_path.name.startswith("index-") and len(first_path.stem) == len("index-") + 16
    assert json.loads(first_path.read_text()) == first and read_shard_index(root) == second  # index.json: the latest
    assert verify_shards(old, root, check_hashes=True, index_name=first_path.name) == []
    assert verify_shards(new, root, check_hashes=True) == []
    assert referenced_folders(first) == {f"v/{'a' * 16}"} and unversioned_folders(root) == []
    specs = load_shard_index(str(first_path))  # relative URLs resolve beside the content-addressed index
    assert [s.video_id for s in specs] == ["v"] and Path(specs[0].url).read_bytes() == (root / first[0]["url"]).read_bytes()
    assert {s.video_id for s in load_shard_index(sorted(str(p) for p in root.rglob("*.tar")))} == {"v"}  # bare URLs


def test_shards_outside_version_folders_are_refused_until_the_lake_is_upgraded(lake_root, capsys):
    root = lake_root / "shards"
    write_shards(_table("v", 2), _frames(2), root, "v")
    for p in (root / "v" / V).iterdir():  # the layout before versions: shards straight in the video's folder
        p.rename(root / "v" / p.name)
    (root / "v" / V).rmdir()
    stages.save_state(lake_root, "segments", stages.VideoResult("v", "done", fingerprint="f", output_hash="h"))
    with pytest.raises(ValueError, match="without a version folder") as refused:
        write_shard_index(root, ["v"])
    assert str(root / "v") in str(refused.value) and UPGRADE in str(refused.value)
    assert "versions_cli --lake LAKE upgrade" in UPGRADE
    assert unversioned_folders(root) == ["v"]
    assert versions_cli.main(["--lake", str(lake_root), "upgrade"]) == 0
    assert "1 videos' shards are not in version folders (v" in capsys.readouterr().out
    assert stages.load_state(lake_root, "segments", "v") is None  # so the next run writes them again


def test_same_inputs_give_byte_identical_shards_and_a_complete_folder(tmp_path):
    written = {}
    for name in ("one", "two"):
        root = tmp_path / name / "shards"
        out = write_shards(_table("BV1 x", 5), _frames(5), root, "BV1 x", max_shard_bytes=2 * SAMPLE_BYTES + 11 * 1024,
                           version="c" * 16)
        written[name] = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        sidecar = complete_version(root, "BV1 x", "c" * 16)
        assert sidecar is not None and sidecar["segments"] == lake.table_hash(out)  # the segments file's name
    assert written["one"] == written["two"] and len([k for k in written["one"] if k.endswith(".tar")]) == 3
    root = tmp_path / "one" / "shards"
    assert complete_version(root, "BV1 x", "d" * 16) is None  # no such version
    tar = next(p for p in root.rglob("*.tar"))
    tar.write_bytes(tar.read_bytes()[:-512])  # a shard cut short: the folder is not complete
    assert complete_version(root, "BV1 x", "c" * 16) is None


def test_a_pipe_url_in_an_index_is_refused_before_anything_runs(tmp_path):
    from lcaffect_ml.data import ShardIndexError, _open_url

    marker = tmp_path / "ran"
    with pytest.raises(ShardIndexError, match="pipe"):
        _open_url(f"pipe:touch {marker}")
    assert not marker.exists()
