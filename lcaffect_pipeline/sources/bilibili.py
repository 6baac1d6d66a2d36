"""Bilibili live comments (danmaku): resolve a video's parts, fetch every protobuf segment.

For one part (``cid``) of a video the client fetches

1. ``{api_base}/x/web-interface/view?bvid=…`` (or ``aid=``): title, duration, pubdate, parts;
2. ``{api_base}/x/v2/dm/web/view?type=1&oid={cid}&pid={aid}``: a ``DmWebViewReply`` whose
   ``dm_sge.total`` is the number of 6-minute segments (``ceil(duration / 360)`` if it fails);
3. ``{api_base}/x/v2/dm/web/seg.so?type=1&oid={cid}&segment_index={n}`` for n = 1..total,
   stored raw as ``{cid}-{n-1}.pb``;
4. only if no segment could be had at all, ``{comment_base}/{cid}.xml`` (a capped sample of
   about 1.2 x maxlimit comments), stored as ``{cid}.xml``. When the segments failed for a
   reason that may pass (429, 5xx, timeouts), the sample is committed as ``incomplete``: usable
   now, fetched again (full history first) by the next run.

A login cookie (``SESSDATA``, from the session's cookie file) unlocks the full history.

The server is not trusted: the number of segments is bounded by the video's duration and by
``max_segments``; every JSON reply is checked for its shape, and any surprise becomes a
``FetchError`` that says what was wrong; what is stored must parse (``SourceFolder.commit``
with ``validate``) before the fetch counts as complete; metadata is masked like every message.
"""

from __future__ import annotations

import math
import re
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests
from google.protobuf.message import DecodeError

from lcaffect_pipeline.formats.bili_proto import DmSegMobileReply, DmWebViewReply
from lcaffect_pipeline.sources.folder import FetchResult, SourceFolder
from lcaffect_pipeline.sources.http import FetchError, PoliteSession, ResponseTooLarge, RetryableError, mask_obj, masked_logger
from lcaffect_pipeline.sources.limits import LimitExceeded, inflate

log = masked_logger(__name__)

SEGMENT_S = 360  # one seg.so window is 6 minutes
MAX_SEGMENTS = 1000  # 100 hours; a longer "duration" or dm_sge.total is refused (crawler max_segments)
# Bilibili's JSON codes for "too many requests / blocked for now": worth another try.
RETRY_CODES = frozenset({-412, -509, -799})
REFERER = "https://www.bilibili.com/"

_BVID = re.compile(r"^[Bb][Vv]([0-9A-Za-z]{10})$")
_AID = re.compile(r"^[Aa][Vv](\d{1,19})$")
_VIDEO_PATH = re.compile(r"^/(?:s/)?video/([^/]+)/?$")
_HOSTS = ("bilibili.com", "www.bilibili.com", "m.bilibili.com")


def parse_bilibili_ref(ref: str) -> tuple[str | int, int | None]:
    """``(bvid, page)`` or ``(aid, page)`` from a BV id, an av id or a bilibili.com/video/ URL.

    ``bvid`` is a str (``"BV1xx411c7mD"``), ``aid`` an int; ``page`` is the URL's ``?p=N`` or
    None. Anything else raises ValueError naming the input.
    """
    text = str(ref).strip()
    if not text:
        raise ValueError("empty Bilibili reference")
    page = None
    if "/" in text or ":" in text:
        text, page = _parse_video_url(text, ref)
    if m := _BVID.match(text):
        return "BV" + m.group(1), page
    if m := _AID.match(text):
        aid = int(m.group(1))
        if aid > 0:
            return aid, page
    raise ValueError(f"{ref!r} is not a Bilibili BV id, av id or bilibili.com/video/ URL")


