"""The comment crawlers against a loopback server that serves real Bilibili fixtures and injects
faults (tests/fault_server.py). Nothing here reaches the internet."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import zlib
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import fixture_path
from fault_server import Fault, FaultServer, Response
from lcaffect_pipeline.formats.bili_proto import DmSegConfig, DmSegMobileReply, DmWebViewReply
from lcaffect_pipeline.sources import MANIFEST, SourceConfig, SourceFolder, choose_fetcher, fetch_comments
from lcaffect_pipeline.sources.bilibili import BilibiliClient, parse_bilibili_ref
from lcaffect_pipeline.sources.http import FetchError, PoliteSession, RetryableError, mask_text, parse_retry_after
from lcaffect_pipeline.sources.local import fetch_local

BVID, AID, CID, DURATION = "BV1Xx411c7mD", 170001, 285968687, 500  # 500 s: two 6-minute segments
SEG = "/x/v2/dm/web/seg.so?type=1&oid={cid}&segment_index={n}"
SECRET = "s3cr3t-SESSDATA-value-7f1d"


def view_json(pages=None) -> bytes:
    pages = pages or [{"cid": CID, "page": 1, "part": "P1", "duration": DURATION}]
    data = {"bvid": BVID, "aid": AID, "title": "测试视频", "duration": DURATION, "pubdate": 1600000000, "pages": pages}
    return json.dumps({"code": 0, "message": "0", "data": data}).encode()


def dm_view_reply(total: int = 2) -> bytes:
    return DmWebViewReply(state=0, dm_sge=DmSegConfig(page_size=360000, total=total)).SerializeToString()


def raw_deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # what comment.bilibili.com sends
    return comp.compress(data) + comp.flush()


@pytest.fixture
def segments() -> list[bytes]:
    folder = fixture_path("bilibili", "protobuf", str(CID))
    return [(folder / f"{CID}-{i}.pb").read_bytes() for i in range(2)]


@pytest.fixture
def bili(segments):
    """A loopback Bilibili: view JSON, DmWebViewReply, two real seg.so bodies, a raw-deflate XML."""
    xml = fixture_path("bilibili", "xml", f"{CID}.xml").read_bytes()
    routes = {
        f"/x/web-interface/view?bvid={BVID}": Response(view_json(), headers={"Content-Type": "application/json"}),
        f"/x/web-interface/view?aid={AID}": Response(view_json(), headers={"Content-Type": "application/json"}),
        "/x/v2/dm/web/view": dm_view_reply(),
        SEG.format(cid=CID, n=1): segments[0],
        SEG.format(cid=CID, n=2): segments[1],
        f"/{CID}.xml": Response(raw_deflate(xml), headers={"Content-Type": "text/xml", "Content-Encoding": "deflate"}),
    }
    with FaultServer(routes, stall_s=5) as srv:
        srv.xml = xml
        yield srv


def fast_session(**kw) -> PoliteSession:
    opts = dict(min_interval_s=0, timeout_s=0.3, attempts=4, backoff_base_s=0.001, retry_after_max_s=0.05)
    opts.update(kw)
    return PoliteSession(**opts)


def client(srv: FaultServer, **kw) -> BilibiliClient:
    return BilibiliClient(api_base=srv.base_url, comment_base=srv.base_url, session=fast_session(**kw))


def config(srv: FaultServer, **kw) -> SourceConfig:
    opts = dict(api_base=srv.base_url, comment_base=srv.base_url, min_interval_s=0, timeout_s=0.3,
                attempts=3, backoff_base_s=0.001, retry_after_max_s=0.05)
    opts.update(kw)
    return SourceConfig(**opts)


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


# -- references -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref, expected",
    [
        ("BV1Xx411c7mD", ("BV1Xx411c7mD", None)),
        ("bv1Xx411c7mD", ("BV1Xx411c7mD", None)),
        ("av170001", (170001, None)),
        ("AV170001", (170001, None)),
        ("https://www.bilibili.com/video/BV1Xx411c7mD?p=3", ("BV1Xx411c7mD", 3)),
        ("https://www.bilibili.com/video/BV1Xx411c7mD/?spm_id_from=333.1007&p=2", ("BV1Xx411c7mD", 2)),
        ("http://m.bilibili.com/video/av170001/", (170001, None)),
        ("www.bilibili.com/video/BV1Xx411c7mD", ("BV1Xx411c7mD", None)),
        ("  BV1Xx411c7mD\n", ("BV1Xx411c7mD", None)),
    ],
)
def test_parse_bilibili_ref_accepts_ids_and_urls(ref, expected):
    assert parse_bilibili_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    ["", "BV123", "BV1Xx411c7mD0", "av", "av0", "av12x", "https://b23.tv/abc123",
     "https://www.bilibili.com/bangumi/play/ep123", "https://example.com/video/BV1Xx411c7mD",
     "https://www.bilibili.com/video/BV1Xx411c7mD?p=0", "https://www.bilibili.com/video/BV1Xx411c7mD?p=x"],
)
def test_parse_bilibili_ref_rejects_bad_refs_naming_them(ref):
    with pytest.raises(ValueError) as info:
        parse_bilibili_ref(ref)
    assert repr(ref) in str(info.value) or (ref == "" and "empty" in str(info.value))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parse_bilibili_ref_only_ever_raises_value_error(text):
    try:
        vid, page = parse_bilibili_ref(text)
    except ValueError:
        return
    assert (isinstance(vid, str) and vid.startswith("BV") and len(vid) == 12) or (isinstance(vid, int) and vid > 0)
    assert page is None or page >= 1


# -- Bilibili: full fetch, skip, refresh ----------------------------------------------------------
def test_full_fetch_stores_every_segment_raw_with_a_manifest(bili, segments, lake_root):
    dest = lake_root / "sources" / "bilibili" / BVID
    result = client(bili).fetch(f"https://www.bilibili.com/video/{BVID}", dest)
    assert result.status == "complete" and result.changed and result.video_id == BVID
    for i, data in enumerate(segments):
        assert (dest / f"{CID}-{i}.pb").read_bytes() == data
    man = manifest(dest)
    assert man["status"] == "complete"
    assert set(man["files"]) == {f"{CID}-0.pb", f"{CID}-1.pb"}
    assert man["files"][f"{CID}-1.pb"]["sha256"] == hashlib.sha256(segments[1]).hexdigest()
    assert man["metadata"]["title"] == "测试视频" and man["metadata"]["cid"] == CID
    assert man["metadata"]["comment_source"] == "protobuf" and man["metadata"]["duration"] == DURATION
    assert result.content_hash == man["content_hash"]
    assert not SourceFolder(dest).staging.exists()
    seg_requests = bili.requests_for("/x/v2/dm/web/seg.so")
    assert [r.params["segment_index"] for r in seg_requests] == ["1", "2"]
    assert all(r.headers["referer"].startswith("https://www.bilibili.com") for r in seg_requests)
    assert "lcaffect" in seg_requests[0].headers["user-agent"]
    assert bili.requests_for("/x/v2/dm/web/view")[0].params == {"type": "1", "oid": str(CID), "pid": str(AID)}


def test_av_id_resolves_through_the_view_api(bili, lake_root):
    result = client(bili).fetch(f"av{AID}", lake_root / "v")
    assert result.status == "complete" and result.video_id == BVID
    assert bili.requests_for("/x/web-interface/view")[0].params == {"aid": str(AID)}


def test_multi_part_video_fetches_the_requested_part(bili, segments, lake_root):
    pages = [{"cid": 1, "page": 1, "part": "intro", "duration": 60},
             {"cid": CID, "page": 2, "part": "main", "duration": DURATION}]
    bili.add(f"/x/web-interface/view?bvid={BVID}", Response(view_json(pages)))
    result = client(bili).fetch(f"https://www.bilibili.com/video/{BVID}?p=2", lake_root / "v")
    assert result.video_id == f"{BVID}_p2" and result.metadata["part"] == "main"
    assert [p["cid"] for p in result.metadata["parts"]] == [1, CID]
    assert (lake_root / "v" / f"{CID}-1.pb").read_bytes() == segments[1]
    with pytest.raises(ValueError, match="no p=5"):
        client(bili).fetch(f"https://www.bilibili.com/video/{BVID}?p=5", lake_root / "w")


def test_rerun_of_a_complete_video_is_skipped_without_requests(bili, lake_root):
    dest = lake_root / "v"
    first = fetch_comments("bilibili", BVID, dest, config=config(bili))
    seen = len(bili.requests)
    again = fetch_comments("bilibili", BVID, dest, config=config(bili))
    assert again.status == "skipped" and not again.changed
    assert again.content_hash == first.content_hash and sorted(again.files) == sorted(first.files)
    assert len(bili.requests) == seen


def test_refresh_replaces_only_changed_files_and_says_so(bili, segments, lake_root):
    dest = lake_root / "v"
    fetch_comments("bilibili", BVID, dest, config=config(bili))
    before = manifest(dest)
    inodes = {p.name: p.stat().st_ino for p in dest.glob("*.pb")}

    same = fetch_comments("bilibili", BVID, dest, config=config(bili), refresh=True)
    assert same.status == "complete" and same.changed is False
    assert bili.count(SEG.format(cid=CID, n=1)) == 2  # it did fetch again
    assert {p.name: p.stat().st_ino for p in dest.glob("*.pb")} == inodes  # and left the files alone
    after = manifest(dest)
    assert after["content_hash"] == before["content_hash"] and after["fetched_at"] == before["fetched_at"]

    reply = DmSegMobileReply.FromString(segments[1])  # a new comment arrives in window 2
    reply.elems.add(id=1, idStr="1", progress=400_000, mode=1, content="新弹幕", ctime=1700000000)
    grown = reply.SerializeToString()
    bili.add(SEG.format(cid=CID, n=2), grown)
    new = fetch_comments("bilibili", BVID, dest, config=config(bili), refresh=True)
    assert new.changed is True and new.content_hash != before["content_hash"]
    assert (dest / f"{CID}-1.pb").read_bytes() == grown
    assert (dest / f"{CID}-0.pb").stat().st_ino == inodes[f"{CID}-0.pb"]
    assert (dest / f"{CID}-1.pb").stat().st_ino != inodes[f"{CID}-1.pb"]


# -- faults -------------------------------------------------------------------------------------
def test_retries_through_every_fault_then_succeeds(bili, segments, lake_root, caplog):
    faults = ["429", "412", "500", "reset", "stall", "truncate"]
    bili.plan(SEG.format(cid=CID, n=1), faults)
    caplog.set_level(logging.WARNING, logger="lcaffect_pipeline")
    result = client(bili, attempts=len(faults) + 1).fetch(BVID, lake_root / "v")
    assert result.status == "complete"
    assert (lake_root / "v" / f"{CID}-0.pb").read_bytes() == segments[0]
    assert [r.fault for r in bili.requests_for(SEG.format(cid=CID, n=1))] == [*faults, None]
    retry_lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retry_lines) == len(faults)
    assert any("truncated body" in line for line in retry_lines)
    assert any("timed out" in line for line in retry_lines)


def test_exhausted_budget_leaves_nothing_visible_and_the_rerun_fetches_only_the_rest(bili, segments, lake_root):
    dest = lake_root / "v"
    seg2 = SEG.format(cid=CID, n=2)
    bili.plan(seg2, [], then="500")
    failed = fetch_comments("bilibili", BVID, dest, config=config(bili, attempts=3))
    assert failed.status == "failed" and not failed.files
    assert "segment_index=2" in failed.error and "HTTP 500" in failed.error and "3 attempts" in failed.error
    assert not dest.exists() or not list(dest.iterdir())  # no final-named file, no manifest
    partial = json.loads((SourceFolder(dest).staging / MANIFEST).read_text())
    assert partial["status"] == "partial" and partial["missing"] == [f"{CID}-1.pb"]
    assert bili.count(seg2) == 3

    bili.plan(seg2, [])  # the server recovers
    done = fetch_comments("bilibili", BVID, dest, config=config(bili, attempts=3))
    assert done.status == "complete"
    assert bili.count(SEG.format(cid=CID, n=1)) == 1  # segment 1 was not fetched again
    assert bili.count(seg2) == 4
    assert [(dest / f"{CID}-{i}.pb").read_bytes() for i in range(2)] == segments
    assert not SourceFolder(dest).staging.exists()


def test_segment_count_falls_back_to_the_duration(bili, segments, lake_root):
    bili.plan("/x/v2/dm/web/view", [], then="503")
    result = client(bili, attempts=2).fetch(BVID, lake_root / "v")
    assert result.status == "complete" and len(result.files) == 2  # ceil(500 / 360)
    assert bili.count("/x/v2/dm/web/view") == 2


@pytest.mark.parametrize("encoding_header", [True, False])
def test_xml_fallback_when_protobuf_fails_entirely(bili, lake_root, encoding_header):
    headers = {"Content-Type": "text/xml", **({"Content-Encoding": "deflate"} if encoding_header else {})}
    bili.add(f"/{CID}.xml", Response(raw_deflate(bili.xml), headers=headers))
    bili.plan("/x/v2/dm/web/seg.so", [], then="404")
    dest = lake_root / "v"
    result = client(bili).fetch(BVID, dest)
    assert result.status == "complete" and result.metadata["comment_source"] == "xml"
    assert (dest / f"{CID}.xml").read_bytes() == bili.xml
    assert set(manifest(dest)["files"]) == {f"{CID}.xml"}


def test_failure_of_both_protobuf_and_xml_names_both(bili, lake_root):
    bili.plan("/x/v2/dm/web/seg.so", [], then="404")
    bili.plan(f"/{CID}.xml", [], then="403")
    result = fetch_comments("bilibili", BVID, lake_root / "v", config=config(bili))
    assert result.status == "failed"
    assert "403" in result.error and "404" in result.error and f"{CID}.xml" in result.error


def test_bilibili_json_error_codes(bili, lake_root):
    calls = []

    def view(req):  # -412 ("blocked for now") once, then the real answer
        calls.append(req)
        if len(calls) == 1:
            return Response(json.dumps({"code": -412, "message": "请求被拦截"}).encode())
        return Response(view_json())

    bili.add(f"/x/web-interface/view?bvid={BVID}", view)
    assert client(bili).fetch(BVID, lake_root / "a").status == "complete" and len(calls) == 2

    bili.add(f"/x/web-interface/view?bvid={BVID}", Response(json.dumps({"code": -404, "message": "啥都木有"}).encode()))
    result = fetch_comments("bilibili", BVID, lake_root / "b", config=config(bili))
    assert result.status == "failed" and "code -404" in result.error
    assert bili.count(f"/x/web-interface/view?bvid={BVID}") == 3  # -404 is not retried


def test_short_body_is_caught_even_where_urllib3_does_not_enforce_length():
    resp = requests.Response()  # as urllib3 1.x hands it over: no error, just fewer bytes
    resp.headers["Content-Length"] = "10"
    resp.raw = io.BytesIO(b"12345")
    resp.raw.read()
    resp.request = requests.Request("GET", "http://127.0.0.1/x").prepare()
    with pytest.raises(RetryableError, match="5 of 10 bytes"):
        PoliteSession._check_length(resp)


def test_not_found_is_not_retried(bili):
    with pytest.raises(FetchError) as info:
        fast_session(attempts=5).fetch(bili.url("/nothing-here"))
    assert info.value.status == 404 and bili.count("/nothing-here") == 1
    assert "/nothing-here" in str(info.value)


# -- politeness and secrets -----------------------------------------------------------------------
def test_requests_to_one_host_are_spaced(bili):
    interval = 0.05
    session = fast_session(min_interval_s=interval)
    for _ in range(6):
        session.fetch(bili.url("/x/v2/dm/web/view"))
    times = [r.time for r in bili.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= interval * 0.8, gaps  # server-side arrival times, some scheduling slack
    assert times[-1] - times[0] < 5 * interval + 1.0


def test_retry_after_is_respected_within_its_bound(bili):
    bili.plan("/x/v2/dm/web/view", [Fault.with_status(429, retry_after=3)])
    session = fast_session(retry_after_max_s=0.25)
    session.fetch(bili.url("/x/v2/dm/web/view"))
    first, second = bili.requests
    assert 0.2 <= second.time - first.time < 2.0  # waited, but not the full 3 s
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_cookies_reach_the_server_but_never_logs_errors_or_manifests(bili, lake_root, caplog, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(
        "# Netscape HTTP Cookie File\n"
        f"127.0.0.1\tFALSE\t/\tFALSE\t0\tSESSDATA\t{SECRET}\n"
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tbili_jct\tjct-0123456789abcdef\n"
    )
    caplog.set_level(logging.DEBUG)
    seg2 = SEG.format(cid=CID, n=2)
    bili.plan(seg2, [], then="500")
    dest = lake_root / "v"
    ref = f"https://www.bilibili.com/video/{BVID}?SESSDATA={SECRET}"  # pasted with a secret in it
    result = fetch_comments("bilibili", ref, dest, config=config(bili, cookie_file=str(cookies)))
    assert result.status == "failed"
    sent = bili.requests_for(seg2)[0].headers["cookie"]
    assert f"SESSDATA={SECRET}" in sent and "bili_jct=jct-0123456789abcdef" in sent
    partial = (SourceFolder(dest).staging / MANIFEST).read_text()
    for text in (caplog.text, result.error, result.video_id, partial, json.dumps(result.metadata)):
        assert SECRET not in text and "jct-0123456789abcdef" not in text

    bili.plan(seg2, [])
    done = fetch_comments("bilibili", ref, dest, config=config(bili, cookie_file=str(cookies)))
    assert done.status == "complete"
    assert SECRET not in (dest / MANIFEST).read_text() and SECRET not in caplog.text
    assert SECRET not in PoliteSession(cookie_file=cookies).mask(f"echoed back: {SECRET}")


def test_masking_and_bad_cookie_files(tmp_path):
    masked = mask_text(f"https://api.bilibili.com/x?oid=1&access_key=abc123&SESSDATA={SECRET}; bili_jct=zz99")
    assert "oid=1" in masked and "abc123" not in masked and SECRET not in masked and "zz99" not in masked
    bad = tmp_path / "cookies.txt"
    bad.write_text(f"SESSDATA={SECRET}\n")
    with pytest.raises(ValueError) as info:
        PoliteSession(cookie_file=bad)
    assert str(bad) in str(info.value) and SECRET not in str(info.value)


# -- yt-dlp -------------------------------------------------------------------------------------
PAGE = """<!DOCTYPE html><html><head><title>Danmaku clip</title></head><body>
<video controls src="clip.mp4"><track kind="subtitles" srclang="danmaku" label="danmaku" src="clip.danmaku.xml"></video>
</body></html>"""


@pytest.fixture
def clip_page():
    xml = fixture_path("bilibili", "xml", "2170097.xml")
    with FaultServer({"/clip.html": PAGE, "/clip.danmaku.xml": xml, "/bare.html": "<html><body>no video</body></html>"}) as srv:
        srv.xml = xml.read_bytes()
        yield srv


def test_ytdlp_generic_extractor_downloads_the_danmaku_track(clip_page, lake_root, tmp_path, caplog):
    from lcaffect_pipeline.sources.ytdlp_comments import fetch_ytdlp_comments

    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSESSDATA\t{SECRET}\n")
    before = cookies.read_bytes()
    caplog.set_level(logging.DEBUG)
    dest = lake_root / "v"
    result = fetch_ytdlp_comments(clip_page.url("/clip.html"), dest, cookiefile=cookies, sleep_interval_s=0)
    assert result.status == "complete"
    (track,) = [Path(f) for f in result.files]
    assert track.name.endswith(".danmaku.xml") and track.read_bytes() == clip_page.xml
    assert result.metadata["tracks"] == {"danmaku": track.name} and result.metadata["title"]
    assert manifest(dest)["files"][track.name]["sha256"] == hashlib.sha256(clip_page.xml).hexdigest()
    track_req = clip_page.requests_for("/clip.danmaku.xml")[0]
    assert SECRET in track_req.headers.get("cookie", "")
    assert SECRET not in caplog.text and cookies.read_bytes() == before  # the user's file untouched

    seen = len(clip_page.requests)
    assert fetch_comments("niconico", clip_page.url("/clip.html"), dest).status == "skipped"
    assert len(clip_page.requests) == seen


def test_ytdlp_retries_a_failing_track_and_reports_pages_without_tracks(clip_page, lake_root):
    from lcaffect_pipeline.sources.ytdlp_comments import fetch_ytdlp_comments

    clip_page.plan("/clip.danmaku.xml", ["503"])
    result = fetch_ytdlp_comments(clip_page.url("/clip.html"), lake_root / "a", sleep_interval_s=0, retries=3,
                                  ydl_opts={"retry_sleep_functions": {"http": lambda n: 0.01}})
    assert result.status == "complete" and clip_page.count("/clip.danmaku.xml") == 2

    bare = fetch_comments("youtube", clip_page.url("/bare.html"), lake_root / "b",
                          config=SourceConfig(min_interval_s=0, attempts=1, timeout_s=2))
    assert bare.status == "failed" and "bare.html" in bare.error
    assert not (lake_root / "b" / MANIFEST).exists()


# -- local files and dispatch ---------------------------------------------------------------------
def test_local_file_and_folder_copy_with_skip_and_refresh(lake_root, tmp_path):
    xml = fixture_path("bilibili", "xml", "2170097.xml")
    one = fetch_local(xml, lake_root / "one", platform="bilibili")
    assert one.video_id == "2170097" and (lake_root / "one" / "2170097.xml").read_bytes() == xml.read_bytes()

    src = tmp_path / "my_video"
    src.mkdir()
    (src / "a.xml").write_bytes(xml.read_bytes())
    (src / ".hidden").write_text("x")
    dest = lake_root / "two"
    first = fetch_comments("local", str(src), dest)
    assert first.status == "complete" and first.video_id == "my_video"
    assert sorted(p.name for p in dest.iterdir()) == ["a.xml", MANIFEST]
    assert fetch_comments("local", str(src), dest).status == "skipped"
    assert fetch_comments("local", str(src), dest, refresh=True).changed is False
    (src / "a.xml").write_bytes(b"<i></i>")
    (src / "b.json").write_text("[]")
    changed = fetch_comments("local", str(src), dest, refresh=True)
    assert changed.changed is True and (dest / "a.xml").read_bytes() == b"<i></i>"
    (src / "b.json").unlink()
    shrunk = fetch_comments("local", str(src), dest, refresh=True)
    assert shrunk.changed is True and not (dest / "b.json").exists()  # dropped with the manifest



def test_local_source_is_checked_on_every_run_without_refresh(lake_root, tmp_path):
    src = tmp_path / "v.xml"
    src.write_bytes(fixture_path("bilibili", "xml", "18678311.xml").read_bytes())
    dest = lake_root / "v"
    first = fetch_local(src, dest, platform="bilibili")
    assert fetch_local(src, dest, platform="bilibili").status == "skipped"  # same size and mtime
    os.utime(src, ns=(1, 1_000_000_000))  # touched: read again, same content, same data version
    touched = fetch_local(src, dest, platform="bilibili")
    assert (touched.status, touched.changed, touched.content_hash) == ("complete", False, first.content_hash)
    assert fetch_local(src, dest, platform="bilibili").status == "skipped"  # the new mtime is remembered
    src.write_bytes(src.read_bytes().replace(b"</i>", b'<d p="1.0,1,25,16777215,1600000000,0,ab,77,5">new</d></i>'))
    changed = fetch_local(src, dest, platform="bilibili")
    assert changed.changed is True and changed.content_hash != first.content_hash
    assert (dest / "v.xml").read_bytes() == src.read_bytes()

def test_dispatch_and_a_batch_that_goes_on_past_failures(bili, lake_root, tmp_path):
    assert choose_fetcher("bilibili", BVID) == "bilibili"
    assert choose_fetcher("bilibili", "https://www.bilibili.com/bangumi/play/ep1") == "ytdlp"
    assert choose_fetcher("youtube", "https://www.youtube.com/watch?v=x") == "ytdlp"
    assert choose_fetcher("niconico", str(tmp_path)) == "local"
    with pytest.raises(ValueError, match="unknown platform"):
        choose_fetcher("vimeo", "x")

    bili.plan(f"/x/web-interface/view?bvid={BVID}", ["reset"])
    cfg = config(bili)
    session = cfg.session()  # one session for the batch: spacing holds across videos
    rows = [("bilibili", "BV0000000000"), ("bilibili", "not a ref"), ("youtube", str(tmp_path / "missing")),
            ("bilibili", BVID)]
    results = [fetch_comments(p, s, lake_root / str(i), config=cfg, session=session) for i, (p, s) in enumerate(rows)]
    assert [r.status for r in results] == ["failed", "failed", "failed", "complete"]
    assert "HTTP 404" in results[0].error and "not a ref" in results[1].error
    assert "missing" in results[2].error
    with pytest.raises(ValueError, match="unknown source config keys"):
        fetch_comments("bilibili", BVID, lake_root / "x", config={"atempts": 3})


# -- the fault server itself (other tests reuse it) -----------------------------------------------
def test_fault_server_ranges_queries_and_plans():
    body = bytes(range(256)) * 4
    with FaultServer({"/v.bin": body, "/q?b=2&a=1": b"query"}) as srv:
        got = requests.get(srv.url("/v.bin"), headers={"Range": "bytes=10-19"}, timeout=2)
        assert got.status_code == 206 and got.content == body[10:20]
        assert got.headers["Content-Range"] == f"bytes 10-19/{len(body)}"
        assert requests.get(srv.url("/v.bin"), headers={"Range": "bytes=-4"}, timeout=2).content == body[-4:]
        assert requests.get(srv.url("/q?a=1&b=2"), timeout=2).content == b"query"
        assert requests.head(srv.url("/v.bin"), timeout=2).headers["Content-Length"] == str(len(body))
        srv.plan("/v.bin", ["503", "ok"], then="410")
        assert [requests.get(srv.url("/v.bin"), timeout=2).status_code for _ in range(3)] == [503, 200, 410]
        assert srv.count("/q?a=1") == 1 and srv.count("/v.bin") == 6
        with pytest.raises(ValueError):
            srv.plan("/v.bin", ["explode"])
    t0 = time.monotonic()
    with FaultServer({"/s": b"x"}, stall_s=30) as srv:
        srv.plan("/s", ["stall"])
        with pytest.raises(requests.Timeout):
            requests.get(srv.url("/s"), timeout=0.2)
    assert time.monotonic() - t0 < 5  # closing the server woke the stalled handler
