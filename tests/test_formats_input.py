"""Comment files in shapes the happy-path fixtures lack: UTF-16 XML, AcFun texts that are not
strings, protobuf comments without a dmid, a YouTube chat that is one enormous line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fixture_path

from lcaffect_pipeline.formats.bili_proto import DmSegMobileReply
from lcaffect_pipeline.formats import CommentFormatError, comment_stats, detect_format, read_comments
from lcaffect_pipeline.formats import youtube

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_xml_parses_like_its_utf8_original(tmp_path: Path, encoding: str) -> None:
    original = fixture_path("bilibili", "xml", "18678311.xml")
    text = original.read_bytes().decode("utf-8-sig")
    assert 'encoding="UTF-8"' in text
    wide = tmp_path / "18678311.xml"
    wide.write_bytes(text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode(encoding))
    assert detect_format(wide) == "bilibili_xml"  # not tried as protobuf
    got, want = read_comments(wide), read_comments(original)
    assert got.drop(["source_file"]).equals(want.drop(["source_file"])) and got.num_rows == 5


def test_utf16_without_declaration_or_bom_is_an_xml_error_not_protobuf(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_bytes("<packet><chat vpos='1'>x</chat></packet>".encode("utf-16-le"))
    with pytest.raises(CommentFormatError) as info:
        read_comments(path)
    assert "protobuf" not in info.value.reason and "XML" in info.value.reason


def test_acfun_text_that_is_an_object_is_json_not_python_text(tmp_path: Path) -> None:
    items = [
        {"c": "1.5,16777215,7,25,u1,1315564729", "m": {"n": "定位弹幕", "x": 1}},  # a mode-7 payload stored unquoted
        {"c": "2.0,16777215,1,25,u2,1315564729", "m": ["a", "b"]},
        {"c": "3.0,16777215,1,25,u3,1315564729", "m": 666},
        {"c": "4.0,16777215,1,25,u4,1315564729", "m": None},  # no text: skipped and counted
        {"c": "5.0,16777215,1,25,u5,1315564729", "m": "plain"},
    ]
    path = tmp_path / "ac.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    table = read_comments(path)
    rows = table.to_pylist()
    assert [r["text"] for r in rows] == ["定位弹幕", '["a", "b"]', "666", "plain"]
    assert json.loads(rows[0]["raw"]) == {"n": "定位弹幕", "x": 1}
    assert not any("{'" in (r["text"] + (r["raw"] or "")) for r in rows)  # never Python's repr
    assert comment_stats(table)["skipped"] == 1


def _segment(elems: list[dict]) -> bytes:
    reply = DmSegMobileReply()
    for e in elems:
        reply.elems.add(**e)
    return reply.SerializeToString()


def test_protobuf_comments_without_an_id_stay_distinct(tmp_path: Path) -> None:
    base = {"id": 0, "mode": 1, "fontsize": 25, "color": 16777215, "midHash": "abcd1234", "ctime": 1700000000}
    elems = [{**base, "progress": 1000 * i, "content": f"第{i}条"} for i in range(5)]
    elems += [dict(elems[0])]  # a verbatim repeat still deduplicates
    elems += [{**base, "id": 77, "progress": 9000, "content": "有 id"}]
    folder = tmp_path / "123"
    folder.mkdir()
    (folder / "123-1.pb").write_bytes(_segment(elems))
    table = read_comments(folder, author_salt="s")
    assert sorted(table.column("text").to_pylist()) == sorted([f"第{i}条" for i in range(5)] + ["有 id"])
    ids = table.column("comment_id").to_pylist()
    assert len(set(ids)) == 6 and "77" in ids and "0" not in ids
    assert all("abcd1234" not in i for i in ids)
    again = read_comments(folder, author_salt="s")
    assert again.column("comment_id").to_pylist() == ids  # derived ids are stable across runs


@pytest.mark.parametrize("salt", ["s", None])
def test_two_viewers_identical_comments_stay_two_rows(tmp_path: Path, salt) -> None:
    """Same text, same offset, same second, no platform id: two AcFun users, two protobuf id-0
    elements with different midHash, two XML rows with different user hashes stay two rows; a
    verbatim repeat by the same viewer still deduplicates, the first viewer keeps the content id,
    and no id carries the raw user id."""
    acfun = tmp_path / "ac.json"
    acfun.write_text(json.dumps([{"c": f"1.5,16777215,1,25,{u},1315564729", "m": "同"} for u in ("u1", "u2", "u1")]),
                     encoding="utf-8")
    xml = tmp_path / "1.xml"
    xml.write_text("<i>" + "".join(f'<d p="1.5,1,25,16777215,1300000000,0,{u}">same</d>'
                                   for u in ("aaaa1111", "bbbb2222", "aaaa1111")) + "</i>", encoding="utf-8")
    folder = tmp_path / "123"
    folder.mkdir()
    base = {"id": 0, "mode": 1, "fontsize": 25, "color": 16777215, "ctime": 1700000000, "progress": 1000,
            "content": "同"}
    (folder / "123-1.pb").write_bytes(_segment([{**base, "midHash": m} for m in ("abcd1234", "ef567890", "abcd1234")]))
    for path, users in ((acfun, ("u1", "u2")), (xml, ("aaaa1111", "bbbb2222")), (folder, ("abcd1234", "ef567890"))):
        table = read_comments(path, author_salt=salt)
        ids = table["comment_id"].to_pylist()
        assert table.num_rows == 2 and len(set(ids)) == 2 and comment_stats(table)["duplicates"] == 1, path
        assert not any(u in i for u in users for i in ids)
        assert read_comments(path, author_salt=salt)["comment_id"].to_pylist() == ids  # stable
        alone = tmp_path / "alone" / path.name
        alone.parent.mkdir(exist_ok=True)
        if path.is_dir():  # the first viewer alone: the id an ordinary comment had before
            alone.mkdir()
            (alone / "123-1.pb").write_bytes(_segment([{**base, "midHash": "abcd1234"}]))
        else:
            alone.write_text(path.read_text(encoding="utf-8").replace("u2", "u1").replace("bbbb2222", "aaaa1111"),
                             encoding="utf-8")
        assert read_comments(alone, author_salt=salt)["comment_id"].to_pylist() == ids[:1]


def _huge_line(path: Path, mib: int) -> None:
    """One live-chat action whose message is ``mib`` MiB of text, on a single line."""
    text = "弹" * ((mib << 20) // 3)
    record = {"replayChatItemAction": {"videoOffsetTimeMsec": "1000", "actions": [{"addChatItemAction": {"item": {
        "liveChatTextMessageRenderer": {"id": "x", "message": {"runs": [{"text": text}]}}}}}]}}
    path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")


def test_a_single_line_youtube_chat_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """Before: a 300 MiB one-line file peaked at 1,050 MiB; here a 64 MiB one grew the process by
    ~230 MiB. Now a line over MAX_LINE_BYTES is never held whole: growth stays far under the size."""
    path = tmp_path / "big.live_chat.json"
    _huge_line(path, 64)
    size_mib = path.stat().st_size >> 20
    script = (
        "import resource, sys\n"
        "from lcaffect_pipeline.formats import read_comments, CommentFormatError\n"
        "rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        "base = rss()\n"
        "try:\n    read_comments(sys.argv[1]); err = 'none'\n"
        "except CommentFormatError as exc:\n    err = exc.reason\n"
        "print(rss() - base); print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    grown, reason = out.stdout.splitlines()
    assert size_mib >= 60 and int(grown) < size_mib // 2, f"{size_mib} MiB file grew the process by {grown} MiB"
    assert "over 8 MiB" in reason  # says why nothing was read


def test_an_overlong_line_is_skipped_and_counted_and_the_rest_is_read(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(youtube, "MAX_LINE_BYTES", 1 << 16)
    path = tmp_path / "v.live_chat.json"
    ok = fixture_path("youtube", "chatreplay.live_chat.json").read_bytes().splitlines()[:20]
    long = _huge_line(tmp_path / "long.json", 1) or (tmp_path / "long.json").read_bytes()
    path.write_bytes(b"\n".join(ok[:10] + [long] + ok[10:]) + b"\n")
    want = read_comments(fixture_path("youtube", "chatreplay.live_chat.json")).num_rows
    table = read_comments(path)
    assert 0 < table.num_rows <= want and comment_stats(table)["skipped"] == 1
    base = tmp_path / "base.live_chat.json"
    base.write_bytes(b"\n".join(ok) + b"\n")
    assert table.num_rows == read_comments(base).num_rows  # every normal line still read
