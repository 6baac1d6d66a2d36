"""Cleaning: each filter on small hand-made tables, the drop counts, streaming, a real fixture."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lcaffect_pipeline.cleaning import (
    FILTERS,
    CleaningConfig,
    CleaningInputError,
    clean_batches,
    clean_comments,
    clean_parquet,
    compress_repeats,
    first_in_window,
    near_duplicate_key,
    normalise_text,
    t2s_convert,
)
from lcaffect_pipeline.schema import CLEAN_COMMENTS_SCHEMA, COMMENTS_SCHEMA

try:
    from .conftest import fixture_path
except ImportError:  # tests/ is not a package
    from conftest import fixture_path

# Everything off: each test switches on only what it tests.
OFF = dict(
    drop_code=False, min_weight=None, min_score=None, strip_control=False, nfkc=False, trim_whitespace=False,
    max_repeat=None, t2s=False, min_chars=None, max_chars=None, langid=False, dedup_ids=False, dedup_exact=False,
    dedup_near=False,
)


def only(**on) -> CleaningConfig:
    return CleaningConfig(**{**OFF, **on})


def comments(*rows: dict, platform: str = "bilibili", video_id: str = "v1") -> pa.Table:
    """A COMMENTS_SCHEMA table; each row needs only ``text`` (and whatever the test varies)."""
    full = []
    for i, row in enumerate(rows):
        base = dict(platform=platform, video_id=video_id, comment_id=f"c{i}", offset_ms=i * 1000, mode="scroll",
                    superchat=False, source_file="hand-made.xml")
        full.append({**base, **row})
    return pa.Table.from_pylist(full, schema=COMMENTS_SCHEMA)


def texts(rows: list[str], config: CleaningConfig, **kw) -> list[str]:
    table, _ = clean_comments(comments(*({"text": t} for t in rows), **kw), config)
    return table.column("text").to_pylist()


# ---------------------------------------------------------------- single filters


def test_code_comments_dropped_positioned_kept():
    raw = comments({"text": "Player.seek(0)", "mode": "code"}, {"text": "御坂美琴", "mode": "positioned"}, {"text": "hi"})
    clean, drops = clean_comments(raw, only(drop_code=True))
    assert clean.column("mode").to_pylist() == ["positioned", "scroll"]
    assert drops["code"] == 1 and sum(drops.values()) == 1


def test_control_characters_and_line_separators_out():
    rows = ["a\x00b", "a\u2028b\u2029c", "x\ty\nz\r", "\u200bhi\ufeff", "\x1b[31mred", "ok"]
    assert texts(rows, only(strip_control=True)) == ["ab", "a b c", "x y z ", "hi", "[31mred", "ok"]


def test_full_width_to_half_width():
    rows = ["ＡＢＣ１２３！", "ｗｗｗ", "你好，世界", "ｶﾀｶﾅ"]
    # NFKC: full-width ASCII to ASCII, half-width katakana to the ordinary form.
    assert texts(rows, only(nfkc=True)) == ["ABC123!", "www", "你好,世界", "カタカナ"]


def test_whitespace_trimmed_and_collapsed():
    rows = ["  a   b  ", "\u3000中文\u3000", "x \u00a0 y"]
    assert texts(rows, only(nfkc=True, trim_whitespace=True)) == ["a b", "中文", "x y"]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("哈哈哈哈哈", "哈哈哈"),
        ("哈哈哈", "哈哈哈"),
        ("2333333", "2333"),
        ("wwwwww", "www"),
        ("hahahahaha", "hahaha"),
        ("笑死我了哈哈哈哈哈哈哈哈", "笑死我了哈哈哈"),
        ("6666666666", "666"),
        ("好好学习", "好好学习"),
        ("!!!!!!!!", "!!!"),
        ("前方高能前方高能前方高能前方高能", "前方高能前方高能前方高能"),
    ],
)
def test_repeated_runs_compressed(raw, expected):
    assert compress_repeats([raw]) == [expected]
    assert texts([raw], only(max_repeat=3)) == [expected]


def test_repeat_limit_is_configurable():
    assert compress_repeats(["哈哈哈哈哈", "2333333"], max_repeat=2) == ["哈哈", "233"]


def test_traditional_to_simplified_on_chinese_platforms_only():
    rows = ["這個視頻太好看了", "電光", "君の指先で跃動する電光", "already 简体"]
    assert texts(rows, only(t2s=True)) == ["这个视频太好看了", "电光", "君の指先で跃動する電光", "already 简体"]
    # Niconico text is Japanese: kanji such as 電 stay as they are.
    assert texts(rows, only(t2s=True), platform="niconico")[:2] == ["這個視頻太好看了", "電光"]
    assert texts(["電光"], only(t2s=True, t2s_platforms=None), platform="niconico") == ["电光"]


def test_t2s_over_many_strings_matches_one_by_one():
    import opencc

    cc = opencc.OpenCC("t2s")
    strings = ["這個視頻", "", "開始了", "a\nb 說", "臺灣 發展"] * 50
    assert t2s_convert(strings) == [cc.convert(s) for s in strings]


def test_length_bounds_after_normalisation():
    rows = ["", "a", "ab", "abcde", "abcdef", "哈哈哈哈哈哈哈哈"]
    table, drops = clean_comments(comments(*({"text": t} for t in rows)), only(min_chars=2, max_chars=5, max_repeat=3))
    assert table.column("text").to_pylist() == ["ab", "abcde", "哈哈哈"]
    assert (drops["too_short"], drops["too_long"]) == (2, 1)


def test_platform_spam_signals():
    raw = comments(
        {"text": "a", "weight": 0}, {"text": "b", "weight": 1}, {"text": "c", "weight": 5}, {"text": "d"},
        {"text": "e", "score": -5000}, {"text": "f", "score": -999}, {"text": "g", "score": 0},
    )
    table, drops = clean_comments(raw, only(min_weight=2, min_score=-1000))
    assert table.column("text").to_pylist() == ["c", "d", "f", "g"]
    assert (drops["low_weight"], drops["low_score"]) == (2, 1)


def test_language_identified_and_allow_list():
    rows = ["这个视频真的太好看了", "this is a really funny video", "かわいいですね本当に", "233", "ok"]
    table, drops = clean_comments(comments(*({"text": t} for t in rows)), only(langid=True))
    assert table.column("language").to_pylist() == ["zh", "en", "ja", None, None]
    assert sum(drops.values()) == 0
    table, drops = clean_comments(comments(*({"text": t} for t in rows)), only(langid=True, languages=["zh"]))
    assert table.column("text").to_pylist() == ["这个视频真的太好看了", "233", "ok"]
    assert drops["language"] == 2
    _, drops = clean_comments(comments(*({"text": t} for t in rows)), only(langid=True, languages=["zh"], keep_unknown_language=False))
    assert drops["language"] == 4


# ---------------------------------------------------------------- duplicates


def test_exact_duplicates_within_window_of_last_kept():
    offsets = [0, 5000, 10000, 10001, 25000, 30000]
    raw = comments(*({"text": "同一句", "offset_ms": t} for t in offsets), {"text": "另一句", "offset_ms": 1})
    table, drops = clean_comments(raw, only(dedup_exact=True, dedup_window_ms=10_000))
    # 5000 and 10000 are within 10 s of 0; 10001 opens a window; 25000 is 14999 after it.
    assert table.column("offset_ms").to_pylist() == [0, 10001, 25000, 1]
    assert drops["exact_duplicate"] == 3


def test_duplicates_are_per_video_and_input_order_does_not_matter():
    rows = [("v2", 3000), ("v1", 9000), ("v1", 0), ("v2", 2000), ("v1", 4000)]
    full = [dict(platform="bilibili", video_id=v, comment_id=f"c{i}", offset_ms=t, text="awsl", mode="scroll",
                 superchat=False, source_file="f") for i, (v, t) in enumerate(rows)]
    table, drops = clean_comments(pa.Table.from_pylist(full, schema=COMMENTS_SCHEMA), only(dedup_exact=True, dedup_window_ms=5000))
    # v1 keeps its earliest (0) and 9000 (> 5 s after 0); v2 keeps 2000; input order is kept.
    assert list(zip(table.column("video_id").to_pylist(), table.column("offset_ms").to_pylist())) == [("v1", 9000), ("v1", 0), ("v2", 2000)]
    assert drops["exact_duplicate"] == 2


def test_window_none_keeps_one_copy_per_video():
    raw = comments(*({"text": "前方高能", "offset_ms": t} for t in (0, 60_000, 3_600_000)))
    table, drops = clean_comments(raw, only(dedup_exact=True, dedup_window_ms=None))
    assert table.num_rows == 1 and drops["exact_duplicate"] == 2


def test_near_duplicates_counted_apart_from_exact():
    rows = [("哈哈哈", 0), ("哈哈哈", 500), ("哈哈!", 1000), ("Hello, World", 2000), ("hello world!!", 3000), ("???", 4000), ("??", 4500), ("!!", 4600)]
    raw = comments(*({"text": t, "offset_ms": o} for t, o in rows))
    table, drops = clean_comments(raw, only(dedup_exact=True, dedup_near=True, dedup_window_ms=10_000))
    assert table.column("text").to_pylist() == ["哈哈哈", "Hello, World", "???", "!!"]
    assert (drops["exact_duplicate"], drops["near_duplicate"]) == (1, 3)


def test_near_duplicate_key():
    keys = near_duplicate_key(pa.array(["哈哈哈!", "哈哈", "Hello, World", "hello world", "???", "好好学习", "[doge]"]))
    # Every run is cut to one, so "hello" and "helo" also share a key.
    assert keys.to_pylist() == ["哈", "哈", "heloworld", "heloworld", "?", "好学习", "doge"]


def test_duplicate_comment_ids():
    raw = comments({"text": "a", "comment_id": "1"}, {"text": "a", "comment_id": "1", "offset_ms": 50_000}, {"text": "b", "comment_id": "2"})
    table, drops = clean_comments(raw, only(dedup_ids=True))
    assert table.column("comment_id").to_pylist() == ["1", "2"] and drops["duplicate_id"] == 1


def _reference_window(group, offset, window):
    """The rule written as a plain loop, to check the vectorised one against."""
    keep = [False] * len(group)
    last: dict = {}
    for i in sorted(range(len(group)), key=lambda i: (group[i], offset[i], i)):
        g = group[i]
        if g not in last or (window is not None and offset[i] - last[g] > window):
            keep[i], last[g] = True, offset[i]
    return keep


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(-50, 200)), max_size=60),
    st.one_of(st.none(), st.integers(0, 120)),
)
def test_first_in_window_matches_reference(rows, window):
    group = np.array([g for g, _ in rows], dtype=np.uint64)
    offset = np.array([t for _, t in rows], dtype=np.int64)
    assert first_in_window(group, offset, window).tolist() == _reference_window(group.tolist(), offset.tolist(), window)


def test_first_in_window_long_chain():
    offset = np.arange(0, 61_000, 1000, dtype=np.int64)  # a chant every second for a minute
    keep = first_in_window(np.zeros(offset.size, dtype=np.uint64), offset, 10_000)
    assert offset[keep].tolist() == [0, 11_000, 22_000, 33_000, 44_000, 55_000]


# ---------------------------------------------------------------- the whole step


def _noisy_table(n_videos: int = 3, per_video: int = 40, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)
    pool = ["哈哈哈哈哈哈", "2333333", "ｗｗｗｗ", "這個視頻太好看了", "这个视频太好看了", "前方高能", "awsl", "  ", "".join(map(chr, range(0x4E00, 0x4E78))),
            "好耶\u2028好耶", "Hello, World", "hello world", "君の指先", "泪目", "草"]
    rows = []
    for v in range(n_videos):
        for i in range(per_video):
            rows.append(dict(platform="bilibili", video_id=f"v{v}", comment_id=f"{v}-{i % (per_video - 3)}",
                             offset_ms=rng.randrange(0, 120_000), text=rng.choice(pool),
                             mode=rng.choice(["scroll"] * 8 + ["positioned", "code"]), weight=rng.choice([None, 0, 3, 9]),
                             superchat=False, source_file=f"v{v}.xml"))
    rng.shuffle(rows)
    return pa.Table.from_pylist(rows, schema=COMMENTS_SCHEMA)


def test_counts_add_up_and_output_schema():
    raw = _noisy_table()
    clean, drops = clean_comments(raw, CleaningConfig(min_weight=1))
    assert list(drops) == list(FILTERS)
    assert raw.num_rows - clean.num_rows == sum(drops.values())
    assert clean.schema.equals(CLEAN_COMMENTS_SCHEMA, check_metadata=True)
    for name in ("code", "low_weight", "too_short", "too_long", "duplicate_id", "exact_duplicate", "near_duplicate"):
        assert drops[name] > 0, name
    assert "code" not in clean.column("mode").to_pylist()
    assert "這個視頻太好看了" not in clean.column("text").to_pylist()


def test_cleaning_clean_output_drops_nothing_more():
    once, _ = clean_comments(_noisy_table())
    twice, drops = clean_comments(once)
    assert sum(drops.values()) == 0
    assert twice.equals(once)


def test_everything_off_changes_nothing():
    raw = _noisy_table()
    clean, drops = clean_comments(raw, only())
    assert sum(drops.values()) == 0
    assert clean.drop_columns(["language"]).cast(COMMENTS_SCHEMA).equals(raw)
    assert clean.column("language").null_count == clean.num_rows


def test_config_from_dict():
    cfg = CleaningConfig(**{"languages": ["zh", "ja"], "dedup_window_ms": 8000, "t2s_platforms": ["bilibili"]})
    assert cfg.languages == ("zh", "ja") and cfg.t2s_platforms == ("bilibili",)
    assert CleaningConfig(**cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict()))["languages"] == ["zh", "ja"]
    with pytest.raises(TypeError):
        CleaningConfig(**{"dedup_windw_ms": 1})
    with pytest.raises(ValueError):
        CleaningConfig(max_repeat=0)


def test_missing_column_names_the_source():
    raw = comments({"text": "a"}).drop_columns(["offset_ms"])
    with pytest.raises(CleaningInputError, match=r"hand-made\.xml.*offset_ms"):
        clean_comments(raw)


def test_missing_nullable_columns_are_filled():
    raw = comments({"text": "ok"}).drop_columns(["weight", "score", "raw"])
    clean, _ = clean_comments(raw, only())
    assert clean.column("weight").to_pylist() == [None]


def test_streaming_matches_in_memory(tmp_path: Path):
    raw = _noisy_table(n_videos=4, per_video=60, seed=3)
    cfg = CleaningConfig(batch_rows=17)  # batches split videos' rows across many batches
    expected, expected_drops = clean_comments(raw, cfg)
    half = raw.num_rows // 2
    pq.write_table(raw.slice(0, half), tmp_path / "a.parquet", row_group_size=23)
    pq.write_table(raw.slice(half), tmp_path / "b.parquet", row_group_size=23)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    out = tmp_path / "out" / "clean.parquet"
    spool = tmp_path / "spool"
    spool.mkdir()
    report = clean_parquet([tmp_path / "a.parquet", tmp_path / "broken.parquet", tmp_path / "b.parquet"], out, cfg, spool_dir=spool)
    assert pq.read_table(out).cast(CLEAN_COMMENTS_SCHEMA).equals(expected)  # Parquet stores posted_at in ms
    assert report.drops == expected_drops and report.rows_in == raw.num_rows and report.rows_out == expected.num_rows
    assert list(report.failed) == [str(tmp_path / "broken.parquet")]
    assert sorted(p.name for p in out.parent.iterdir()) == ["clean.parquet"]  # nothing half-written left
    assert list(spool.iterdir()) == []  # the spool is deleted

    with clean_batches(raw.to_batches(max_chunksize=31), cfg, spool_dir=spool) as result:
        assert pa.Table.from_batches(list(result), schema=CLEAN_COMMENTS_SCHEMA).equals(expected)
        assert result.drops == expected_drops
    assert list(spool.iterdir()) == []


def test_normalise_text_exact_pipeline():
    out = normalise_text(pa.array(["  ＷＷＷＷＷ\u2028這個　", None, "哈哈哈哈哈"]))
    assert out.to_pylist() == ["WWW 这个", "", "哈哈哈"]


# ---------------------------------------------------------------- a real Bilibili file

_BILI_MODES = {1: "scroll", 2: "scroll", 3: "scroll", 4: "bottom", 5: "top", 6: "reverse", 7: "positioned", 8: "code", 9: "code"}


def _read_bilibili_xml(path: Path) -> pa.Table:
    """The fixture as a comments table, parsed here with lxml (the formats module is separate)."""
    from lxml import etree

    rows = []
    for d in etree.parse(str(path)).getroot().iter("d"):
        p = d.get("p").split(",")
        mode, text = int(p[1]), d.text or ""
        if mode == 7 and text.startswith("["):
            text = str(json.loads(text)[4])
        rows.append(dict(platform="bilibili", video_id=path.stem, comment_id=p[7], offset_ms=round(float(p[0]) * 1000),
                         text=text.replace("/n", "\n"), mode=_BILI_MODES.get(mode, "other"), weight=int(p[8]),
                         pool=int(p[5]), superchat=False, source_file=path.name))
    return pa.Table.from_pylist(rows, schema=COMMENTS_SCHEMA)


def test_real_bilibili_file():
    raw = _read_bilibili_xml(fixture_path("bilibili", "xml", "1176840.xml"))
    clean, drops = clean_comments(raw)
    assert raw.num_rows == 3600 and raw.num_rows - clean.num_rows == sum(drops.values())
    # A comment-wall video: the same devotion lines are posted again and again.
    assert drops["exact_duplicate"] > 300 and drops["near_duplicate"] > 50
    assert 0.3 * raw.num_rows < clean.num_rows < 0.9 * raw.num_rows
    assert drops["code"] == 0 and drops["low_weight"] == 0  # no mode 8 here; weights are 5-10
    assert (pa.compute.equal(clean.column("mode"), "positioned")).to_numpy().sum() > 10
    raw_text, clean_text = raw.column("text").to_pylist(), clean.column("text").to_pylist()
    # Traditional characters in Chinese comments (no kana) become simplified; Japanese keeps its kanji.
    assert any("電" in t and not _has_kana(t) for t in raw_text)
    assert not any("電" in t and not _has_kana(t) for t in clean_text)
    assert any("電" in t and _has_kana(t) for t in clean_text)
    languages = clean.column("language").to_pylist()
    assert languages.count("zh") > languages.count("ja") > 0
    assert all(len(t) <= 100 and t == t.strip() and "\n" not in t for t in clean_text)


def _has_kana(text: str) -> bool:
    return any("\u3040" <= ch <= "\u30ff" for ch in text)


def test_empty_input():
    clean, drops = clean_comments(COMMENTS_SCHEMA.empty_table())
    assert clean.num_rows == 0 and clean.schema.equals(CLEAN_COMMENTS_SCHEMA) and sum(drops.values()) == 0
