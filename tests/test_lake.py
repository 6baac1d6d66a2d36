import os
from pathlib import Path

import pyarrow as pa
import pytest

from lcaffect_pipeline import lake
from lcaffect_pipeline.schema import hash_author


@pytest.mark.parametrize(
    "raw",
    ["../../etc/passwd", "/abs/path", "a\x00b", "x" * 10_000, "CON", "nul.txt", "ＢＶ１ｘｘ", "..", ".", "", "a/b\\c", "é" * 50],
)
def test_safe_name_stays_under_root(tmp_path: Path, raw: str) -> None:
    name = lake.safe_name(raw)
    assert 0 < len(name) <= lake.MAX_NAME
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert name.split(".")[0].lower() not in {"con", "nul"}
    path = lake.under(tmp_path, "videos", raw)
    assert tmp_path.resolve() in Path(str(path)).resolve().parents


def test_safe_name_is_injective_for_changed_ids() -> None:
    assert lake.safe_name("a/b") != lake.safe_name("a_b")
    assert lake.safe_name("BV1xx411c7mD") == "BV1xx411c7mD"  # clean ids stay readable


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
