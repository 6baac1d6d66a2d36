"""Nothing from the web is trusted; secrets and user ids never leave (issue 11).

A loopback fake of the Bilibili API (tests/fault_server.py) lies about sizes, counts, time,
redirects and JSON shapes, and echoes the login cookie back. Loops are bounded in count and
time; nothing here reaches the internet.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, fixture_path
from fault_server import Fault, FaultServer, Response
from lcaffect_pipeline.formats import read_comments
from lcaffect_pipeline.sources import MANIFEST, SourceFolder, fetch_comments
from lcaffect_pipeline.sources.bilibili import BilibiliClient
from lcaffect_pipeline.sources.http import FetchError, PoliteSession, RedirectRefused, ResponseTooLarge
from test_sources import AID, BVID, CID, SEG, bili, config, dm_view_reply, manifest, raw_deflate, segments, view_json  # noqa: F401

MiB = 1024 * 1024
VIEW = f"/x/web-interface/view?bvid={BVID}"


def session(**kw) -> PoliteSession:
    opts = dict(min_interval_s=0, timeout_s=2, attempts=1, backoff_base_s=0.001)
    opts.update(kw)
    return PoliteSession(**opts)


# -- sizes ----------------------------------------------------------------------------------------
def test_gzip_bomb_is_refused_in_bounded_memory(bili):
    bomb = gzip.compress(b"\0" * (64 * MiB), 9)  # 64 KiB on the wire
    assert len(bomb) < 256 * 1024
    bili.add("/bomb", Response(bomb, headers={"Content-Encoding": "gzip"}))
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge) as info:
            session(max_bytes=MiB).fetch(bili.url("/bomb"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "after decompression" in str(info.value) and "max_response_bytes" in str(info.value)
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB for a 1 MiB cap"
    assert bili.count("/bomb") == 1  # too large is not worth retrying


@pytest.mark.parametrize("send_length", [True, False])
def test_raw_body_over_the_cap_is_refused_with_or_without_content_length(bili, send_length):
    bili.add("/big", Response(b"x" * (3 * MiB), send_length=send_length))
    with pytest.raises(ResponseTooLarge, match="1.0 MiB cap"):
        session(max_bytes=MiB, attempts=3).fetch(bili.url("/big"))
    assert bili.count("/big") == 1
    assert session(max_bytes=4 * MiB).fetch(bili.url("/big")).content == b"x" * (3 * MiB)


@pytest.mark.parametrize("encoding_header", [True, False])
def test_deflate_bomb_xml_is_not_committed(bili, lake_root, encoding_header):
    xml = b'<?xml version="1.0"?><i>' + b"<d p=\"1,1,25,1,1,0,a,1\">x</d>" * (8 * MiB // 30) + b"</i>"
    headers = {"Content-Type": "text/xml", **({"Content-Encoding": "deflate"} if encoding_header else {})}
    bili.add(f"/{CID}.xml", Response(raw_deflate(xml), headers=headers))
    bili.plan("/x/v2/dm/web/seg.so", [], then="404")
    dest = lake_root / "v"
    result = fetch_comments("bilibili", BVID, dest, config=config(bili, max_response_bytes=MiB))
    assert result.status == "failed" and result.error.startswith("ResponseTooLarge: ")
    assert "1.0 MiB cap after decompression" in result.error and "max_response_bytes" in result.error
    assert not (dest / MANIFEST).exists() and not (dest / f"{CID}.xml").exists()


# -- time -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_a_trickling_server_is_cut_at_the_total_deadline(bili, headers):
    bili.plan("/slow", [Fault.trickle(declared=10_000, every_s=0.2, headers=headers)], then="stall")  # 2000 s
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        session(timeout_s=2, deadline_s=1).fetch(bili.url("/slow"))
    took = time.monotonic() - start
    assert "1 s deadline" in info.value.reason and info.value.transient
    assert 0.9 <= took < 2.5, took  # the per-read timeout (2 s) never fires on a trickle


# -- counts ---------------------------------------------------------------------------------------
def test_segment_total_without_a_duration_is_bounded(bili, segments, lake_root):
    pages = [{"cid": CID, "page": 1, "part": "P1", "duration": 0}]
    bili.add(VIEW, Response(json.dumps({"code": 0, "data": {"bvid": BVID, "aid": AID, "duration": 0, "pages": pages}}).encode()))
    bili.add("/x/v2/dm/web/view", dm_view_reply(total=10**6))
    served = []

    def seg(req):  # a bounded stand-in for a million segments: 404 after 30
        served.append(req)
        return Response(segments[0]) if len(served) <= 30 else Response(b"", 404)

    bili.add("/x/v2/dm/web/seg.so", seg)
    result = fetch_comments("bilibili", BVID, lake_root / "v", config=config(bili, max_segments=50))
    assert result.status == "failed" and "dm_sge.total=1000000" in result.error and "max_segments=50" in result.error
    assert not served
    bili.add("/x/v2/dm/web/view", dm_view_reply(total=2))
    assert fetch_comments("bilibili", BVID, lake_root / "w", config=config(bili, max_segments=50)).status == "complete"


@pytest.mark.parametrize("duration", [10**8, 10**12])
def test_segment_count_from_a_huge_duration_is_refused_before_any_segment(bili, lake_root, duration):
    pages = [{"cid": CID, "page": 1, "part": "P1", "duration": duration}]
    bili.add(VIEW, Response(view_json(pages)))
    start = time.monotonic()
    result = fetch_comments("bilibili", BVID, lake_root / "v", config=config(bili))
    assert result.status == "failed" and f"duration {duration} s" in result.error and "max_segments=1000" in result.error
    assert bili.count("/x/v2/dm/web/seg.so") == 0 and time.monotonic() - start < 5


# -- pace and redirects ---------------------------------------------------------------------------
CHILD = """
import sys, time
from lcaffect_pipeline.sources.http import PoliteSession
url, slots, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = PoliteSession(min_interval_s=0.25, timeout_s=5, attempts=1, slots_dir=slots)
time.sleep(max(0.0, start_at - time.time()))
for _ in range(4):
    s.fetch(url)
