import os
import re
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lcaffect_pipeline import lake
from conftest import hash_author
from lcaffect_ml.contracts import naming


@pytest.mark.parametrize(
    "raw",
    ["../../etc/passwd", "/abs/path", "a\x00b", "x" * 10_000, "CON", "nul.txt", "ＢＶ１ｘｘ", "..", ".", "", "a/b\\c", "é" * 50],
)
def test_safe_name_stays_under_root(tmp_path: Path, raw: str) -> None:
    name = naming.safe_name(raw)
    assert 0 < len(name) <= naming.MAX_NAME
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert name.split(".")[0].lower() not in {"con", "nul"}
    path = lake.under(tmp_path, "videos", raw)
    assert tmp_path.resolve() in Path(str(path)).resolve().parents


def test_safe_name_is_injective_for_changed_ids() -> None:
    assert naming.safe_name("a/b") != naming.safe_name("a_b")
    assert naming.safe_name("BV1xx411c7mD") == "BV1xx411c7mD"  # clean ids stay readable
    assert naming.safe_name("_state") == "_state"  # the lake's own folders keep their names


def test_a_hashed_name_never_equals_another_ids_kept_name() -> None:
    hashed = naming.safe_name("my video")
    assert hashed.startswith("my_video-") and len(hashed) == len("my_video-") + naming.HASH_LEN
    assert naming.safe_name(hashed) != hashed  # an id that looks hashed is hashed again
    assert naming.safe_name("my_video-22175423d8") != naming.safe_name("my video")  # the old collision
    assert naming.safe_name("a.b", dots=False) != naming.safe_name("a_b", dots=False) == "a_b"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(max_size=140) | st.from_regex(r"[A-Za-z0-9_.-]{0,90}(-[0-9a-f]{16})?", fullmatch=True),
                min_size=2, max_size=6, unique=True))
def test_safe_name_is_injective(ids: list[str]) -> None:
    for ext in ("", ".parquet", ".info.json"):
        names = [naming.safe_name(i, ext) for i in ids]
        assert len(set(names)) == len(ids), dict(zip(ids, names))
    keys = [naming.safe_name(i, dots=False) for i in ids]
    assert len(set(keys)) == len(ids) and not any("." in k for k in keys)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["", ".json", ".parquet", ".wav", ".mp4", ".info.json"]))
def test_the_extension_comes_last_and_the_stem_does_not_depend_on_it(raw: str, ext: str) -> None:
    name = naming.safe_name(raw, ext)
    assert name == naming.safe_name(raw) + ext and len(name) <= naming.MAX_NAME
    if ext:  # "my video.parquet" -> "my_video-<hash>.parquet", never "my_video.parquet-<hash>"
        assert Path(name).suffix == "." + ext.rsplit(".", 1)[-1]
    stem = name[: len(name) - len(ext)]
    assert stem == raw or re.fullmatch(rf".*-[0-9a-f]{{{naming.HASH_LEN}}}", stem)
    assert not name.startswith((".", "-"))
    path = lake.under("/lake", "raw_comments", "bilibili", raw, ext=ext)
    assert path.name == name and path.parent.name == "bilibili"


def test_an_extension_must_be_plain() -> None:
    for bad in ("parquet", ".a/b", "./..", ".弹幕"):
        with pytest.raises(ValueError, match="not a file extension"):
            naming.safe_name("x", bad)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with lake.atomic_write(target) as fh:
            fh.write(b"half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    lake.atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"


def test_table_hash_is_content_derived(tmp_path: Path) -> None:
    t1 = pa.table({"a": [1, 2, 3]})
    h = lake.write_parquet(t1, tmp_path / "t.parquet")
    assert h == lake.table_hash(lake.read_parquet(tmp_path / "t.parquet"))
    assert h != lake.table_hash(pa.table({"a": [1, 2, 4]}))
    assert lake.combine_hashes({"x": "1", "y": "2"}) == lake.combine_hashes({"y": "2", "x": "1"})


def test_author_hash_needs_salt() -> None:
    assert hash_author("12345", None) is None
    a, b = hash_author("12345", "s1"), hash_author("12345", "s2")
    assert a and b and a != b and "12345" not in a


def test_local_path_refuses_an_object_store_lake_instead_of_making_an_s3_folder(tmp_path):
    from pathlib import Path

    from lcaffect_pipeline.lake import RemoteLakeError, local_path

    assert local_path(tmp_path / "x", "a test") == tmp_path / "x"
    assert local_path(f"file://{tmp_path}/y", "a test") == Path(f"{tmp_path}/y")
    with pytest.raises(RemoteLakeError, match=r"s3://bucket/lake.*DuckDB corpus catalog.*local or mounted"):
        local_path("s3://bucket/lake", "the DuckDB corpus catalog")
    assert not Path("s3:").exists()


def test_scratch_is_removed_after_use_and_a_keyed_one_kept_for_a_retry(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LCAFFECT_SCRATCH", str(tmp_path / "scratch"))
    with lake.scratch("ffmpeg") as folder:
        (folder / "x.wav").write_bytes(b"x")
    assert not folder.exists()
    with pytest.raises(RuntimeError):
        with lake.scratch("ffmpeg") as folder:
            raise RuntimeError("decode failed")
    assert not folder.exists()
    with pytest.raises(RuntimeError):
        with lake.scratch("training", key="run-1") as kept:
            (kept / "checkpoint").write_bytes(b"step 10")
            raise RuntimeError("killed")
    with lake.scratch("training", key="run-1") as again:  # the retry finds its checkpoint
        assert again == kept and (again / "checkpoint").read_bytes() == b"step 10"
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_lake_inside_the_scratch_folder_is_refused(tmp_path, monkeypatch) -> None:
    from lcaffect_pipeline.defs.resources import LakeResource

    monkeypatch.setenv("LCAFFECT_SCRATCH", str(tmp_path / "scratch"))
    with pytest.raises(lake.LakePathError, match="scratch folder"):
        LakeResource(root=str(tmp_path / "scratch" / "lake")).path()
    assert LakeResource(root=str(tmp_path / "lake")).path() == tmp_path / "lake"


def test_a_workspace_uploads_what_changed_with_its_markers_last(tmp_path, monkeypatch) -> None:
    """memory:// stands in for a bucket here (tests/test_s3_lake.py runs the real store)."""
    monkeypatch.setenv("LCAFFECT_SCRATCH", str(tmp_path / "scratch"))
    run = lake.as_path("memory://lake-ws/models/run1")
    lake.atomic_write_bytes(run / "config.json", b"{}")
    order = []
    real = lake.publish_copy
    monkeypatch.setattr(lake, "publish_copy", lambda src, final: (order.append(lake.as_path(final).name), real(src, final)))
    with lake.workspace(run, "training", last=("metrics.json", "model.safetensors")) as local:
        assert (local / "config.json").read_bytes() == b"{}"  # what the lake had is there to resume from
        for name in ("model.safetensors", "metrics.json", "checkpoints/step-1/w.bin"):
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(name.encode())
    assert order == ["w.bin", "metrics.json", "model.safetensors"]  # unchanged config.json not sent again
    assert (run / "checkpoints" / "step-1" / "w.bin").read_bytes() == b"checkpoints/step-1/w.bin"
    assert list((tmp_path / "scratch").iterdir()) == []
    with lake.local_tree(run, "reading", exclude=("checkpoints",)) as copy:
        assert sorted(p.name for p in copy.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    local_dir = tmp_path / "local-lake" / "run"
    with lake.workspace(local_dir, "training") as same:
        assert same == local_dir and same.is_dir()  # a local lake is worked in directly
