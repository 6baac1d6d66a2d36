"""The contracts between the pipeline and the training programs are defined once, in
``lcaffect_ml.contracts``, and both sides agree with them (docs/ARCHITECTURE.md, "Contracts")."""

from __future__ import annotations

import hashlib

from lcaffect_ml.contracts import hashing
from lcaffect_pipeline import lake


def test_one_hash_convention_long_and_short(tmp_path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # over one read chunk
    path.write_bytes(data)
    full = hashlib.sha256(data).hexdigest()
    assert hashing.sha256_file(path) == full == hashing.sha256_bytes(data)
    # The lake's short hash keeps its stored format (32 hex) and is a prefix of the full digest.
    assert lake.file_hash(path) == full[:32] == hashing.file_hash(str(path))
    assert hashing.sha256_file(lake.as_path(path)) == full  # a universal_pathlib path opens through .open


def test_shard_layout_is_one_definition_for_writer_and_reader(tmp_path) -> None:
    import numpy as np

    from lcaffect_ml import data
    from lcaffect_ml.contracts import shards as layout
    from lcaffect_pipeline import shards

    vid = "弹幕.测试"  # not a plain name: hashed folder and file names, a dot-free key
    assert shards.shard_path(tmp_path, vid, 3, "v1").relative_to(tmp_path).as_posix() == \
        f"{layout.video_dir_name(vid)}/v1/{layout.shard_name(vid, 3)}"
    assert layout.shard_number(vid, layout.shard_name(vid, 3)) == 3 and layout.shard_number("other", layout.shard_name(vid, 3)) is None
    assert "." not in layout.sample_key(vid, 7)
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    meta = {"video_id": vid, "segment_index": np.int32(7), "start_ms": 56000, "end_ms": 64000, "comments": ("好", "哈哈"),
            "comment_ids": ["a", "b"], "comment_count": 2, "frame_times_ms": [57000, 61000], "shard": "ignored"}
    for codec in layout.FRAME_CODECS:  # every codec the writer has, the reader reads
        raw = {**layout.encode_sample(meta, frames, codec), "__url__": "mem"}
        assert sorted(data.parse_meta(raw)) == sorted(layout.META_FIELDS)  # the reader sees exactly the contract's fields
        assert data.parse_meta(raw)["segment_index"] == 7 and data.parse_meta(raw)["comments"] == ["好", "哈哈"]
        back = data.decode_frames(raw)
        assert back.shape == frames.shape and back.dtype == np.uint8
        assert np.array_equal(back, frames) if codec == "npy" else np.abs(back.astype(int) - frames).mean() < 3


def test_synthetic_shards_follow_the_layout(tmp_path) -> None:
    import json

    from lcaffect_ml.contracts import shards as layout
    from lcaffect_ml.data import load_shard_index
    from lcaffect_ml.synthetic import write_synthetic_shards

    index = write_synthetic_shards(tmp_path, n_videos=2, segments_per_video=2, frames=2, size=8)
    assert index == tmp_path / layout.SHARDS_DIR / layout.INDEX_NAME
    entries = json.loads(index.read_text())
    assert all(sorted(e) == sorted(layout.INDEX_FIELDS) for e in entries)
    assert [s.video_id for s in load_shard_index(index)] == [e["video_id"] for e in entries]
    for e in entries:
        assert e["url"] == f"{layout.video_dir_name(e['video_id'])}/{layout.shard_name(e['video_id'], 0)}"  # lake-relative


def test_utterance_table_is_declared_once_and_read_by_its_columns() -> None:
    from lcaffect_ml.contracts import tables

    names = set(tables.UTTERANCES_SCHEMA.names)
    assert set(tables.EXTRACT_COLUMNS) <= names and set(tables.FUSION_COLUMNS) <= names
    assert set(tables.FUSION_REQUIRED) <= set(tables.FUSION_COLUMNS)
    assert all(not tables.UTTERANCES_SCHEMA.field(c).nullable for c in tables.FUSION_REQUIRED)


def test_one_atomic_write_helper_for_lake_and_training(tmp_path) -> None:
    """The training programs' atomic files are the lake's: same temporary names, same sweeping."""
    import os

    from lcaffect_ml import atomic, trainutil

    dead = tmp_path / f".w.json.tmp-{atomic._HOST}-999999999-0123abcd"  # this host, a writer long gone
    dead.write_text("half")
    trainutil.atomic_write_json(tmp_path / "w.json", {"a": 1})
    assert sorted(os.listdir(tmp_path)) == ["w.json"]  # written, and the dead writer's temporary swept
    with atomic.atomic_file(tmp_path / "fig.png") as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith(".fig.png.tmp-")  # matplotlib picks the format by suffix
        tmp.write_bytes(b"x")
    assert (tmp_path / "fig.png").read_bytes() == b"x"
