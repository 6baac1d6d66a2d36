"""Catalogue files as users write them: spreadsheet CSV exports, URLs as default ids, big lists."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pyarrow as pa
import pytest

from lcaffect_pipeline import corpus, schema


def test_a_csv_catalogue_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.csv"
    # What Excel's "CSV UTF-8" writes: a BOM, then the header.
    path.write_bytes("source,platform,video_id,title\r\nBV1xx411c7mD,bilibili,,弹幕\r\nsm9,niconico,n9,\r\n".encode("utf-8-sig"))
    table = corpus.load_catalogue(path)
    assert table.column("source").to_pylist() == ["BV1xx411c7mD", "sm9"]
    assert table.column("video_id").to_pylist() == ["BV1xx411c7mD", "n9"]
    assert table.column("title").to_pylist()[0] == "弹幕"


def test_csv_fields_keep_their_line_breaks(tmp_path: Path) -> None:
    ids = ["a\rb", "c\x85d", "e\u2028f", "g\r\nh"]  # quoted fields: splitlines() or universal newlines broke them
    path = tmp_path / "catalogue.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video_id", "source"])
        writer.writerows([[v, f"s{i}"] for i, v in enumerate(ids)])
    assert corpus.load_catalogue(path).column("video_id").to_pylist() == ids


@pytest.mark.parametrize(("sources", "expected"), [
    (["https://www.youtube.com/watch?v=dQw4w9WgXcQ", "https://www.youtube.com/watch?v=jNQXAC9IVRw&list=x"],
     ["dQw4w9WgXcQ", "jNQXAC9IVRw"]),
    (["https://www.bilibili.com/video/BV1xx411c7mD?p=1", "https://www.bilibili.com/video/BV1xx411c7mD/?p=2&vd_source=ab"],
     ["BV1xx411c7mD", "BV1xx411c7mD_p2"]),
    (["https://youtu.be/dQw4w9WgXcQ?t=42", "comments/弹幕测试.xml"], ["dQw4w9WgXcQ", "弹幕测试"]),
])
def test_default_ids_of_distinct_urls_differ(tmp_path: Path, sources: list[str], expected: list[str]) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text("videos:\n" + "".join(f"  - {{source: '{s}', platform: local}}\n" for s in sources), encoding="utf-8")
    table = corpus.load_catalogue(path)
    assert table.column("video_id").to_pylist() == expected
    corpus.check_unique_ids(table, str(path))  # no false duplicate


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([{"video_id": v, "platform": "local", "source": v} for v in ("a", "b", "a")],
                                 schema=schema.CATALOGUE_SCHEMA)
    with pytest.raises(corpus.CatalogueError, match="duplicate video_id a"):
        corpus.check_unique_ids(table, "cat.yaml")


def test_a_40k_entry_catalogue_loads_and_checks_in_linear_time(tmp_path: Path) -> None:
    n = 40_000  # the quadratic duplicate check took 31 s here
    path = tmp_path / "catalogue.csv"
    path.write_text("source,platform\n" + "".join(f"BV{i:010d},bilibili\n" for i in range(n)), encoding="utf-8")
    started = time.perf_counter()
    table = corpus.load_catalogue(path)
    corpus.write_catalogue(tmp_path / "lake", table)
    seconds = time.perf_counter() - started
    assert table.num_rows == n and seconds < 8, f"{seconds:.1f} s for {n} entries"
    dupes = pa.Table.from_pylist([{"video_id": f"v{i % (n - 1)}", "platform": "local", "source": "x"} for i in range(n)],
                                 schema=schema.CATALOGUE_SCHEMA)
    started = time.perf_counter()
    with pytest.raises(corpus.CatalogueError, match="duplicate video_id v0"):
        corpus.check_unique_ids(dupes, "big.csv")
    assert time.perf_counter() - started < 1


def test_series_uploader_and_group_columns_load_and_an_older_catalogue_still_reads(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from lcaffect_pipeline import tables

    path = tmp_path / "catalogue.yaml"
    path.write_text("videos:\n- {source: BV1, series: 2, uploader: u9f3, group: show-a}\n- {source: BV2, genre: game}\n",
                    encoding="utf-8")
    table = corpus.load_catalogue(path)
    assert table.column("series").to_pylist() == ["2", None]  # YAML's number, as text
    assert table.column("group").to_pylist() == ["show-a", None] and table.column("uploader").to_pylist()[0] == "u9f3"
    # a catalogue committed before these columns existed reads them as nulls
    root = tmp_path / "lake"
    corpus.write_catalogue(root, table, str(path))
    (data_file,) = tables.files(root, "catalogue").values()
    old = table.drop_columns(["series", "uploader", "group"])
    pq.write_table(old, data_file)
    rows = corpus.load_catalogue_from_lake(root)
    assert [r["video_id"] for r in rows] == ["BV1", "BV2"] and rows[0]["group"] is None and rows[1]["genre"] == "game"
