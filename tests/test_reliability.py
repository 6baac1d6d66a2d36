"""Faults and hostile input (fast part): hostile comment files per format, mutated real
fixtures, a full disk during writes, secrets and raw user ids kept out of everything the
pipeline writes, and the table in docs/RELIABILITY.md that lists every fault tried.

The slow part (SIGKILL in the middle of writes) is tests/test_reliability_slow.py.
The rows of docs/RELIABILITY.md live in tests/reliability_cases.py; after changing them run
``.venv/bin/python scripts/reliability_doc.py`` (a test here checks the doc is current).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, ROOT, check_contract, fixture_path, hash_author, need_ffmpeg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcaffect_pipeline import lake
from lcaffect_pipeline.formats.bili_proto import DmSegMobileReply
from lcaffect_pipeline.formats import CommentFormatError, comment_stats, read_comments
from lcaffect_pipeline.schema import author_salt

SALT = "reliability-salt"
P = "1,25,16777215,1300000000,0,u{i},{i},10"  # Bilibili p fields after the time



def read_or_error(path: Path) -> pa.Table | CommentFormatError:
    """What ``read_comments`` gives: a table that keeps the contract, or a CommentFormatError
    that names the file. Any other exception fails the test."""
    try:
        table = read_comments(path, author_salt=SALT)
    except CommentFormatError as exc:
        assert exc.path == str(path) and str(path) in str(exc) and exc.reason
        return exc
    check_contract(table)
    return table


# ------------------------------------------------------------------ hostile files per format


def _bili_xml(*elements: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?><i>' + "".join(elements) + "</i>").encode()


def _d(i: int, text: str, time_s: str = "1.5") -> str:
    return f'<d p="{time_s},{P.format(i=i)}">{text}</d>'


def _pb(*elems: dict) -> bytes:
    reply = DmSegMobileReply()
    for i, fields in enumerate(elems):
        e = reply.elems.add()
        e.id, e.idStr, e.progress, e.mode, e.fontsize, e.color, e.content = i + 1, str(i + 1), 1000, 1, 25, 1, f"ok{i}"
        for key, value in fields.items():
            setattr(e, key, value)
    return reply.SerializeToString()


def _yt_line(i: int, text: str, offset: object = 1000) -> str:
    item = {"liveChatTextMessageRenderer": {"message": {"runs": [{"text": text}]}, "id": f"m{i}",
                                            "authorExternalChannelId": "UCx"}}
    return json.dumps({"replayChatItemAction": {"actions": [{"addChatItemAction": {"item": item}}],
                                                "videoOffsetTimeMsec": str(offset)}})


def _nico_json(*bodies: dict) -> bytes:
    rows = [{"id": str(i), "no": i, "vposMs": 1000, "body": f"ok{i}", "commands": [], "userId": "u",
             "postedAt": "2023-05-01T12:00:00+09:00", **b} for i, b in enumerate(bodies)]
    return json.dumps(rows).encode()


def _acfun(*cs: tuple[str, str]) -> bytes:
    return json.dumps([{"c": c, "m": m} for c, m in cs]).encode()


def _nico_xml(*chats: str) -> bytes:
    return ("<packet>" + "".join(chats) + "</packet>").encode()


def _varint_overflow() -> bytes:
    """field 1 (elems, length-delimited) holding field 2 (progress) with an 11-byte varint:
    more than the 10 bytes a 64-bit varint may take."""
    inner = b"\x10" + b"\xff" * 10 + b"\x01"
    return b"\x0a" + bytes([len(inner)]) + inner


def _huge_length() -> bytes:
    """An elems field whose length prefix (2**63-ish) runs far past the end of the file."""
    return b"\x0a" + b"\xff" * 9 + b"\x7f" + b"\x08\x01"


def kept_or_skipped(texts: list[str], hostile: str, offset: int | None = None):
    """The good comments are kept; the hostile one is either kept exactly (text and, where
    given, offset: no wrap-around, no clamping) or skipped and counted."""

    def check(table) -> None:
        assert isinstance(table, pa.Table), f"expected a table, got {table!r}"
        rows = table.to_pylist()
        got = [r["text"] for r in rows]
        for t in texts:
            assert t in got
        hostile_rows = [r for r in rows if r["text"] == hostile]
        if hostile_rows:
            if offset is not None:
                assert [r["offset_ms"] for r in hostile_rows] == [offset]
        else:
            assert comment_stats(table)["skipped"] >= 1

    return check


def nothing_invented(texts: list[str]):
    """Elements nested where they should not be: the good comments are kept, and every text
    kept is one the file holds (nothing made up from markup)."""

    def check(table) -> None:
        assert isinstance(table, pa.Table)
        got = table["text"].to_pylist()
        assert set(texts) <= set(got)
        assert all(t in HOSTILE_SOURCE[table["source_file"][0].as_py()] for t in got)

    return check


HOSTILE_SOURCE: dict[str, str] = {}  # path -> decoded content, filled by the test


def error_with(*words: str):
    def check(exc) -> None:
        assert isinstance(exc, CommentFormatError), "expected a CommentFormatError"
        assert any(w.lower() in exc.reason.lower() for w in words), exc.reason

    return check


def good_before_error(texts: list[str]):
    """An XML file broken part-way: a typed error, or the comments before the break kept with
    the syntax error recorded."""

    def check(result) -> None:
        if isinstance(result, CommentFormatError):
            return
        assert result["text"].to_pylist()[: len(texts)] == texts
        assert comment_stats(result)["xml_errors"]

    return check


DEEP = 100_000  # far past libxml2's default depth limit (256) and Python's recursion limit
HOSTILE = {
    # name: (file name, bytes, "error" checker or table checker)
    "bili_xml_deeply_nested": ("deep.xml", _bili_xml(_d(1, "ok1"), "<d>" * DEEP + "x" + "</d>" * DEEP, _d(2, "ok2")), good_before_error(["ok1"])),
    "bili_xml_nested_d_in_d": ("nest.xml", _bili_xml(_d(1, "ok1"), f'<d p="2,{P.format(i=2)}">a{_d(3, "inner")}b</d>', _d(4, "ok4")), nothing_invented(["ok1", "inner", "ok4"])),
    "bili_xml_invalid_utf8": ("badutf8.xml", _bili_xml(_d(1, "ok1")).replace(b"ok1", b"ok1</d><d p=\"2," + P.format(i=2).encode() + b"\">\xff\xfe\xc3(") , good_before_error(["ok1"])),
    "bili_xml_nul_byte": ("nul.xml", _bili_xml(_d(1, "ok1"), _d(2, "a\x00b"), _d(3, "ok3")), kept_or_skipped(["ok1", "ok3"], "ab")),  # XML forbids NUL: dropped
    "bili_xml_control_char_refs": ("ctlref.xml", _bili_xml(_d(1, "ok1"), _d(2, "a&#0;b"), _d(3, "ok3")), good_before_error(["ok1"])),
    "bili_xml_negative_offset": ("neg.xml", _bili_xml(_d(1, "ok1"), _d(2, "neg", "-5.25")), kept_or_skipped(["ok1"], "neg", -5250)),
    "bili_xml_huge_offset": ("huge.xml", _bili_xml(_d(1, "ok1"), _d(2, "huge", "9" * 40)), kept_or_skipped(["ok1"], "huge")),
    "bili_xml_offset_past_int64": ("i64.xml", _bili_xml(_d(1, "ok1"), _d(2, "big", "9223372036854776.0")), kept_or_skipped(["ok1"], "big")),
    "bili_xml_mode7_not_json": ("m7.xml", _bili_xml(f'<d p="1,7,{P.format(i=1)[2:]}">[1,2,"unterminated</d>', _d(2, "ok2")), kept_or_skipped(["ok2"], '[1,2,"unterminated')),
    "pb_varint_overflow": ("varint.pb", _varint_overflow(), error_with("protobuf", "DmSegMobileReply")),
    "pb_length_past_end": ("len.pb", _huge_length(), error_with("protobuf", "DmSegMobileReply")),
    "pb_negative_offset": ("negpb.pb", _pb({}, {"progress": -4000, "content": "neg"}), kept_or_skipped(["ok0"], "neg", -4000)),
    "pb_max_int32_offset": ("maxpb.pb", _pb({}, {"progress": 2**31 - 1, "content": "max"}), kept_or_skipped(["ok0"], "max", 2**31 - 1)),
    "pb_mode7_not_json": ("m7pb.pb", _pb({}, {"mode": 7, "content": "{not json"}), kept_or_skipped(["ok0"], "{not json")),
    "pb_nul_and_controls": ("nulpb.pb", _pb({}, {"content": "a\x00b\x07c"}), kept_or_skipped(["ok0"], "a\x00b\x07c")),
    "pb_invalid_utf8_string": ("utf8pb.pb", _pb({"content": "ok0"}) + b"\x0a\x06\x3a\x04\xff\xfe\xc3(", error_with("protobuf", "DmSegMobileReply", "utf")),
    "nico_xml_deeply_nested": ("deep_nico.xml", _nico_xml('<chat no="1" vpos="100">ok1</chat>', "<chat>" * DEEP), good_before_error(["ok1"])),
    "nico_xml_negative_vpos": ("negnico.xml", _nico_xml('<chat no="1" vpos="100">ok1</chat>', '<chat no="2" vpos="-300">neg</chat>'), kept_or_skipped(["ok1"], "neg", -3000)),
    "nico_xml_huge_vpos": ("hugenico.xml", _nico_xml('<chat no="1" vpos="100">ok1</chat>', f'<chat no="2" vpos="{"9" * 30}">huge</chat>'), kept_or_skipped(["ok1"], "huge")),
    "nico_json_invalid_utf8": ("badnico.comments.json", _nico_json({}).replace(b"ok0", b"ok\xff\xfe"), error_with("json", "utf", "decode")),
    "nico_json_nul_escape": ("nulnico.comments.json", _nico_json({}, {"body": "a\u0000b"}), kept_or_skipped(["ok0"], "a\x00b")),
    "nico_json_raw_control_char": ("ctlnico.comments.json", _nico_json({}).replace(b"ok0", b"ok\x01"), error_with("json")),
    "nico_json_negative_offset": ("negnico.comments.json", _nico_json({}, {"vposMs": -1500, "body": "neg"}), kept_or_skipped(["ok0"], "neg", -1500)),
    "nico_json_huge_offset": ("hugenico.comments.json", _nico_json({}, {"vposMs": 10**30, "body": "huge"}), kept_or_skipped(["ok0"], "huge")),
    "nico_json_float_inf_offset": ("infnico.comments.json", _nico_json({}).replace(b'"vposMs": 1000, "body": "ok0"', b'"vposMs": 1e999, "body": "inf"').replace(b"[", b'[{"id": "g", "vposMs": 5, "body": "good"}, ', 1), kept_or_skipped(["good"], "inf")),
    "nico_json_deeply_nested": ("deepnico.comments.json", b'[{"id": "1", "vposMs": 1, "body": ' + b"[" * DEEP + b"]" * DEEP + b"}]", error_with("json", "nest", "recursion", "comment")),
    "acfun_invalid_utf8": ("badacfun.json", _acfun(("1,1,1,25,u,1", "ok0")).replace(b"ok0", b"\xc3("), error_with("json", "utf", "decode")),
    "acfun_negative_and_huge_offsets": ("offacfun.json", _acfun(("1,1,1,25,u,1", "ok0"), ("-2.5,1,1,25,u,1", "neg"), ("1e400,1,1,25,u,1", "inf")), kept_or_skipped(["ok0"], "neg", -2500)),
    "acfun_mode7_not_json": ("m7acfun.json", _acfun(("1,1,1,25,u,1", "ok0"), ("1,1,7,25,u,1", "{not json")), kept_or_skipped(["ok0"], "{not json")),
    "acfun_mode7_json_not_object": ("m7arr.json", _acfun(("1,1,1,25,u,1", "ok0"), ("1,1,7,25,u,1", "[1, 2]")), kept_or_skipped(["ok0"], "[1, 2]")),
    "acfun_nul_in_text": ("nulacfun.json", _acfun(("1,1,1,25,u,1", "ok0"), ("2,1,1,25,u,1", "a\u0000b")), kept_or_skipped(["ok0"], "a\x00b")),
    "youtube_lines_not_json": ("yt.live_chat.json", "\n".join([_yt_line(1, "ok1"), "not json at all", "[1, 2]", "null", '"str"', "42", "{}", '{"replayChatItemAction": []}', _yt_line(2, "ok2")]).encode(), kept_or_skipped(["ok1", "ok2"], "never")),
    "youtube_invalid_utf8_line": ("ytu.live_chat.json", (_yt_line(1, "ok1") + "\n").encode() + _yt_line(2, "bad").encode().replace(b"bad", b"\xff\xfe") + b"\n" + _yt_line(3, "ok3").encode(), kept_or_skipped(["ok1", "ok3"], "never")),
    "youtube_nul_byte_line": ("ytn.live_chat.json", (_yt_line(1, "ok1") + "\n\x00\x00\x00\n" + _yt_line(2, "ok2")).encode(), kept_or_skipped(["ok1", "ok2"], "never")),
    "youtube_negative_and_huge_offsets": ("yto.live_chat.json", "\n".join([_yt_line(1, "ok1"), _yt_line(2, "neg", -700), _yt_line(3, "huge", "9" * 30)]).encode(), kept_or_skipped(["ok1"], "neg", -700)),
    "youtube_deeply_nested_line": ("ytd.live_chat.json", (_yt_line(1, "ok1") + "\n" + '{"a": ' + "[" * DEEP + "]" * DEEP + "}\n" + _yt_line(2, "ok2")).encode(), kept_or_skipped(["ok1", "ok2"], "never")),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_parses_sensibly_or_raises_comment_format_error(name, tmp_path):
    file_name, data, check = HOSTILE[name]
    path = tmp_path / file_name
    path.write_bytes(data)
    HOSTILE_SOURCE[str(path)] = data.decode("utf-8", "replace")
    started = time.monotonic()
    result = read_or_error(path)
    assert time.monotonic() - started < 10, "a hostile file must not stall the parser"
    check(result)
    if isinstance(result, pa.Table):
        # What parsed must also survive the lake: Parquet round trip of every hostile string.
        out = tmp_path / "out.parquet"
        lake.write_parquet(result, out)
        assert lake.read_parquet(out).equals(result.replace_schema_metadata(lake.read_parquet(out).schema.metadata))


# ------------------------------------------------------- mutated real fixtures, per family


def _head_lines(path: Path, n: int) -> bytes:
    return b"\n".join(path.read_bytes().split(b"\n")[:n])


def _head_items(path: Path, n: int) -> bytes:
    return json.dumps(json.loads(path.read_bytes())[:n], ensure_ascii=False).encode()


# family: (file name the mutant is written under, how to load a small real sample). Samples are
# cut to a few KB where the fixture is large, so each example parses in milliseconds.
FAMILIES = {
    "bilibili_xml": ("18678311.xml", lambda: fixture_path("bilibili", "xml", "18678311.xml").read_bytes()),
    "bilibili_xml_legacy_mode7": ("tsubasa.xml", lambda: fixture_path("bilibili", "legacy", "scripting_tsubasa.xml").read_bytes()[:6000]),
    "bilibili_protobuf": ("18678311-0.pb", lambda: fixture_path("bilibili", "protobuf", "18678311", "18678311-0.pb").read_bytes()),
    "niconico_xml": ("sm23726371.xml", lambda: fixture_path("niconico", "sm23726371_legacy.xml").read_bytes()[:6000]),
    "niconico_legacy_json": ("sm9.json", lambda: _head_items(fixture_path("niconico", "sm9_legacy.json"), 30)),
    "youtube_live_chat": ("chat.live_chat.json", lambda: _head_lines(fixture_path("youtube", "chatreplay.live_chat.json"), 8)),
    "acfun_json": ("acfun.json", lambda: _head_items(fixture_path("acfun", "ACFun.json"), 40)),
}
MUTATION_EXAMPLES = 200


def _fixture_chunks() -> list[bytes]:
    """Pieces of the other real fixtures to splice in: real markup in the wrong place."""
    picks = [("bilibili", "xml", "18678311.xml"), ("bilibili", "protobuf", "18678311", "18678311-1.pb"),
             ("acfun", "ACFun.json"), ("niconico", "sm23726371_legacy.xml"), ("youtube", "chatreplay.live_chat.json")]
    chunks = []
    for parts in picks:
        path = FIXTURES.joinpath(*parts)
        if path.exists():
            data = path.read_bytes()
            chunks += [data[:64], data[len(data) // 2: len(data) // 2 + 96], data[-48:]]
    return chunks or [b"<d p=\"1\">x</d>"]


_OP = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 30), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 30)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 30), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("splice"), st.integers(0, 1 << 30), st.sampled_from(_fixture_chunks())),
    st.tuples(st.just("delete"), st.integers(0, 1 << 30), st.integers(1, 64)),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        pos = op[1] % (len(buf) + 1)
        if op[0] == "flip" and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << op[2]
        elif op[0] == "truncate":
            del buf[pos:]
        elif op[0] in ("insert", "splice"):
            buf[pos:pos] = op[2]
        elif op[0] == "delete":
            del buf[pos:pos + op[2]]
    return bytes(buf)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mutated_real_fixture_parses_or_raises_comment_format_error(family):
    name, load = FAMILIES[family]
    original = load()
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / name
        clean.write_bytes(original)
        assert read_comments(clean, author_salt=SALT).num_rows > 0  # the unmutated sample parses

    @settings(max_examples=MUTATION_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(ops=st.lists(_OP, min_size=1, max_size=4))
    def one(ops):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(mutate(original, ops))
            started = time.monotonic()
            read_or_error(path)
            assert time.monotonic() - started < 5, f"{family}: a mutant took over 5 s"

    one()


# ------------------------------------------------------------------------------ disk full


def _incompressible(nbytes: int) -> pa.Table:
    return pa.table({"blob": pa.array([os.urandom(1024) for _ in range(nbytes // 1024)], pa.binary())})


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and a system that allows mounting; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_tmpfs_parquet_shards_and_checkpoint_leave_nothing(full_disk):
    import numpy as np
    from conftest import write_frames

    with pytest.raises(OSError) as info:
        lake.write_parquet(_incompressible(1 << 20), full_disk / "raw" / "v.parquet")
    assert info.value.errno == errno.ENOSPC
    n = 3
    segs = pa.table({"video_id": ["v"] * n, "segment_index": list(range(n)), "start_ms": [0] * n, "end_ms": [8000] * n,
                     "comments": [["a"]] * n, "comment_ids": [["1"]] * n, "comment_count": [1] * n,
                     "frame_times_ms": [[0]] * n, "shard": [None] * n, "sample_key": [None] * n})
    frames = np.random.default_rng(0).integers(0, 255, (n, 1, 192, 192, 3), dtype=np.uint8)  # ~330 KB
    with pytest.raises(OSError) as info:
        write_frames(segs, frames, full_disk / "shards", "v", max_shard_bytes=120_000, codec="npy")  # raw: sizes known
    assert info.value.errno == errno.ENOSPC
    # Shards that fitted are complete (each read back as a tar); the one that did not is absent.
    import tarfile
    for tar in (full_disk / "shards").rglob("*.tar"):
        with tarfile.open(tar) as t:
            assert len(t.getmembers()) == 2
    assert not list((full_disk / "shards").rglob("shards.json"))
    assert not [p for p in _leftovers(full_disk) if ".tmp-" in p], _leftovers(full_disk)
    assert not (full_disk / "raw" / "v.parquet").exists()


def test_full_tmpfs_checkpoint_is_not_published(full_disk):
    torch = pytest.importorskip("torch")
    from lcaffect_ml.trainutil import COMPLETE_MARKER, CheckpointManager, save_state

    manager = CheckpointManager(full_disk / "ckpt")

    def write(folder: Path) -> None:
        save_state(folder, "model", {"w": torch.ones(200_000)})  # 800 KB of float32
        (folder / COMPLETE_MARKER).write_text("{}")

    with pytest.raises(Exception) as info:
        manager.save(1, write)
    assert "No space left" in str(info.value) or getattr(info.value, "errno", None) == errno.ENOSPC
    assert manager.steps() == [] and manager.latest() is None
    assert _leftovers(full_disk) == []


class _FullFile:
    """A file whose device fills after ``room`` bytes (what write(2) does with ENOSPC)."""

    def __init__(self, fh, room: int):
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.fh.__exit__(*exc)


@pytest.fixture
def enospc_after(monkeypatch):
    """Every file the lake opens fills after ``room`` bytes: works without root."""
    import builtins

    def install(room: int):
        real_open = builtins.open
        monkeypatch.setattr(lake, "open", lambda *a, **k: _FullFile(real_open(*a, **k), room), raising=False)

    return install


def test_simulated_enospc_replaces_nothing_already_there(tmp_path, enospc_after):
    target = tmp_path / "lake" / "clean_comments" / "v.parquet"
    good = pa.table({"x": [1, 2, 3]})
    lake.write_parquet(good, target)  # an earlier, complete version
    enospc_after(4096)
    with pytest.raises(OSError) as info:
        lake.write_parquet(_incompressible(64 << 10), target)
    assert info.value.errno == errno.ENOSPC
    assert lake.read_parquet(target).equals(good)  # the earlier version is intact under its name
    assert _leftovers(target.parent) == ["v.parquet"]  # and the temporary file is gone


def test_writing_to_dev_full_raises_enospc_and_leaves_no_temp(tmp_path):
    """The stream path: a write to /dev/full fails like a full disk."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(OSError) as info:
        with open("/dev/full", "wb") as fh:
            pq.write_table(_incompressible(64 << 10), fh)
    assert info.value.errno == errno.ENOSPC


