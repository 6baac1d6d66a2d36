"""Comment formats: every real fixture, hostile and broken input, and the contracts of
``read_comments`` (schema, dedup, hashed authors, typed errors)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import check_contract, fixture_path, hash_author
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lcaffect_pipeline.formats._xml as xml_reader
import lcaffect_pipeline.formats.bilibili as bili
from lcaffect_pipeline.formats.bili_proto import DmSegConfig, DmSegMobileReply, DmWebViewReply
from lcaffect_pipeline.formats import (
    CommentFormatError,
    comment_stats,
    dedupe,
    detect_format,
    parse_file,
    positioned_text,
    read_comments,
    video_id_from_path,
)
from lcaffect_pipeline.schema import COMMENTS_SCHEMA

SALT = "test-salt"


def utc(seconds: int, ms: int = 0) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc) + timedelta(milliseconds=ms)


def rows_by_id(table: pa.Table) -> dict[str, dict]:
    return {row["comment_id"]: row for row in table.to_pylist()}


def write(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------------------ Bilibili XML

BILI_XML = {  # cid: (comments, one exact row: id, offset_ms, mode, color, font, posted, weight, text)
    "1176840": (3600, ("1867111461", 56939, "top", 10066329, 25, 1463753442, 10, "世人皆知唯我哔哩哔哩★长驱直入最强电击公主★存二次元此生无悔入炮★")),
    "1660054944": (1200, ("1655608139740939264", 135635, "top", 16777215, 25, 1724455070, 10, "五路三叉戟僵尸：首先我没招谁惹谁")),
    "18678311": (5, ("13866368281083904", 42923, "scroll", 16777215, 25, 1553590173, 10, "剑18w卡住了")),
    "2170097": (973, ("1038631579162865664", 238217, "scroll", 16777215, 25, 1650905732, 10, "歌词都说了if I were still alive 就是女主死了啊（")),
    "285968687": (1800, ("44486667605639173", 80760, "scroll", 16777215, 25, 1611993759, 10, "非物质文化遗产")),
}


@pytest.mark.parametrize("cid", sorted(BILI_XML))
def test_bilibili_xml_fixture(cid):
    path = fixture_path("bilibili", "xml", f"{cid}.xml")
    count, (cid_, offset, mode, color, font, posted, weight, text) = BILI_XML[cid]
    assert detect_format(path) == "bilibili_xml"
    table = read_comments(path, author_salt=SALT)
    check_contract(table)
    assert table.num_rows == count
    assert comment_stats(table)["skipped"] == 0
    assert set(table["video_id"].to_pylist()) == {cid}
    assert set(table["platform"].to_pylist()) == {"bilibili"}
    row = rows_by_id(table)[cid_]
    assert (row["offset_ms"], row["mode"], row["color"], row["font_size"], row["weight"], row["text"]) == (
        offset, mode, color, font, weight, text)
    assert row["posted_at"] == utc(posted)
    assert row["pool"] == 0 and row["raw"] is None and row["superchat"] is False


def test_bilibili_xml_positioned_comment_keeps_payload():
    table = read_comments(fixture_path("bilibili", "xml", "1176840.xml"))
    row = rows_by_id(table)["4236086442"]  # p="156.00000,7,10,16711782,...": ASCII art in mode 7
    assert row["mode"] == "positioned" and row["offset_ms"] == 156000 and row["font_size"] == 10
    assert row["raw"].startswith('[0.1,0.01,"1-1",9,".     .::ivVOmU,')
    assert row["text"] == json.loads(row["raw"])[4].replace("/n", "\n")
    modes = table["mode"].to_pylist()
    assert (modes.count("scroll"), modes.count("top"), modes.count("bottom"), modes.count("positioned"), modes.count("reverse")) == (2034, 1512, 27, 26, 1)


# ------------------------------------------------------------------------- Bilibili protobuf

BILI_PB = {  # cid: (comments after dedup, overlap with the XML of the same cid)
    "1176840": (15752, 138),
    "1660054944": (1458, 1198),
    "18678311": (5, 5),
    "2170097": (973, 973),
    "285968687": (2473, 1738),
}


@pytest.mark.parametrize("cid", sorted(BILI_PB))
def test_bilibili_protobuf_folder(cid):
    folder = fixture_path("bilibili", "protobuf", cid)
    table = read_comments(folder, author_salt=SALT)
    check_contract(table)
    assert table.num_rows == BILI_PB[cid][0]
    assert set(table["video_id"].to_pylist()) == {cid}
    for segment in folder.iterdir():
        if segment.stat().st_size:
            assert detect_format(segment) == "bilibili_protobuf"


def test_bilibili_protobuf_exact_values():
    table = read_comments(fixture_path("bilibili", "protobuf", "1176840"))
    row = rows_by_id(table)["328008371"]
    assert (row["offset_ms"], row["mode"], row["font_size"], row["color"], row["text"], row["weight"]) == (
        40607, "scroll", 25, 16750950, "前方高能反应(～ o ～)~", 9)
    assert row["posted_at"] == utc(1382774695)
    modes = table["mode"].to_pylist()
    assert (modes.count("top"), modes.count("scroll"), modes.count("bottom"), modes.count("positioned")) == (8338, 5072, 1472, 867)
    second = rows_by_id(read_comments(fixture_path("bilibili", "protobuf", "1660054944")))
    assert second["1655603120031848704"]["offset_ms"] == 469611  # from segment 2 (index 1)
    assert second["1655603120031848704"]["text"] == "强行对称"


def test_bilibili_protobuf_windows_without_comments():
    folder = fixture_path("bilibili", "protobuf", "18678311")
    for i in (1, 2, 3):  # windows 2-4 carry only their window bounds and a colourful style
        segment = folder / f"18678311-{i}.pb"
        assert parse_file(segment).num_rows == 0
        assert list(DmSegMobileReply.FromString(segment.read_bytes()).window_ms) == [360000 * i, 360000 * (i + 1)]


def test_pakku_2020_segment():
    path = fixture_path("bilibili", "protobuf", "pakku_2020_seg1.so")
    assert detect_format(path) == "bilibili_protobuf"
    table = read_comments(path)
    check_contract(table)
    assert table.num_rows == 1923
    row = rows_by_id(table)["4365300752"]
    assert (row["offset_ms"], row["mode"], row["text"], row["weight"], row["color"]) == (0, "bottom", "新·镇站之宝", 10, 0)
    assert row["posted_at"] == utc(1396865208)
    modes = table["mode"].to_pylist()
    assert (modes.count("scroll"), modes.count("bottom"), modes.count("top")) == (1501, 279, 143)


@pytest.mark.parametrize("cid", sorted(BILI_PB))
def test_xml_and_protobuf_of_one_cid_agree(cid):
    xml = rows_by_id(read_comments(fixture_path("bilibili", "xml", f"{cid}.xml")))
    pb = rows_by_id(read_comments(fixture_path("bilibili", "protobuf", cid)))
    common = set(xml) & set(pb)
    assert len(common) == BILI_PB[cid][1]
    for key in ("offset_ms", "text", "mode", "color", "font_size", "posted_at", "pool", "raw"):
        assert [xml[c][key] for c in sorted(common)] == [pb[c][key] for c in sorted(common)], key


def _segment(elems: list[dict]) -> bytes:
    reply = DmSegMobileReply()
    for elem in elems:
        reply.elems.add(**elem)
    return reply.SerializeToString()


def test_duplicates_across_segment_edges_removed(tmp_path):
    edge = {"id": 7, "idStr": "7", "progress": 360000, "mode": 1, "content": "on the edge", "ctime": 1700000000}
    folder = tmp_path / "4242"
    folder.mkdir()
    write(folder, "4242-0.pb", _segment([{"id": 1, "progress": 1000, "mode": 1, "content": "a"}, edge]))
    write(folder, "4242-1.pb", _segment([edge, {"id": 9, "progress": 400000, "mode": 5, "content": "b"}]))
    table = read_comments(folder)
    check_contract(table)
    assert table["comment_id"].to_pylist() == ["1", "7", "9"]
    assert comment_stats(table)["duplicates"] == 1
    assert set(table["video_id"].to_pylist()) == {"4242"}
    # a real segment read twice (as overlapping windows would give) keeps one copy of each
    real = fixture_path("bilibili", "protobuf", "1660054944", "1660054944-1.pb")
    shutil.copy(real, folder / "4242-2.pb")
    shutil.copy(real, folder / "4242-3.pb")
    assert read_comments(folder).num_rows == 3 + 175


def test_segments_sorted_numerically_and_empty_segment_in_a_set(tmp_path):
    folder = tmp_path / "55"
    folder.mkdir()
    write(folder, "55-10.pb", _segment([{"id": 2, "progress": 3_600_000, "content": "late copy", "mode": 1}]))
    write(folder, "55-2.pb", _segment([{"id": 2, "progress": 3_600_000, "content": "early copy", "mode": 1}]))
    write(folder, "55-3.pb", b"")  # a window without comments can come back as an empty body
    table = read_comments(folder)
    assert table["text"].to_pylist() == ["early copy"]  # 55-2 sorts before 55-10
    with pytest.raises(CommentFormatError, match="empty file"):
        read_comments(folder / "55-3.pb")  # on its own, an empty file is an error


def test_ptars_and_protobuf_runtime_decode_alike(monkeypatch):
    pytest.importorskip("ptars")
    folder = fixture_path("bilibili", "protobuf", "1176840")
    fast = read_comments(folder, author_salt=SALT)
    monkeypatch.setattr(bili, "_ptars_handler", lambda: None)
    slow = read_comments(folder, author_salt=SALT)
    assert fast.equals(slow)


def test_view_reply_round_trip():
    body = DmWebViewReply(state=0, dm_sge=DmSegConfig(page_size=360000, total=4), count=8).SerializeToString()
    reply = DmWebViewReply.FromString(body + b"\xa2\x06\x03abc")  # plus an unknown field 100
    assert (reply.dm_sge.total, reply.dm_sge.page_size, reply.count) == (4, 360000, 8)


# --------------------------------------------------------------------------- Bilibili legacy


def test_legacy_boss_xml_eight_fields():
    table = read_comments(fixture_path("bilibili", "legacy", "boss.xml"))
    check_contract(table)
    assert table.num_rows == 1000
    assert table["weight"].null_count == 1000  # 8-field p: no weight
    row = rows_by_id(table)["576934780"]
    assert (row["offset_ms"], row["mode"], row["text"], row["color"]) == (8230, "positioned", "《霸道总裁爱上我》(SMAP-[SHAKE])", 16751001)
    assert row["raw"].startswith('[0,0,"1-1",3.8,"《霸道总裁爱上我》')
    modes = table["mode"].to_pylist()
    assert (modes.count("scroll"), modes.count("bottom"), modes.count("positioned"), modes.count("top")) == (770, 117, 63, 50)


def test_legacy_comment_xml_newlines():
    table = read_comments(fixture_path("bilibili", "legacy", "comment.xml"))
    check_contract(table)
    assert table.num_rows == 1386
    row = rows_by_id(table)["30723621"]
    assert (row["offset_ms"], row["text"], row["mode"]) == (94000, "神啊，知道，二次元的世界吗~~\n", "scroll")
    assert not any("/n" in t for t in table["text"].to_pylist())


def test_legacy_scripting_modes():
    table = read_comments(fixture_path("bilibili", "legacy", "scripting_tsubasa.xml"))
    check_contract(table)
    assert table.num_rows == 654
    rows = rows_by_id(table)
    first = rows["147777736"]
    assert (first["text"], first["mode"], first["offset_ms"], first["pool"], first["font_size"]) == ("Please", "positioned", 400, 1, 36)
    assert first["raw"] == '[63,113,"1-0.5",5.1,"Please",0,0,63,113,0.5,0,true,"黑体",1]'
    code = rows["149343959"]  # mode 8: script text kept, mode "code"
    assert code["mode"] == "code" and code["text"].startswith("var exCanvas=$.createCanvas({lifeTime:2.0")
    modes = table["mode"].to_pylist()
    assert (modes.count("positioned"), modes.count("code"), modes.count("reverse"), modes.count("scroll")) == (552, 82, 10, 10)
    assert rows["148091536"]["text"].startswith("\n\n\u3000")  # mode 6 with /n line breaks


def test_legacy_empty_p_is_skipped_and_counted():
    path = fixture_path("bilibili", "legacy", "synthetic_BilibiliFormat.xml")
    table = read_comments(path)
    check_contract(table)
    assert table.num_rows == 0
    assert comment_stats(table)["skipped"] == 1
    with pytest.raises(CommentFormatError, match="strict"):
        read_comments(path, strict=True)


def test_invalid_no_closing_keeps_every_completed_comment():
    path = fixture_path("bilibili", "legacy", "invalid_no_closing.xml")
    table = read_comments(path)
    check_contract(table)
    # <d>[4] is never closed; the comments completed before the error at </i> are all kept
    assert table["text"].to_pylist() == ["[1]-。-", "[2]路过", "[3]说真的原曲好听很多", "[5]喜欢这个啊", "[6]= =", "[7]G_<"]
    errors = comment_stats(table)["xml_errors"]
    assert len(errors) == 1 and "invalid_no_closing.xml" in errors[0] and "mismatch" in errors[0]
    with pytest.raises(CommentFormatError, match="invalid_no_closing.xml"):
        read_comments(path, strict=True)


def test_invalid_syntax_error_keeps_comments_before_the_error():
    path = fixture_path("bilibili", "legacy", "invalid_syntax_error.xml")
    table = read_comments(path)
    assert table["text"].to_pylist() == ["[1]-。-", "[2]路过", "[3]说真的原曲好听很多"]
    assert table["offset_ms"].to_pylist() == [0, 1000, 2000]
    assert "attributes construct error" in comment_stats(table)["xml_errors"][0]


def test_invalid_xss_is_not_a_comment_file():
    path = fixture_path("bilibili", "legacy", "invalid_xss.xml")
    with pytest.raises(CommentFormatError) as info:
        read_comments(path)
    assert info.value.path == str(path) and "<img>" in info.value.reason
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------- other platforms


def test_acfun_legacy_json():
    path = fixture_path("acfun", "ACFun.json")
    assert detect_format(path) == "acfun_json"
    table = read_comments(path, author_salt=SALT)
    check_contract(table)
    assert table.num_rows == 155
    rows = table.to_pylist()
    first = rows[0]
    assert (first["offset_ms"], first["text"], first["mode"], first["color"], first["font_size"]) == (98200, "我谢了你的爱", "scroll", 16777215, 25)
    assert first["posted_at"] == utc(1315564729) and first["author"] is None  # "guest" is nobody
    assert rows[1]["text"].startswith("不") and "\r" not in rows[1]["text"] and "\n" in rows[1]["text"]
    last = rows[-1]  # mode 7: JSON payload, text in "n"
    assert (last["text"], last["mode"], last["font_size"], last["color"]) == ("爆刘继芬啊~", "positioned", 33, 153)
    assert json.loads(last["raw"])["n"] == "爆刘继芬啊~"
    modes = table["mode"].to_pylist()
    assert (modes.count("positioned"), modes.count("top"), modes.count("bottom"), modes.count("scroll")) == (90, 51, 13, 1)
    assert sum(a is not None for a in table["author"].to_pylist()) == 155 - 63  # 63 guests


def test_niconico_legacy_xml():
    path = fixture_path("niconico", "sm23726371_legacy.xml")
    assert detect_format(path) == "niconico_xml"
    table = read_comments(path, author_salt=SALT)
    check_contract(table)
    assert table.num_rows == 181 and comment_stats(table)["skipped"] == 3  # 3 chats are deleted
    assert set(table["video_id"].to_pylist()) == {"sm23726371"}
    rows = rows_by_id(table)
    first = rows["1402132004:1"]
    assert (first["offset_ms"], first["text"], first["mode"], first["font_size"], first["color"]) == (760, "1", "scroll", 25, 0xFFFFFF)
    assert first["posted_at"] == utc(1402132048)
    last = rows["1402132004:184"]  # mail="184 shita"
    assert (last["offset_ms"], last["text"], last["mode"]) == (48630, "AFTER", "bottom")
    assert "1402132004:59" not in rows  # deleted="2"
    modes = table["mode"].to_pylist()
    assert (modes.count("scroll"), modes.count("bottom"), modes.count("top")) == (172, 8, 1)


def test_niconico_legacy_json():
    path = fixture_path("niconico", "sm9_legacy.json")
    assert detect_format(path) == "niconico_legacy_json"
    table = read_comments(path)
    check_contract(table)
    assert table.num_rows == 954
    rows = rows_by_id(table)
    first = rows["1173108780:4118020"]
    assert (first["offset_ms"], first["text"], first["score"]) == (361140, "混ぜるな危険ｗｗｗ", -2200)
    assert first["posted_at"] == utc(1361103390)
    easy = rows["1173108780:38651:2"]  # fork 2 numbers its comments apart from the main thread
    assert (easy["text"], easy["offset_ms"]) == ("88888888", 0)
    assert easy["posted_at"] == utc(1638078089, 639)  # date + date_usec
    styled = [r for r in table.to_pylist() if r["font_size"] == 36 and r["color"] == 0x00FFFF]
    assert styled  # "naka big cyan 184 device:Switch"


def test_niconico_comments_json_from_yt_dlp(tmp_path):
    items = [
        {"id": "1001", "no": 1, "vposMs": 1500, "body": "うぽつ", "commands": ["184"], "userId": "nvc:abc",
         "isPremium": False, "score": 0, "postedAt": "2023-05-01T12:00:00+09:00", "nicoruCount": 0, "source": "leaf"},
        {"id": "1002", "no": 2, "vposMs": -200, "body": "上", "commands": ["ue", "big", "red"], "userId": "nvc:def",
         "score": -1000, "postedAt": "2023-05-01T12:00:05+09:00"},
        {"id": "1003", "no": 3, "body": "no position"},  # malformed: skipped and counted
    ]
    path = write(tmp_path, "sm42.comments.json", json.dumps(items, ensure_ascii=False))
    assert detect_format(path) == "niconico_comments_json"
    table = read_comments(path, author_salt=SALT)
    check_contract(table)
    assert comment_stats(table)["skipped"] == 1
    assert set(table["video_id"].to_pylist()) == {"sm42"}
    a, b = table.to_pylist()
    assert (a["comment_id"], a["offset_ms"], a["text"], a["mode"], a["posted_at"]) == ("1001", 1500, "うぽつ", "scroll", utc(1682910000))
    assert (b["offset_ms"], b["mode"], b["font_size"], b["color"], b["score"]) == (-200, "top", 36, 0xFF0000, -1000)
    empty = write(tmp_path, "sm43.comments.json", "[]")  # yt-dlp on a video without comments
    assert read_comments(empty).num_rows == 0


def test_youtube_live_chat_replay():
    path = fixture_path("youtube", "chatreplay.live_chat.json")
    assert detect_format(path) == "youtube_live_chat"
    table = read_comments(path, author_salt=SALT)
    check_contract(table)
    assert table.num_rows == 48  # 47 text messages + 1 Super Chat; the placeholder is no comment
    assert set(table["video_id"].to_pylist()) == {"chatreplay"}
    first = table.to_pylist()[0]
    assert (first["offset_ms"], first["text"], first["mode"]) == (101308, "や", "scroll")
    assert first["comment_id"] == "CjoKGkNMYXBzZTdudHVVQ0Zjc0IxZ0FkTnFnQjVREhxDSnlBNHV2bnR1VUNGV0dnd2dvZDd3NE5aZy0w"
    assert first["posted_at"] == utc(1571985910, 682)  # timestampUsec, to the millisecond
    paid = [r for r in table.to_pylist() if r["superchat"]]
    assert [(r["offset_ms"], r["text"]) for r in paid] == [(3269119, "Hello from Czech Republic")]


def test_youtube_emoji_runs_and_bad_lines(tmp_path):
    renderer = {
        "message": {"runs": [
            {"text": "hi "},
            {"emoji": {"emojiId": "😀", "shortcuts": [":grinning_face:"], "isCustomEmoji": False}},
            {"emoji": {"emojiId": "UCx/abc", "shortcuts": [":_kitty:"], "isCustomEmoji": True}},
            {"emoji": {"emojiId": "UCx/def", "isCustomEmoji": True,
                       "image": {"accessibility": {"accessibilityData": {"label": "wave"}}}}},
        ]},
        "id": "m1", "timestampUsec": "1700000000123456", "authorExternalChannelId": "UCraw",
    }
    line = {"replayChatItemAction": {"actions": [
        {"addChatItemAction": {"item": {"liveChatTextMessageRenderer": renderer}}},
        {"addLiveChatTickerItemAction": {"item": {}}},  # not a chat message
    ], "videoOffsetTimeMsec": "5000"}}
    live = {"replayChatItemAction": {"actions": [{"addChatItemAction": {"item": {"liveChatTextMessageRenderer": {
        "message": {"runs": [{"text": "live"}]}, "id": "m2"}}}}]}, "videoOffsetTimeMsec": "7000"}
    path = write(tmp_path, "abc123.live_chat.json", "\n".join([json.dumps(line), json.dumps(live), '{"truncated": ']))
    table = read_comments(path, author_salt=SALT)
    check_contract(table)
    assert table["text"].to_pylist() == ["hi 😀:_kitty:wave", "live"]
    assert table["offset_ms"].to_pylist() == [5000, 7000]  # offset inside or beside the action
    assert comment_stats(table)["skipped"] == 1
    assert table["author"].to_pylist()[0] == hash_author("UCraw", SALT)


# ---------------------------------------------------------------------- privacy and dedup


def _raw_ids() -> dict[str, set[str]]:
    """Raw user ids straight from the fixture files, read independently of the parser."""
    out = {}
    for name in ("1176840.xml", "2170097.xml"):
        text = fixture_path("bilibili", "xml", name).read_text("utf-8")
        out[name] = {p.split(",")[6] for p in re.findall(r'<d p="([^"]*)"', text)}
    nico = fixture_path("niconico", "sm23726371_legacy.xml").read_text("utf-8")
    out["nico"] = set(re.findall(r'user_id="([^"]*)"', nico))
    return out


def test_no_raw_author_ids_in_output():
    raw = _raw_ids()
    for key, path in (("1176840.xml", ("bilibili", "xml", "1176840.xml")), ("2170097.xml", ("bilibili", "xml", "2170097.xml")),
                      ("nico", ("niconico", "sm23726371_legacy.xml"))):
        table = read_comments(fixture_path(*path), author_salt=SALT)
        authors = set(table["author"].to_pylist())
        assert authors.isdisjoint(raw[key])
        assert all(re.fullmatch(r"[0-9a-f]{24}", a) for a in authors)
        assert len(authors) == len(raw[key] - {""})  # one hash per distinct user
        some = sorted(raw[key])[0]
        assert hash_author(some, SALT) in authors
        for column in ("comment_id", "raw", "source_file"):
            assert set(table[column].to_pylist()).isdisjoint(raw[key])
    table = read_comments(fixture_path("bilibili", "xml", "2170097.xml"), author_salt="")  # no salt: dropped
    assert table["author"].null_count == table.num_rows


def test_salt_from_environment(monkeypatch):
    path = fixture_path("bilibili", "xml", "18678311.xml")
    monkeypatch.setenv("LCAFFECT_AUTHOR_SALT", "env-salt")
    table = read_comments(path)
    assert table["author"].to_pylist()[0] == hash_author("2c6abba1", "env-salt")


def test_verbatim_repeats_without_dmid_dedupe_to_one(tmp_path):
    d = '<d p="1.5,1,25,16777215,1300000000,0,abcd1234">same</d>'  # 7 fields: no dmid
    other = '<d p="1.5,1,25,16777215,1300000000,0,abcd1234">different</d>'
    path = write(tmp_path, "old.xml", f"<i>{d}{d}{other}{d}</i>")
    table = read_comments(path)
    check_contract(table)
    assert table["text"].to_pylist() == ["same", "different"]
    assert comment_stats(table)["duplicates"] == 2
    assert all(i.startswith("h") for i in table["comment_id"].to_pylist())
    assert read_comments(path)["comment_id"].to_pylist() == table["comment_id"].to_pylist()  # stable


def test_dedupe_keeps_first_per_platform_and_video():
    table = pa.Table.from_pylist(
        [
            {"platform": "bilibili", "video_id": "1", "comment_id": "x", "offset_ms": 1, "text": "first", "mode": "scroll", "superchat": False, "source_file": "a"},
            {"platform": "bilibili", "video_id": "2", "comment_id": "x", "offset_ms": 2, "text": "other video", "mode": "scroll", "superchat": False, "source_file": "a"},
            {"platform": "bilibili", "video_id": "1", "comment_id": "x", "offset_ms": 3, "text": "second", "mode": "scroll", "superchat": False, "source_file": "b"},
        ],
        schema=COMMENTS_SCHEMA,
    )
    assert dedupe(table)["text"].to_pylist() == ["first", "other video"]


def test_list_of_sources_and_overrides():
    xml = fixture_path("bilibili", "xml", "18678311.xml")
    seg = fixture_path("bilibili", "protobuf", "18678311", "18678311-0.pb")
    table = read_comments([str(xml), seg], author_salt=SALT)
    check_contract(table)
    assert table.num_rows == 5 and comment_stats(table)["duplicates"] == 5
    assert set(table["source_file"].to_pylist()) == {str(xml)}  # the first copy is kept
    assert comment_stats(table)["formats"] == ["bilibili_protobuf", "bilibili_xml"]
    local = read_comments(xml, platform="local", video_id="clip-7")
    assert set(local["platform"].to_pylist()) == {"local"} and set(local["video_id"].to_pylist()) == {"clip-7"}
    with pytest.raises(ValueError, match="platform"):
        read_comments(xml, platform="myspace")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("1176840.xml", "1176840"),
        ("1176840-3.pb", "1176840"),
        ("sm9_legacy.json", "sm9"),
        ("dQw4w9WgXcQ.live_chat.json", "dQw4w9WgXcQ"),
        ("sm42.comments.json", "sm42"),
        ("BV1xx411c7mD.danmaku.xml", "BV1xx411c7mD"),
        ("Some title [BV1xx411c7mD].danmaku.xml", "BV1xx411c7mD"),
        ("pakku_2020_seg1.so", "pakku_2020_seg1"),
    ],
)
def test_video_id_from_file_name(name, expected):
    assert video_id_from_path(Path("/x") / name) == expected


# ------------------------------------------------------------------- robustness inside files


def test_bad_elements_are_skipped_and_counted(tmp_path):
    good = '<d p="1.0,1,25,16777215,1300000000,0,u1,{id},10">ok {id}</d>'
    bad = [
        '<d p="abc,1,25,16777215,1300000000,0,u1,90,10">not a time</d>',
        '<d p="1.0,x,25,16777215,1300000000,0,u1,91,10">not a mode</d>',
        '<d p="nan,1,25,16777215,1300000000,0,u1,92,10">nan</d>',
        '<d p="1e300,1,25,16777215,1300000000,0,u1,93,10">too late</d>',
        '<d p="1.0,1,99999999999,16777215,1300000000,0,u1,94,10">int32 overflow</d>',
        '<d p="1.0,1,25">too short</d>',
        '<d>no p</d>',
    ]
    body = "".join(good.format(id=i) for i in range(3)) + "".join(bad) + good.format(id=3)
    path = write(tmp_path, "mixed.xml", f'<?xml version="1.0"?><i>{body}</i>')
    table = read_comments(path)
    check_contract(table)
    assert table["text"].to_pylist() == ["ok 0", "ok 1", "ok 2", "ok 3"]
    assert comment_stats(table)["skipped"] == len(bad)


def test_fast_and_checked_xml_paths_agree(monkeypatch):
    paths = [fixture_path("bilibili", "legacy", n) for n in ("boss.xml", "comment.xml", "scripting_tsubasa.xml")]
    paths.append(fixture_path("bilibili", "xml", "1660054944.xml"))
    fast = [read_comments(p, author_salt=SALT) for p in paths]
    monkeypatch.setattr(bili, "_p_fields_fast", lambda ps: None)
    for p, table in zip(paths, fast):
        assert read_comments(p, author_salt=SALT).equals(table), p


def _safe_reader_only(*_args, **_kwargs):
    raise xml_reader.FastPathAbandoned("forced by the test")
    yield  # a generator, like the real one


@pytest.mark.parametrize("name", ["1176840.xml", "285968687.xml", "boss.xml", "scripting_tsubasa.xml",
                                  "invalid_no_closing.xml", "synthetic_BilibiliFormat.xml"])
def test_fast_and_safe_xml_readers_agree(name, monkeypatch):
    folder = "xml" if name[0].isdigit() else "legacy"
    path = fixture_path("bilibili", folder, name)
    fast = read_comments(path, author_salt=SALT)
    monkeypatch.setattr(bili, "stream_children_fast", _safe_reader_only)
    safe = read_comments(path, author_salt=SALT)
    assert fast.equals(safe) and fast.schema.metadata == safe.schema.metadata


@pytest.mark.parametrize(
    "body, texts",
    [
        ('<d p="1,1,25,1,1,0,u,1,1"><![CDATA[a<b]]></d><d p="2,1,25,1,1,0,u,2,1">c</d>', ["a<b", "c"]),
        ('<d p="1,1,25,1,1,0,u,1,1">a<!-- note -->b</d>', ["ab"]),
        ('<d p="1,1,25,1,1,0,u,1,1">a<b>bold</b>c</d><d p="2,1,25,1,1,0,u,2,1"></d>', ["a", ""]),
        ('<d p="1,1,25,1,1,0,u,1,1"></d><d p="2,1,25,1,1,0,u,2,1">x</d><d>no p</d>', ["", "x"]),
        ('<d p="1,1,25,1,1,0,u,1,1">x</d ><d p="2,1,25,1,1,0,u,2,1">y</d >', ["x", "y"]),
    ],
)
def test_xml_shapes_the_fast_reader_hands_over(tmp_path, body, texts, monkeypatch):
    path = write(tmp_path, "shape.xml", f'<?xml version="1.0"?><i><chatid>1</chatid>{body}</i>')
    table = read_comments(path)
    check_contract(table)
    assert table["text"].to_pylist() == texts
    monkeypatch.setattr(bili, "stream_children_fast", _safe_reader_only)
    assert read_comments(path).equals(table)


def test_positioned_regex_matches_json_reading():
    payloads = [r for name in ("boss.xml", "scripting_tsubasa.xml")
                for r in read_comments(fixture_path("bilibili", "legacy", name))["raw"].to_pylist() if r]
    payloads += ['[1,2,"a",3,"t\\"q"]', '[1,2,"a",3,4]', '[1,2,"a",3,"x",]', '[01,2,"a",3,"x"]',
                 ' [ 1 , 2 , "a" , 3 , "x" ] ', '[NaN,Infinity,"a",-Infinity,"x"]', '[1,2,"a\x01",3,"x"]',
                 '[1,2,"a",3,"\\u00e9"]', '[1,2,[1],3,"x"]', '[true,false,null,1e5,"ok"]', '[1,2,"\\z",3,"x"]']
    modes = pa.array([7] * len(payloads), pa.int32())
    shown, raw = bili._positioned_text(modes, pa.array(payloads, pa.string()))
    assert shown.to_pylist() == [positioned_text(p) for p in payloads]
    assert raw.to_pylist() == payloads


def test_post_time_out_of_range_is_null(tmp_path):
    xml = '<i><d p="1,1,25,1,99999999999999999,0,u,1,1">far future</d><d p="2,1,25,1,1300000000,0,u,2,1">ok</d></i>'
    rows = read_comments(write(tmp_path, "t.xml", xml)).to_pylist()
    assert [r["posted_at"] for r in rows] == [None, utc(1300000000)]


def test_control_characters_and_entities(tmp_path):
    xml = '<i><d p="2,1,25,1,1,0,u,1,1">a\x08b &amp; &lt;c&gt; &#x263A;/nnext</d><d p="3,1,25,1,1,0,u,2,1">after</d></i>'
    table = read_comments(write(tmp_path, "ctl.xml", xml))
    assert table["text"].to_pylist() == ["ab & <c> \u263a\nnext", "after"]


def test_positioned_text_keeps_payload_that_is_not_json():
    assert positioned_text('[1,2,"1-1",4,"hello",0]') == "hello"
    assert positioned_text("not json [") == "not json ["
    assert positioned_text('{"n": 1}') == '{"n": 1}'


def test_mode7_payload_not_json_in_a_file(tmp_path):
    xml = '<i><d p="2,7,25,1,1,0,u,1,1">plain words</d><d p="2,9,25,1,1,0,u,2,1">BAS def text</d></i>'
    rows = read_comments(write(tmp_path, "m7.xml", xml)).to_pylist()
    assert (rows[0]["text"], rows[0]["raw"], rows[0]["mode"]) == ("plain words", "plain words", "positioned")
    assert rows[1]["mode"] == "code"  # BAS (mode 9) is a script like mode 8


# ------------------------------------------------------------------------- unreadable input


def _errors(tmp_path: Path, name: str, data: bytes) -> CommentFormatError:
    path = write(tmp_path, name, data)
    with pytest.raises(CommentFormatError) as info:
        read_comments(path)
    assert info.value.path == str(path) and str(path) in str(info.value) and info.value.reason
    return info.value


def test_junk_bytes(tmp_path):
    import random

    junk = random.Random(1).randbytes(4096)
    assert "protobuf" in _errors(tmp_path, "junk.pb", junk).reason
    _errors(tmp_path, "text.xml", b"hello, this is just text\n")
    assert "not XML" in _errors(tmp_path, "utf16.txt", "hello, this is just text\n".encode("utf-16")).reason


def test_truncated_protobuf(tmp_path):
    data = fixture_path("bilibili", "protobuf", "1660054944", "1660054944-0.pb").read_bytes()
    err = _errors(tmp_path, "1660054944-0.pb", data[:1000])
    assert "DmSegMobileReply" in err.reason


def test_empty_and_missing_files(tmp_path):
    assert "empty" in _errors(tmp_path, "empty.xml", b"").reason
    with pytest.raises(CommentFormatError, match="cannot read"):
        read_comments(tmp_path / "nope.xml")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CommentFormatError, match="no protobuf segment files"):
        read_comments(tmp_path / "nothing")


def test_external_entity_is_refused(tmp_path):
    secret = write(tmp_path, "secret.txt", "TOP-SECRET")
    xxe = f'<?xml version="1.0"?><!DOCTYPE i [<!ENTITY x SYSTEM "file://{secret}">]><i><d p="1,1,25,1,1,0,u,1,1">&x;</d></i>'
    err = _errors(tmp_path, "xxe.xml", xxe.encode())
    assert "DOCTYPE" in err.reason
    ext_dtd = '<?xml version="1.0"?><!DOCTYPE i SYSTEM "http://127.0.0.1:9/evil.dtd"><i/>'
    assert "DOCTYPE" in _errors(tmp_path, "dtd.xml", ext_dtd.encode()).reason


def test_billion_laughs_is_refused(tmp_path):
    entities = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    bomb = f'<?xml version="1.0"?><!DOCTYPE i [{"".join(entities)}]><i><d p="1,1,25,1,1,0,u,1,1">&lol9;</d></i>'
    assert "DOCTYPE" in _errors(tmp_path, "lol.xml", bomb.encode()).reason


def test_json_that_is_not_comments(tmp_path):
    _errors(tmp_path, "a.json", b'[{"name": "x"}]')
    _errors(tmp_path, "b.json", b"[1, 2, 3")
    _errors(tmp_path, "c.json", b"[" * 100_000)  # nesting too deep for the JSON parser
    _errors(tmp_path, "d.json", b"[]")
    _errors(tmp_path, "e.json", b'{"not": "live chat"')


def test_errors_survive_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(CommentFormatError("/a/b.xml", "broken")))
    assert (err.path, err.reason, str(err)) == ("/a/b.xml", "broken", "/a/b.xml: broken")


PREFIXES = [b"", b"<i>", b'<?xml version="1.0"?><i><d p="', b"<packet><chat vpos=", b"[", b'[{"c":"', b'{"replayChatItemAction":', b"\n", b"\x0a\x10\x08"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=300))
def test_random_bytes_parse_or_raise_comment_format_error(prefix, body):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.bin"
        path.write_bytes(prefix + body)
        try:
            table = read_comments(path, author_salt=SALT)
        except CommentFormatError as exc:
            assert exc.path == str(path)
            return
        check_contract(table)


# ------------------------------------------------------------------------------------ memory


def _skipped_elements_xml(path: Path, size: int) -> int:
    """A one-line file of ``size`` bytes whose elements all have a bad ``p`` (nothing is kept)."""
    element = '<d p="x,1,25,16777215,1300000000,0,abcdef12,{i},5">' + "弹" * 30 + "</d>"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?><i>')
        count = 0
        while fh.tell() < size:
            fh.write("".join(element.format(i=count + k) for k in range(1000)))
            count += 1000
        fh.write("</i>")
    return count


@pytest.mark.slow
def test_100mb_single_line_xml_in_bounded_memory(tmp_path):
    """Memory stops growing with the file: parsing 100 MB after 30 MB adds (almost) nothing.

    The output is empty (every element is skipped), so what is measured is the parser: an lxml
    tree of this file would take well over a gigabyte, reading it whole at least 100 MB more.
    """
    small, big = tmp_path / "small.xml", tmp_path / "big.xml"
    n_small, n_big = _skipped_elements_xml(small, 30_000_000), _skipped_elements_xml(big, 100_000_000)
    script = (
        "import resource, sys\n"
        "from lcaffect_pipeline.formats import read_comments, comment_stats\n"
        "rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        "base = rss()\n"
        "a = read_comments(sys.argv[1]); after_small = rss()\n"
        "b = read_comments(sys.argv[2]); after_big = rss()\n"
        "print(a.num_rows + b.num_rows, comment_stats(a)['skipped'], comment_stats(b)['skipped'],"
        " after_small - base, after_big - after_small)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script, str(small), str(big)], capture_output=True, text=True,
                         check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    rows, skipped_small, skipped_big, grown_small, grown_more = map(int, out.stdout.split())
    assert (rows, skipped_small, skipped_big) == (0, n_small, n_big)
    assert grown_small < 200, f"parsing 30 MB grew the process by {grown_small} MiB"
    assert grown_more < 32, f"a 100 MB file took {grown_more} MiB more than a 30 MB one"


def test_column_author_hash_equals_the_reference() -> None:
    import pyarrow as pa

    from lcaffect_pipeline.formats._common import hash_authors

    ids = ["12345", "é漢字", "UCx", "", None, "12345", "a" * 300, "f22be95d"]
    assert hash_authors(pa.array(ids), "sälty").to_pylist() == [hash_author(i, "sälty") for i in ids]
    assert hash_authors(pa.array(ids), None).null_count == len(ids)
