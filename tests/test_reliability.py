"""Faults and hostile input (fast part): hostile comment files per format, mutated real
fixtures, a full disk during writes, secrets and raw user ids kept out of everything the
pipeline writes, and the table in docs/RELIABILITY.md that lists every fault tried.

The slow part (SIGKILL in the middle of writes) is tests/test_reliability_slow.py.
Regenerate docs/RELIABILITY.md after changing ``RELIABILITY`` below with
``LCAFFECT_WRITE_RELIABILITY=1 .venv/bin/python -m pytest tests/test_reliability.py -k table``.
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
from conftest import FIXTURES, ROOT, fixture_path, need_ffmpeg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcaffect_pipeline import lake
from lcaffect_pipeline.bili_proto import DmSegMobileReply
from lcaffect_pipeline.formats import CommentFormatError, comment_stats, read_comments
from lcaffect_pipeline.schema import COMMENTS_SCHEMA, MODES, author_salt, hash_author

SALT = "reliability-salt"
P = "1,25,16777215,1300000000,0,u{i},{i},10"  # Bilibili p fields after the time


def check_contract(table: pa.Table) -> None:
    assert table.schema.equals(COMMENTS_SCHEMA)
    for field in COMMENTS_SCHEMA:
        if not field.nullable:
            assert table[field.name].null_count == 0, field.name
    assert set(table["mode"].to_pylist()) <= set(MODES)


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

    from lcaffect_pipeline.shards import write_shards

    with pytest.raises(OSError) as info:
        lake.write_parquet(_incompressible(1 << 20), full_disk / "raw" / "v.parquet")
    assert info.value.errno == errno.ENOSPC
    n = 3
    segs = pa.table({"video_id": ["v"] * n, "segment_index": list(range(n)), "start_ms": [0] * n, "end_ms": [8000] * n,
                     "comments": [["a"]] * n, "comment_ids": [["1"]] * n, "comment_count": [1] * n,
                     "frame_times_ms": [[0]] * n, "shard": [None] * n, "sample_key": [None] * n})
    frames = np.random.default_rng(0).integers(0, 255, (n, 1, 192, 192, 3), dtype=np.uint8)  # ~330 KB
    with pytest.raises(OSError) as info:
        write_shards(segs, frames, full_disk / "shards", "v", max_shard_bytes=120_000)
    assert info.value.errno == errno.ENOSPC
    # Shards that fitted are complete (each read back as a tar); the one that did not is absent.
    import tarfile
    for tar in (full_disk / "shards").rglob("*.tar"):
        with tarfile.open(tar) as t:
            assert len(t.getmembers()) == 2
    assert not (full_disk / "shards" / "v" / "shards.json").exists()
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
                                                  LakeJsonIOManager, LakeResource, RunScope)
    from lcaffect_pipeline.demo import _crc_like

    root, home = tmp_path / "lake", tmp_path / "dagster_home"
    root.mkdir(), home.mkdir()
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n.bilibili.com\tTRUE\t/\tFALSE\t0\tSESSDATA\t{FAKE_SESSDATA}\n")
    lake_res = LakeResource(root=str(root), author_salt=PRIVACY_SALT)
    resources = {"lake": lake_res, "scope": RunScope(), "catalogue": CatalogueResource(demo=True, demo_videos=5),
                 "crawler": CrawlerResource(min_interval_s=0, cookie_file=str(cookies)),
                 "cleaning": CleaningResource(), "io_manager": LakeJsonIOManager(lake=lake_res)}
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
RELIABILITY = [
    ("Hostile comment files per format (deep nesting, invalid UTF-8, NUL/control chars, negative/huge offsets, protobuf varint overflow, mode-7 not JSON, YouTube lines not JSON)", f"{len(HOSTILE)} files", "parsed with the contract kept or CommentFormatError naming the file; hostile element kept exactly or skipped and counted", "tests/test_reliability.py::test_hostile_file_parses_sensibly_or_raises_comment_format_error"),
    ("Real fixtures mutated (bit flips, truncation, deletion, random and real-fixture insertions)", f"{len(FAMILIES)} families x {MUTATION_EXAMPLES} mutants", "only CommentFormatError escapes; each parse under 5 s", "tests/test_reliability.py::test_mutated_real_fixture_parses_or_raises_comment_format_error"),
    ("Random bytes behind format prefixes", "250 inputs", "only CommentFormatError escapes", "tests/test_formats.py::test_random_bytes_parse_or_raise_comment_format_error"),
    ("XML external entity, external DTD", "2 files", "refused (DOCTYPE), nothing read", "tests/test_formats.py::test_external_entity_is_refused"),
    ("Billion laughs", "1 file", "refused (DOCTYPE)", "tests/test_formats.py::test_billion_laughs_is_refused"),
    ("100 MB single-line XML", "1 file", "bounded memory", "tests/test_formats.py::test_100mb_single_line_xml_in_bounded_memory"),
    ("Full disk (256 KiB tmpfs) writing Parquet and shards", "2 writers", "ENOSPC; no partial file under its final name, no temp file", "tests/test_reliability.py::test_full_tmpfs_parquet_shards_and_checkpoint_leave_nothing"),
    ("Full disk writing a checkpoint", "1 writer", "no checkpoint published, nothing left", "tests/test_reliability.py::test_full_tmpfs_checkpoint_is_not_published"),
    ("Simulated ENOSPC (no root needed) over an existing file", "1", "earlier version intact, temp removed", "tests/test_reliability.py::test_simulated_enospc_replaces_nothing_already_there"),
    ("ENOSPC error names the file", "1", "clear error naming the final file", "tests/test_reliability.py::test_enospc_error_names_the_file"),
    ("SIGKILL while writing Parquet, shards, checkpoints", "5 kills at random points", "every final-named file complete; re-run equals a clean run", "tests/test_reliability_slow.py::test_sigkill_during_parquet_shard_and_checkpoint_writes"),
    ("Cookie (SESSDATA) and raw author ids through a Dagster corpus run", "5 videos, 40 ids, every lake file + event log", "absent from everything derived", "tests/test_reliability.py::test_corpus_run_leaks_neither_the_cookie_nor_raw_author_ids"),
    ("Author salt is configuration", "4 settings", "hash depends on salt; no salt gives null authors", "tests/test_reliability.py::test_author_salt_is_configuration_not_code"),
    ("HTTP 429/412/500, resets, stalls, truncated bodies", "every fault in a plan", "retried, then success", "tests/test_sources.py::test_retries_through_every_fault_then_succeeds"),
    ("Retry budget exhausted", "1 video", "nothing partial visible; re-run fetches only the rest", "tests/test_sources.py::test_exhausted_budget_leaves_nothing_visible_and_the_rerun_fetches_only_the_rest"),
    ("Cookies in logs, errors, manifests", "1 run", "masked", "tests/test_sources.py::test_cookies_reach_the_server_but_never_logs_errors_or_manifests"),
    ("Hostile ids as lake paths", "hypothesis ids", "stay under the lake root", "tests/test_lake.py::test_safe_name_stays_under_root"),
    ("Hostile video id on download", "1", "stays in its folder", "tests/test_videos.py::test_hostile_video_id_stays_in_the_folder"),
    ("Truncated / zero-byte / wrong-container videos", "several files", "VideoDecodeError naming the file", "tests/test_segments.py::test_broken_files_raise_video_decode_error"),
    ("Pickled checkpoint payloads", "1", "refused", "tests/test_v2lc.py::test_pickled_payloads_are_refused"),
    ("Training killed and resumed", "1 kill", "identical weights", "tests/test_train_v2lc.py::test_killed_run_resumes_to_identical_weights"),
    ("NaN loss", "1", "stops before any poisoned checkpoint", "tests/test_train_v2lc.py::test_nan_loss_stops_before_any_poisoned_checkpoint"),
    ("Dagster step retry during training", "1", "resumes from its checkpoint", "tests/test_v2lc_asset.py::test_a_retried_step_resumes_from_its_checkpoint"),
    ("Local comment file edited, file inside a local folder replaced, local file only touched, between two corpus runs", "1 file, 1 folder, 1 touch", "each change re-read and its data version changes downstream; a touch or no change skips with the same versions", "tests/test_corpus_pipeline.py::test_a_changed_local_file_or_folder_is_picked_up_by_the_next_run"),
    ("Local video replaced under the same name, touched, or swapped for another container between two clips runs", "3 changes", "replaced video re-probed and re-segmented; the old copy never shadows the new one; a touch skips", "tests/test_clips_pipeline.py::test_a_replaced_local_video_is_picked_up_by_the_next_run"),
    ("Catalogue video URL changed (new URL's id already in the download archive), with and without force", "2 runs", "downloaded again from the new URL; the old file is not kept", "tests/test_videos.py::test_a_changed_video_url_is_downloaded_again"),
    ("Gzip bomb (64 KiB inflating to 64 MiB) from the web", "1 reply, 1 MiB cap", "ResponseTooLarge, peak memory under 8 MiB, not retried", "tests/test_hostile_web.py::test_gzip_bomb_is_refused_in_bounded_memory"),
    ("Reply over the size cap, with and without Content-Length", "2", "ResponseTooLarge before or while reading", "tests/test_hostile_web.py::test_raw_body_over_the_cap_is_refused_with_or_without_content_length"),
    ("Raw-deflate XML bomb (with and without Content-Encoding)", "2", "fetch fails naming the cap; nothing committed", "tests/test_hostile_web.py::test_deflate_bomb_xml_is_not_committed"),
    ("Server trickling one byte at a time (body, headers)", "2", "cut at the total deadline (deadline_s), not kept alive by the per-read timeout", "tests/test_hostile_web.py::test_a_trickling_server_is_cut_at_the_total_deadline"),
    ("dm_sge.total of 10^6 with duration 0", "1", "refused by max_segments before any segment request", "tests/test_hostile_web.py::test_segment_total_without_a_duration_is_bounded"),
    ("Video duration of 10^8 and 10^12 s", "2", "refused by max_segments; no file-name list built", "tests/test_hostile_web.py::test_segment_count_from_a_huge_duration_is_refused_before_any_segment"),
    ("Parallel chunk steps crawling one host", "3 processes x 4 requests", "spacing held across processes (lock files per host)", "tests/test_hostile_web.py::test_host_spacing_holds_across_processes"),
    ("Redirect chains, redirect loop, redirect to another host", "3", "every hop spaced; loop cut at max_redirects; other host refused unless in redirect_hosts", "tests/test_hostile_web.py::test_redirect_hops_are_spaced_loops_cut_and_other_hosts_refused"),
    ("Segment holding only an unknown protobuf field", "1 video", "not committed; the next run fetches that segment again", "tests/test_hostile_web.py::test_a_segment_that_does_not_parse_is_not_committed_and_is_fetched_again"),
    ("HTTP 429 on every segment (XML sample fallback)", "1 video, 2 runs", "sample committed as incomplete; next run fetches the full history", "tests/test_hostile_web.py::test_xml_sample_after_a_rate_limit_is_incomplete_and_the_next_run_gets_the_history"),
    ("View JSON of any shape (data list/string, code null, bare list, deep nesting)", "5 named + 60 generated + 1 nested 200k deep", "only FetchError, with an actionable message", "tests/test_hostile_web.py::test_any_json_shape_gives_a_result_never_another_exception"),
    ("Cookie echoed by the server (JSON error message, redirect URL) through a Dagster run", "4 videos, every lake and Dagster file, events, python log", "masked everywhere", "tests/test_hostile_web.py::test_a_cookie_echoed_by_the_server_leaves_no_trace_in_a_dagster_run"),
    ("AcFun records without an id (real ACFun.json)", "155 records x 3 user ids", "derived comment_id independent of the user id", "tests/test_hostile_web.py::test_derived_acfun_ids_do_not_depend_on_the_user_id"),
    ("YouTube rows without an id (real live chat)", "50 lines x 2 channel ids", "derived comment_id independent of the channel id", "tests/test_hostile_web.py::test_derived_youtube_ids_do_not_depend_on_the_channel_id"),
    ("Video ids that need a file-name stand-in (`my video` vs `my_video-<hash>`, `a.b` vs `a_b`, hash look-alikes)", "hypothesis id lists x 3 extensions", "one injective name each, hash before the extension; WebDataset keys injective too", "tests/test_lake.py::test_safe_name_is_injective"),
    ("Video ids with spaces, CJK (`弹幕测试` from `弹幕测试.xml`), hash look-alikes, `CON`, full-width, through corpus and clips", "8 ids, then a re-run", "every id's comments counted in corpus.duckdb, segments and shards made, offsets check sees every duration; re-run skips all", "tests/test_naming.py::test_ids_with_spaces_cjk_and_hashed_look_alikes_go_through_corpus_and_clips"),
    ("Arbitrary Unicode video ids, catalogue to corpus to clips", "hypothesis, 4 lists of 2-3 ids", "same as above for every id", "tests/test_naming.py::test_any_unicode_ids_go_through_corpus_and_clips"),
    ("CSV catalogue with a byte-order mark (spreadsheet export)", "1", "loads", "tests/test_catalogue.py::test_a_csv_catalogue_with_a_byte_order_mark_loads"),
    ("CSV catalogue ids holding `\\r`, NEL, U+2028, CRLF in quoted fields", "4 ids", "kept exactly", "tests/test_catalogue.py::test_csv_fields_keep_their_line_breaks"),
    ("Two YouTube watch URLs; two `?p=` parts of one Bilibili video", "3 pairs", "distinct default ids (`v`; `BV…_p2`)", "tests/test_catalogue.py::test_default_ids_of_distinct_urls_differ"),
    ("40,000-entry catalogue", "1 load + 1 duplicate check", "linear time (quadratic check took 31 s)", "tests/test_catalogue.py::test_a_40k_entry_catalogue_loads_and_checks_in_linear_time"),
    ("UTF-16 XML (BOM, LE and BE with a declaration)", "3 encodings", "parsed like the UTF-8 original, not tried as protobuf", "tests/test_formats_input.py::test_utf16_xml_parses_like_its_utf8_original"),
    ("UTF-16 XML without BOM or declaration", "1", "CommentFormatError about XML, not protobuf", "tests/test_formats_input.py::test_utf16_without_declaration_or_bom_is_an_xml_error_not_protobuf"),
    ("AcFun `m` as object, list, number or null", "4 records", "JSON text (never Python repr; a mode-7 object shows its `n`); null skipped and counted", "tests/test_formats_input.py::test_acfun_text_that_is_an_object_is_json_not_python_text"),
    ("Protobuf comments with id 0", "5 distinct + 1 verbatim repeat", "5 rows with stable derived ids (without the user hash); the repeat deduplicated", "tests/test_formats_input.py::test_protobuf_comments_without_an_id_stay_distinct"),
    ("64 MiB single-line YouTube live chat (300 MiB peaked at 1,050 MiB)", "1 file", "process grows under half the file size (measured 16 MiB, was 237 MiB); the line is skipped, counted and named in the error", "tests/test_formats_input.py::test_a_single_line_youtube_chat_is_read_in_bounded_memory"),
    ("Over-long line among good YouTube chat lines", "1 line of 1 MiB, cap lowered to 64 KiB", "skipped and counted; every other line read", "tests/test_formats_input.py::test_an_overlong_line_is_skipped_and_counted_and_the_rest_is_read"),
    ("MELD `Dialogue_ID` of `²` (a Unicode digit)", "1", "DatasetError naming the file and row", "tests/test_downstream_hostile.py::test_a_meld_id_that_is_a_unicode_digit_names_file_and_row"),
    ("Any value in any MELD / CH-SIMS column, any JSON in a MUStARD entry", "hypothesis, 3 x 150", "loads, or DatasetError naming the file and row (entry); media paths stay in the folder", "tests/test_downstream_hostile.py::test_any_bad_meld_value_names_file_and_row"),
    ("MUStARD JSON nested 100,000 deep", "1", "DatasetError (not RecursionError)", "tests/test_downstream_hostile.py::test_deeply_nested_mustard_json_is_a_dataset_error"),
    ("Downstream ids that leave the dataset folder (`../../../../etc/passwd`, `/`, `\\`, NUL)", "6 MUStARD + 4 CH-SIMS", "refused, naming the file and row", "tests/test_downstream_hostile.py::test_a_mustard_id_that_leaves_the_folder_is_refused"),
    ("Duplicate JSON keys, CSV columns, utterance ids", "4 files", "DatasetError naming the key (and both rows)", "tests/test_downstream_hostile.py::test_duplicate_keys_are_reported"),
    ("Empty split; empty dataset", "3 files", "warning naming the file and split, `lcaffect.empty_splits` metadata; no utterances at all is an error", "tests/test_downstream_hostile.py::test_an_empty_split_is_reported_and_an_empty_dataset_refused"),
    ("Rotated video (64x32 stored, display matrix turning it 90 degrees)", "1 video", "picture turned as ffmpeg shows it: 2 bands in the centre crop, not 4", "tests/test_frames.py::test_rotated_video_keeps_its_aspect"),
    ("One-hour video through the clips segment step (450 segments, 135 MB of 112 px frames)", "1 video", "frames stream into 4 shards that verify; peak memory growth under 48 MiB", "tests/test_streaming.py::test_hour_long_video_streams_into_shards_in_bounded_memory"),
    ("Local video longer than max_duration_s", "1 video", "refused, naming the file, its length and the limit; not copied", "tests/test_streaming.py::test_max_duration_applies_to_local_videos"),
    ("Frame stream failing part-way through a video's shards", "1 stream", "previous shards and shards.json byte-identical; no temporary file", "tests/test_streaming.py::test_stream_failing_part_way_keeps_the_previous_shards"),
    ("16 non-reference B-frames in a row (frame tolerance cannot be met)", "1 video", "the rest decoded exactly; every frame matches a full decode at its recorded time", "tests/test_frames.py::test_unmet_tolerance_falls_back_to_exact_decoding"),
    ("Run worker SIGKILLed mid-step, Postgres instance with a real dagster-daemon", "1 run", "run marked failed (signal 9 in its log), retried by the daemon, retry succeeds", "tests/test_daemon_postgres.py::test_a_run_killed_with_sigkill_is_marked_failed_and_retried"),
    ("Object-store multipart upload read before it completes (SeaweedFS S3)", "1 object, 2 parts", "nothing visible under the final key until complete; then byte-exact", "tests/test_s3_server.py::test_multipart_upload_is_invisible_until_complete"),
    ("Object-store request with a wrong secret key", "1", "refused (PermissionError), nothing written", "tests/test_s3_server.py::test_wrong_secret_is_refused"),
    ("decord backend on a WebM without a container duration (decord refuses it)", "1 video", "PyAV decodes it exactly; the log names the file and decord's reason", "tests/test_frames.py::test_decord_refusal_falls_back_to_pyav_and_says_why"),
    ("decord backend on a truncated WebM (declares 30 s, frames stop near 13 s)", "1 video", "decord's impossible view logged; VideoDecodeError \"truncated\" as with PyAV", "tests/test_frames.py::test_decord_on_a_truncated_file_says_why_and_pyav_reports_the_cut"),
    ("decord backend on videos turned by 90, 180, 270 degrees (decord 0.6 resizes them wrongly)", "3 videos", "PyAV decodes them, the log says why; the same pictures as the PyAV backend", "tests/test_frames.py::test_rotated_video_same_picture_from_either_backend"),
    ("Clips run with `frame_backend: decord` over a file decord refuses", "2 videos", "both done (the refused one by PyAV, reason logged); exact frame times", "tests/test_clips_pipeline.py::test_clips_assets_with_the_decord_frame_backend"),
]
RELIABILITY_DOC = ROOT / "docs" / "RELIABILITY.md"


def render_reliability() -> str:
    lines = [
        "# Reliability: faults and hostile input tried",
        "",
        "Generated from `RELIABILITY` in `tests/test_reliability.py`; a test fails when this file",
        "differs. Regenerate with",
        "`LCAFFECT_WRITE_RELIABILITY=1 .venv/bin/python -m pytest tests/test_reliability.py -k table`.",
        "",
        "| fault / hostile input | cases | outcome | test |",
        "|---|---|---|---|",
    ]
    lines += [f"| {f} | {c} | {o} | `{t}` |" for f, c, o, t in RELIABILITY]
    return "\n".join(lines) + "\n"


def test_reliability_table_matches_the_registry():
    for *_rest, test_id in RELIABILITY:  # every row names a test that exists
        file, name = test_id.split("::")
        assert re.search(rf"^def {re.escape(name)}\(", (ROOT / file).read_text(), re.M), test_id
    text = render_reliability()
    if os.environ.get("LCAFFECT_WRITE_RELIABILITY"):
        RELIABILITY_DOC.parent.mkdir(exist_ok=True)
        lake.atomic_write_bytes(RELIABILITY_DOC, text.encode())
    assert RELIABILITY_DOC.read_text() == text, "docs/RELIABILITY.md is stale: regenerate it (see its header)"