def _parse_video_url(text: str, ref: str) -> tuple[str, int | None]:
    try:
        url = urlsplit(text if "://" in text else "https://" + text)
    except ValueError as exc:
        raise ValueError(f"{ref!r} is not a URL ({exc})") from None
    host = (url.hostname or "").lower()
    if host == "b23.tv":
        raise ValueError(f"{ref!r} is a b23.tv short link: open it once and use the bilibili.com/video/ URL")
    if host not in _HOSTS:
        raise ValueError(f"{ref!r} is not a bilibili.com URL")
    m = _VIDEO_PATH.match(url.path)
    if not m:
        raise ValueError(f"{ref!r} is not a bilibili.com/video/ URL (bangumi and live rooms go through yt-dlp)")
    pages = parse_qs(url.query).get("p")
    if not pages:
        return m.group(1), None
    if not pages[0].isdigit() or int(pages[0]) < 1:
        raise ValueError(f"{ref!r} has a bad part number p={pages[0]!r}")
    return m.group(1), int(pages[0])


class BilibiliClient:
    """Bilibili's public comment endpoints over a ``PoliteSession`` (bases are configurable so
    that tests point them at a loopback server)."""

    def __init__(
        self,
        api_base: str = "https://api.bilibili.com",
        comment_base: str = "https://comment.bilibili.com",
        session: PoliteSession | None = None,
        max_segments: int = MAX_SEGMENTS,
    ):
        self.api_base = api_base.rstrip("/")
        self.comment_base = comment_base.rstrip("/")
        self.session = session or PoliteSession()
        self.max_segments = int(max_segments)
        # Redirects between the two configured endpoints are expected; to other hosts, refused.
        bases = {urlsplit(b).hostname for b in (self.api_base, self.comment_base)}
        self.session.redirect_hosts = self.session.redirect_hosts | {h.lower() for h in bases if h}
        # Bilibili answers requests without a bilibili.com Referer with 412 more often.
        self._headers = {"Referer": REFERER}

    # -- the endpoints -------------------------------------------------------------------------
    def video_info(self, ref: str | int) -> dict:
        """Title, duration, pubdate and parts (cid, page, part, duration) of a BV/av id."""
        key = "bvid" if isinstance(ref, str) else "aid"
        resp = self.session.fetch(
            f"{self.api_base}/x/web-interface/view", params={key: ref}, headers=self._headers, check=_check_json
        )
        data = _payload(resp).get("data")
        if not isinstance(data, dict):
            raise FetchError(resp.url, f"view reply's 'data' is {_kind(data)}, not an object: {_NOT_BILI}")
        try:
            pages = data.get("pages") or [{"cid": data["cid"], "page": 1, "part": data.get("title"), "duration": data.get("duration")}]
            parts = [
                {"cid": int(p["cid"]), "page": int(p.get("page", i + 1)), "part": str(p.get("part") or ""), "duration": int(p.get("duration") or 0)}
                for i, p in enumerate(pages)
            ]
            info = {
                "bvid": str(data["bvid"]),
                "aid": int(data["aid"]),
                "title": str(data.get("title") or ""),
                "duration": int(data.get("duration") or 0),
                "pubdate": int(data.get("pubdate") or 0),
                "parts": parts,
            }
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise FetchError(resp.url, f"view reply lacks or garbles {type(exc).__name__}: {str(exc)[:120]} (needs bvid, aid, pages[].cid as numbers): {_NOT_BILI}") from None
        if not parts:
            raise FetchError(resp.url, f"view reply lists no parts: {_NOT_BILI}")
        return mask_obj(info)

    def segment_count(self, cid: int, aid: int, duration_s: int) -> int:
        """Segments per ``DmWebViewReply.dm_sge.total``, bounded by the duration and
        ``max_segments``; ``ceil(duration/360)`` if the reply fails or does not fit the duration.

        Raises FetchError when the duration or (without a duration) the total needs more than
        ``max_segments``: clamping would store a part of the video as if it were all of it.
        """
        by_duration = math.ceil(duration_s / SEGMENT_S) if duration_s > 0 else None
        if by_duration is not None and by_duration > self.max_segments:
            raise FetchError(f"cid {cid}", f"duration {duration_s} s needs {by_duration} segments, more than max_segments={self.max_segments}{_RAISE}")
        url = f"{self.api_base}/x/v2/dm/web/view"
        try:
            body = self.session.fetch(url, params={"type": 1, "oid": cid, "pid": aid}, headers=self._headers).content
            total = int(DmWebViewReply.FromString(body).dm_sge.total)
        except (FetchError, DecodeError) as exc:
            log.warning("cid %s: segment count unavailable (%s); using %d from the duration", cid, exc, by_duration or 1)
            return by_duration or 1
        # A total beyond the duration means a garbled reply; do not send hundreds of requests.
        if total < 1 or (by_duration is not None and total > 2 * by_duration + 1):
            log.warning("cid %s: dm_sge.total=%d does not fit %ds; using %d", cid, total, duration_s, by_duration or 1)
            return by_duration or 1
        if total > self.max_segments:
            raise FetchError(url, f"dm_sge.total={total} (no duration to check it against) is more than max_segments={self.max_segments}{_RAISE}")
        return total

    def fetch_segment(self, cid: int, segment_index: int) -> bytes:
        """The raw ``seg.so`` body for ``segment_index`` (from 1), checked to be a DmSegMobileReply."""
        return self.session.fetch(
            f"{self.api_base}/x/v2/dm/web/seg.so",
            params={"type": 1, "oid": cid, "segment_index": segment_index},
            headers=self._headers,
            check=_check_segment,
        ).content

    def fetch_xml(self, cid: int) -> bytes:
        """``{cid}.xml`` as XML bytes, inflated (within the size cap) where the server sent raw deflate."""
        url = f"{self.comment_base}/{cid}.xml"
        cap = self.session.max_bytes
        try:
            resp = self.session.fetch(url, headers=self._headers, check=lambda r: _xml_bytes(r, cap))
            return _xml_bytes(resp, cap)
        except LimitExceeded as exc:
            raise ResponseTooLarge(url, exc.reason) from None

    # -- one video into the lake ---------------------------------------------------------------
    def fetch(self, ref: str, dest_dir: str | Path, *, refresh: bool = False) -> FetchResult:
        """Fetch one part's comments into ``dest_dir``; raises FetchError/ValueError on failure.

        Without ``?p=`` the first part is taken; ``metadata['parts']`` lists them all.
        """
        folder = SourceFolder(dest_dir)
        if not refresh and (done := folder.completed()):
            return done
        vid, page = parse_bilibili_ref(ref)
        info = self.video_info(vid)
        part = _pick_part(info, page, ref)
        video_id = info["bvid"] if len(info["parts"]) == 1 else f"{info['bvid']}_p{part['page']}"
        metadata = {**info, "cid": part["cid"], "page": part["page"], "part": part["part"]}
        metadata["duration"] = part["duration"] or info["duration"]
        cid = part["cid"]
        names = [f"{cid}-{i}.pb" for i in range(self.segment_count(cid, info["aid"], metadata["duration"]))]
        folder.begin(reuse=not refresh)
        try:
            names, metadata["comment_source"], incomplete = self._fetch_files(folder, cid, names)
        except FetchError as exc:
            folder.record_failure(
                platform="bilibili", video_id=video_id, source=ref, expected=names, error=str(exc), metadata=metadata
            )
            raise
        metadata["files"] = len(names)
        return folder.commit(
            names, platform="bilibili", video_id=video_id, source=ref, metadata=metadata, incomplete=incomplete, validate=True
        )

    def _fetch_files(self, folder: SourceFolder, cid: int, names: list[str]) -> tuple[list[str], str, str | None]:
        """Every protobuf segment; the XML sample only if not a single segment could be had.

        Returns (names, comment source, why the result is incomplete or None).
        """
        for i, name in enumerate(names):
            if folder.is_staged(name):
                continue  # fetched by an earlier, interrupted run
            try:
                folder.stage(name, self.fetch_segment(cid, i + 1))
            except FetchError as exc:
                if any(folder.is_staged(n) for n in names):
                    raise  # partly fetched: keep what we have, the next run completes it
                log.warning("cid %s: protobuf segments failed (%s); falling back to %s.xml", cid, exc, cid)
                files = self._fetch_xml_fallback(folder, cid, exc)
                # A sample taken because of a passing failure must not stand in for the full
                # history for good: the next run tries the segments again.
                why = f"capped XML sample; protobuf segments failed for now: {exc.reason}" if exc.transient else None
                return files, "xml", why
        return names, "protobuf", None

    def _fetch_xml_fallback(self, folder: SourceFolder, cid: int, seg_error: FetchError) -> list[str]:
        try:
            data = self.fetch_xml(cid)
        except FetchError as exc:
            raise type(exc)(exc.url, f"{exc.reason}; protobuf segments also failed: {seg_error}", status=exc.status, attempts=exc.attempts) from None
        name = f"{cid}.xml"
        folder.stage(name, data)
        return [name]