def test_enospc_error_names_the_file(tmp_path, enospc_after):
    target = tmp_path / "v.parquet"
    enospc_after(1024)
    with pytest.raises(OSError) as info:
        lake.write_parquet(_incompressible(64 << 10), target)
    assert str(target) in str(info.value)


# --------------------------------------------------------------------- secrets and privacy

FAKE_SESSDATA = "FAKESESSDATA0c0ffee4242deadbeef"
PRIVACY_SALT = "privacy-test-salt-7"


def _text_of(path: Path) -> str:
    """Everything a reader could get out of a file: decoded Parquet/DuckDB cells, else the bytes."""
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False)
    if path.suffix == ".duckdb":
        import duckdb

        con = duckdb.connect(str(path), read_only=True)
        try:
            out = []
            for (name,) in con.execute("select table_name from information_schema.tables").fetchall():
                try:
                    out.append(str(con.execute(f'select * from "{name}"').fetchall()))
                except duckdb.Error:
                    pass  # a view over Parquet files elsewhere: those files are read on their own
            return path.read_bytes().decode("latin-1") + "".join(out)
        finally:
            con.close()
    return path.read_bytes().decode("utf-8", "replace")


def test_corpus_run_leaks_neither_the_cookie_nor_raw_author_ids(tmp_path):
    need_ffmpeg()
    import dagster as dg

    from lcaffect_pipeline.defs.checks import CHECKS
    from lcaffect_pipeline.defs.corpus_assets import ASSETS
    from lcaffect_pipeline.defs.resources import (CatalogueResource, CleaningResource, CrawlerResource,
                                                  DownstreamResource, LakeJsonIOManager, LakeResource, RunScope,
                                                  V2LCTrainingResource)
    from lcaffect_pipeline.demo_world import _crc_like

    root, home = tmp_path / "lake", tmp_path / "dagster_home"
    root.mkdir(), home.mkdir()
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n.bilibili.com\tTRUE\t/\tFALSE\t0\tSESSDATA\t{FAKE_SESSDATA}\n")
    lake_res = LakeResource(root=str(root), author_salt=PRIVACY_SALT)
    resources = {"lake": lake_res, "scope": RunScope(), "catalogue": CatalogueResource(demo=True, demo_videos=5),
                 "crawler": CrawlerResource(min_interval_s=0, cookie_file=str(cookies)),
                 "cleaning": CleaningResource(), "io_manager": LakeJsonIOManager(lake=lake_res),
                 "v2lc_training": V2LCTrainingResource(), "downstream": DownstreamResource()}
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        result = dg.materialize([*ASSETS, *CHECKS], resources=resources, instance=instance)
        assert result.success
        events = "\n".join(repr(ev) for ev in result.all_events)
        stored = "\n".join(repr(rec) for rec in instance.all_logs(result.run_id))
    raw_ids = [f"user{i}" for i in range(40)]
    # Whole-word matches: "user1" must not match inside "user17".
    raw = re.compile(r"(?<![A-Za-z0-9])(?:UC)?(" + "|".join(raw_ids) + r")(?![0-9])")
    crc = re.compile(r"(?<![0-9a-f])(" + "|".join(_crc_like(u) for u in raw_ids) + r")(?![0-9a-f])")

    # Raw payloads are kept as crawled (the demo world it reads, and the copies under sources/);
    # everything the pipeline derives from them must hold neither raw ids nor the cookie.
    raw_payload = {p for p in root.rglob("*") if p.is_file()
                   and p.relative_to(root).parts[0] in ("demo_world", "sources") and p.name != "manifest.json"}
    derived = [p for p in root.rglob("*") if p.is_file() and p not in raw_payload]
    derived += [p for p in home.rglob("*") if p.is_file()]  # event log, run storage, compute logs
    assert any(p.suffix == ".parquet" for p in derived) and any(p.suffix == ".duckdb" for p in derived)
    assert any(raw.search(_text_of(p)) for p in raw_payload), "the demo world should hold raw ids to leak"
    for name, text in [(str(p), _text_of(p)) for p in derived] + [("events", events), ("event log", stored)]:
        assert FAKE_SESSDATA not in text, f"the cookie value leaked into {name}"
        assert not raw.search(text), f"a raw author id {raw.search(text).group(0)!r} leaked into {name}"
        if name.endswith(".parquet"):
            assert not crc.search(text), f"a raw Bilibili user hash leaked into {name}"
    for p in raw_payload:  # the cookie is not even in the raw copies
        assert FAKE_SESSDATA not in _text_of(p)
    # Authors are salted hashes of the raw ids: the configured salt, not one in code.
    authors = set()
    for p in root.glob("raw_comments/*/*.parquet"):
        authors |= set(pq.read_table(p)["author"].to_pylist())
    assert None not in authors
    expected = {hash_author(u, PRIVACY_SALT) for u in raw_ids} | {hash_author(_crc_like(u), PRIVACY_SALT) for u in raw_ids} \
        | {hash_author(f"UC{u}", PRIVACY_SALT) for u in raw_ids}  # YouTube: authorExternalChannelId
    assert authors and authors <= expected