"""


def test_host_spacing_holds_across_processes(bili, tmp_path):
    start_at = time.time() + 4  # every child has imported and waits: they start together
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, bili.url("/x/v2/dm/web/view"), str(tmp_path / "slots"), str(start_at)],
                         env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err[-2000:]
    times = sorted(r.time for r in bili.requests)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) == 12 and min(gaps) >= 0.15, [round(g, 3) for g in gaps]  # 0.25 s, with slack


def test_redirect_hops_are_spaced_loops_cut_and_other_hosts_refused(bili):
    for i in range(3):
        bili.add(f"/hop{i}", Response(b"", 302, {"Location": f"/hop{i + 1}"}))
    bili.add("/hop3", b"arrived")
    assert session(min_interval_s=0.2).fetch(bili.url("/hop0")).content == b"arrived"
    times = [r.time for r in bili.requests]
    assert len(times) == 4 and min(b - a for a, b in zip(times, times[1:])) >= 0.12  # slack: a busy machine

    bili.add("/loop", Response(b"", 302, {"Location": "/loop"}))
    with pytest.raises(RedirectRefused, match="more than 3 redirects"):
        session(min_interval_s=0.15, max_redirects=3, attempts=3).fetch(bili.url("/loop"))
    loop = [r.time for r in bili.requests_for("/loop")]
    assert len(loop) == 4 and min(b - a for a, b in zip(loop, loop[1:])) >= 0.09

    port = bili.base_url.rsplit(":", 1)[1]
    bili.add("/away", Response(b"", 302, {"Location": f"http://localhost:{port}/hop3"}))
    with pytest.raises(RedirectRefused, match="another host 'localhost'.*redirect_hosts"):
        session().fetch(bili.url("/away"))
    assert bili.count("/hop3") == 1
    assert session(redirect_hosts=("localhost",)).fetch(bili.url("/away")).content == b"arrived"
    # Between the two configured Bilibili endpoints, redirects are expected and followed.
    both = BilibiliClient(api_base=bili.base_url, comment_base=f"http://localhost:{port}", session=session())
    assert both.session.fetch(bili.url("/away")).content == b"arrived"


# -- what is stored parses; a passing failure is not made permanent --------------------------------
def test_a_segment_that_does_not_parse_is_not_committed_and_is_fetched_again(bili, segments, lake_root):
    seg2 = SEG.format(cid=CID, n=2)
    bili.add(seg2, b"\x98\x06\x01")  # one unknown varint field: protobuf reads it as an empty reply
    dest = lake_root / "v"
    failed = fetch_comments("bilibili", BVID, dest, config=config(bili))
    assert failed.status == "failed" and f"{CID}-1.pb was fetched but does not parse" in failed.error
    assert not (dest / MANIFEST).exists()
    partial = json.loads((SourceFolder(dest).staging / MANIFEST).read_text())
    assert partial["missing"] == [f"{CID}-1.pb"]

    bili.add(seg2, segments[1])
    done = fetch_comments("bilibili", BVID, dest, config=config(bili))
    assert done.status == "complete" and bili.count(SEG.format(cid=CID, n=1)) == 1 and bili.count(seg2) == 2
    assert read_comments(done.files, platform="bilibili").num_rows > 0


def test_xml_sample_after_a_rate_limit_is_incomplete_and_the_next_run_gets_the_history(bili, segments, lake_root):
    bili.plan("/x/v2/dm/web/seg.so", [], then="429")
    dest = lake_root / "v"
    sample = fetch_comments("bilibili", BVID, dest, config=config(bili))
    assert sample.status == "complete" and sample.metadata["comment_source"] == "xml"
    assert "HTTP 429" in sample.metadata["incomplete"]
    assert manifest(dest)["status"] == "incomplete"

    bili.plan("/x/v2/dm/web/seg.so", [])  # the rate limit has passed
    full = fetch_comments("bilibili", BVID, dest, config=config(bili))
    assert full.status == "complete" and full.metadata["comment_source"] == "protobuf"
    assert manifest(dest)["status"] == "complete" and sorted(manifest(dest)["files"]) == [f"{CID}-0.pb", f"{CID}-1.pb"]
    assert not (dest / f"{CID}.xml").exists()
    assert fetch_comments("bilibili", BVID, dest, config=config(bili)).status == "skipped"

    bili.plan("/x/v2/dm/web/seg.so", [], then="404")  # a lasting refusal: the sample is all there is
    other = lake_root / "w"
    assert fetch_comments("bilibili", BVID, other, config=config(bili)).status == "complete"
    assert manifest(other)["status"] == "complete" and "incomplete" not in manifest(other)["metadata"]


# -- JSON shapes ----------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["code", "data", "pages", "cid", "aid", "bvid", "page", "duration", "message", "x"]), inner, max_size=5),
    max_leaves=15,
)
REPLIES = JSON | st.fixed_dictionaries({"code": st.just(0), "data": JSON}) | st.fixed_dictionaries(
    {"code": st.just(0), "data": st.fixed_dictionaries({"bvid": JSON, "aid": JSON, "pages": JSON, "duration": JSON})}
)
NAMED_SHAPES = {
    "data is a list": {"code": 0, "data": [1, 2]},
    "data is a string": {"code": 0, "data": "oops"},
    "code is null": {"code": None, "data": {}},
    "a bare list": [{"code": 0}],
    "pages of strings": {"code": 0, "data": {"bvid": BVID, "aid": AID, "pages": ["a"]}},
}


def _fetch_view_reply(srv: FaultServer, body: bytes, root: Path):
    srv.add(VIEW, Response(body, headers={"Content-Type": "application/json"}))
    return fetch_comments("bilibili", BVID, root / uuid.uuid4().hex, config=config(srv, attempts=1))


@pytest.mark.parametrize("name", sorted(NAMED_SHAPES))
def test_named_json_shapes_fail_with_an_actionable_fetch_error(bili, lake_root, name):
    result = _fetch_view_reply(bili, json.dumps(NAMED_SHAPES[name]).encode(), lake_root)
    assert result.status == "failed" and result.error.startswith("FetchError: ")
    assert "check api_base" in result.error


def test_deeply_nested_json_fails_with_a_fetch_error(bili, lake_root):
    result = _fetch_view_reply(bili, b"[" * 200_000 + b"]" * 200_000, lake_root)
    assert result.status == "failed" and "nested too deeply" in result.error and result.error.startswith("FetchError: ")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=REPLIES)
def test_any_json_shape_gives_a_result_never_another_exception(bili, lake_root, reply):
    result = _fetch_view_reply(bili, json.dumps(reply).encode(), lake_root)
    assert result.status in ("complete", "failed")
    if result.status == "failed":
        assert result.error.startswith(("FetchError: ", "ResponseTooLarge: ", "RedirectRefused: ")), result.error


# -- secrets --------------------------------------------------------------------------------------
ECHOED = "echo-7f1d-SeSsDaTa-9a8b"


def _echo_server(segments) -> FaultServer:
    """Four videos: one fine, one whose view error echoes the cookie, one whose view redirects
    to a URL holding it (then answers with an error), one whose segments echo it in a JSON
    error (with no XML to fall back on: the failure is recorded in staging)."""

    def cookie_of(req) -> str:
        return req.headers.get("cookie", "").split("SESSDATA=")[-1].split(";")[0]

    def echo_message(req):
        return Response(json.dumps({"code": -101, "message": f"账号未登录: session {cookie_of(req)} expired"}).encode())

    def echo_redirect(req):
        return Response(b"", 302, {"Location": f"/x/web-interface/view?bvid=BV1Cd411c7mD&echo={cookie_of(req)}"})

    routes = {
        VIEW: Response(view_json()),
        "/x/web-interface/view?bvid=BV1Ab411c7mD": echo_message,
        "/x/web-interface/view?bvid=BV1Cd411c7mD": echo_redirect,
        "/x/web-interface/view?bvid=BV1Ef411c7mD": Response(view_json([{"cid": 888, "page": 1, "part": "P1", "duration": 500}])),
        "/x/v2/dm/web/seg.so?type=1&oid=888&segment_index=1": echo_message,
        "/x/v2/dm/web/view": dm_view_reply(),
        SEG.format(cid=CID, n=1): segments[0],
        SEG.format(cid=CID, n=2): segments[1],
    }
    srv = FaultServer(routes)
    srv.add(f"/x/web-interface/view?bvid=BV1Cd411c7mD&echo={ECHOED}", Response(json.dumps({"code": -404, "message": "啥都木有"}).encode()))
    return srv


def test_a_cookie_echoed_by_the_server_leaves_no_trace_in_a_dagster_run(segments, tmp_path, caplog):
    import dagster as dg

    from lcaffect_pipeline.defs.corpus_assets import ASSETS
    from lcaffect_pipeline.defs.resources import (CatalogueResource, CleaningResource, CrawlerResource,
                                                  DownstreamResource, LakeJsonIOManager, LakeResource, RunScope,
                                                  V2LCTrainingResource)

    root, home = tmp_path / "lake", tmp_path / "dagster_home"
    root.mkdir(), home.mkdir()
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSESSDATA\t{ECHOED}\n")
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text("videos:\n" + "".join(f"  - {{source: {v}, platform: bilibili}}\n" for v in (BVID, "BV1Ab411c7mD", "BV1Cd411c7mD", "BV1Ef411c7mD")))
    caplog.set_level(logging.DEBUG)
    with _echo_server(segments) as srv, dg.DagsterInstance.local_temp(str(home)) as instance:
        lake_res = LakeResource(root=str(root), author_salt="s")
        crawler = CrawlerResource(api_base=srv.base_url, comment_base=srv.base_url, min_interval_s=0, attempts=1,
                                  cookie_file=str(cookies), rate_limit_dir=str(tmp_path / "slots"))
        resources = {"lake": lake_res, "scope": RunScope(), "catalogue": CatalogueResource(path=str(catalogue)),
                     "crawler": crawler, "cleaning": CleaningResource(), "io_manager": LakeJsonIOManager(lake=lake_res),
                     "v2lc_training": V2LCTrainingResource(), "downstream": DownstreamResource()}
        result = dg.materialize(ASSETS, resources=resources, instance=instance, raise_on_error=False)
        events = "\n".join(repr(ev) for ev in result.all_events)
        stored = "\n".join(repr(rec) for rec in instance.all_logs(result.run_id))
        echoed = srv.count(f"/x/web-interface/view?bvid=BV1Cd411c7mD&echo={ECHOED}")
    assert echoed == 1 and "BV1Ab411c7mD" in stored and "账号未登录" in stored  # the echoes happened and were reported
    staged = [p for p in root.rglob(MANIFEST) if ".staging" in str(p)]
    assert staged and "session *** expired" in staged[0].read_text()
    files = [p for p in [*root.rglob("*"), *home.rglob("*")] if p.is_file()]
    for name, text in [(str(p), p.read_bytes().decode("utf-8", "replace")) for p in files] + [
        ("events", events), ("event log", stored), ("python log", caplog.text)
    ]:
        assert ECHOED not in text, f"the cookie value leaked into {name}"


# -- privacy --------------------------------------------------------------------------------------
def test_derived_acfun_ids_do_not_depend_on_the_user_id(tmp_path):
    items = json.loads(fixture_path("acfun", "ACFun.json").read_text(encoding="utf-8"))
    records = [r for item in items for r in (item if isinstance(item, list) else [item])]
    assert all(len(r["c"].split(",")) < 7 for r in records)  # no record carries its own id
    ids = []
    for user in (None, "123456789", "guest"):
        changed = [{**r, "c": ",".join(f if i != 4 or user is None else user for i, f in enumerate(r["c"].split(",")))} for r in records]
        path = tmp_path / f"{user}.json"
        path.write_text(json.dumps(changed, ensure_ascii=False), encoding="utf-8")
        ids.append(read_comments(path, platform="acfun", video_id="v")["comment_id"].to_pylist())
    assert len(ids[0]) == 155 and ids[0] == ids[1] == ids[2]


def test_derived_youtube_ids_do_not_depend_on_the_channel_id(tmp_path):
    lines = fixture_path("youtube", "chatreplay.live_chat.json").read_text(encoding="utf-8").splitlines()[:50]
    ids = []
    for channel in ("UCaaaaaaaaaaaaaaaaaaaaaa", "UCbbbbbbbbbbbbbbbbbbbbbb"):
        out = []
        for line in lines:
            record = json.loads(line)
            for action in record["replayChatItemAction"]["actions"]:
                for renderer in (action.get("addChatItemAction") or {}).get("item", {}).values():
                    renderer.pop("id", None)
                    renderer["authorExternalChannelId"] = channel
            out.append(json.dumps(record, ensure_ascii=False))
        path = tmp_path / f"{channel}.live_chat.json"
        path.write_text("\n".join(out), encoding="utf-8")
        ids.append(read_comments(path, platform="youtube", video_id="v")["comment_id"].to_pylist())
    assert len(ids[0]) > 10 and ids[0] == ids[1]
    assert len(set(ids[0])) == len(ids[0])  # still one id per distinct comment