def _pick_part(info: dict, page: int | None, ref: str) -> dict:
    parts = info["parts"]
    if page is None:
        return parts[0]
    for part in parts:
        if part["page"] == page:
            return part
    raise ValueError(f"{ref!r}: the video has {len(parts)} parts, no p={page}")


_NOT_BILI = "not a Bilibili API answer (check api_base and the video id; the API may have changed)"
_RAISE = "; raise crawler max_segments if the video really is that long"


def _kind(value: object) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _payload(resp: requests.Response) -> dict:
    """The reply as a JSON object with an integer ``code``; FetchError/RetryableError otherwise."""
    try:
        payload = resp.json()
    except RecursionError:
        raise FetchError(resp.url, f"reply JSON is nested too deeply: {_NOT_BILI}") from None
    except ValueError:
        raise RetryableError(f"reply is not JSON ({resp.headers.get('Content-Type')})") from None
    if not isinstance(payload, dict):
        raise FetchError(resp.url, f"reply is {_kind(payload)}, not a JSON object: {_NOT_BILI}")
    code = payload.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise FetchError(resp.url, f"reply's 'code' is {_kind(code)}, not a number: {_NOT_BILI}")
    return payload


def _json_error(resp: requests.Response) -> None:
    """Raise for a Bilibili JSON error body ``{"code": <nonzero>, "message": …}``."""
    payload = _payload(resp)
    code = payload["code"]
    if code == 0:
        return
    reason = f"Bilibili code {code}: {str(payload.get('message', ''))[:200]}"
    if code in RETRY_CODES:
        raise RetryableError(reason)
    raise FetchError(resp.url, reason)