def test_author_salt_is_configuration_not_code(monkeypatch, tmp_path):
    monkeypatch.delenv("LCAFFECT_AUTHOR_SALT", raising=False)
    assert author_salt() is None and hash_author("user17", author_salt()) is None
    assert hash_author("user17", "a") != hash_author("user17", "b")
    monkeypatch.setenv("LCAFFECT_AUTHOR_SALT", "from-env")
    assert author_salt() == "from-env" and author_salt("explicit") == "explicit"
    path = tmp_path / "v.json"
    path.write_bytes(_acfun(("1,1,1,25,user17,1", "a"), ("2,1,1,25,user18,1", "b")))
    salted = read_comments(path)["author"].to_pylist()
    assert salted == [hash_author("user17", "from-env"), hash_author("user18", "from-env")]
    assert read_comments(path, author_salt="other")["author"].to_pylist() != salted
    monkeypatch.delenv("LCAFFECT_AUTHOR_SALT")
    assert read_comments(path)["author"].to_pylist() == [None, None]  # no salt: authors dropped


# ------------------------------------------------------------- docs/RELIABILITY.md table

# (fault or hostile input, cases, outcome, test id). Counts of this file's cases come from the
# registries above, so the table follows them.
def test_reliability_table_matches_the_registry():
    """docs/RELIABILITY.md is what scripts/reliability_doc.py makes of tests/reliability_cases.py."""
    import importlib.util

    from reliability_cases import RELIABILITY

    for *_rest, test_id in RELIABILITY:  # every row names a test that exists
        file, name = test_id.split("::")
        assert re.search(rf"^def {re.escape(name)}\(", (ROOT / file).read_text(), re.M), test_id
    counts = {row[0].split(" (")[0]: row[1] for row in RELIABILITY}
    assert counts["Hostile comment files per format"] == f"{len(HOSTILE)} files"
    assert counts["Real fixtures mutated"] == f"{len(FAMILIES)} families x {MUTATION_EXAMPLES} mutants"
    spec = importlib.util.spec_from_file_location("reliability_doc", ROOT / "scripts" / "reliability_doc.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.DOC.read_text() == script.render(RELIABILITY), "docs/RELIABILITY.md is stale: run scripts/reliability_doc.py"