def _check_json(resp: requests.Response) -> None:
    _json_error(resp)


def _check_segment(resp: requests.Response) -> None:
    """A seg.so body is protobuf; an error comes back as JSON with a code."""
    ctype = resp.headers.get("Content-Type", "")
    if "json" in ctype or resp.content[:1] == b"{":
        _json_error(resp)
        raise FetchError(resp.url, "segment reply is JSON, not protobuf")
    try:
        DmSegMobileReply.FromString(resp.content)
    except DecodeError:
        raise RetryableError(f"segment reply is not a DmSegMobileReply ({len(resp.content)} bytes)") from None


def _xml_bytes(resp: requests.Response, max_bytes: int) -> bytes:
    """The XML endpoint sends raw deflate (no zlib header); the session inflates it when the
    server says ``Content-Encoding: deflate``, and this inflates it (within ``max_bytes``) when
    the header is missing."""
    body = resp.content
    if body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
        return body
    for wbits in (-zlib.MAX_WBITS, zlib.MAX_WBITS, zlib.MAX_WBITS | 32):  # raw, zlib, gzip
        try:
            inflated = inflate(body, wbits, max_bytes)
        except zlib.error:
            continue
        if inflated.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
            return inflated
    raise RetryableError(f"reply is neither XML nor deflated XML ({len(body)} bytes)")


__all__ = ["BilibiliClient", "MAX_SEGMENTS", "parse_bilibili_ref", "SEGMENT_S"]
