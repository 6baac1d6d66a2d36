"""A loopback HTTP server for tests: serves fixed content and injects network faults.

Reusable for anything that fetches over HTTP (comment crawlers, video downloads, yt-dlp)::

    from fault_server import FaultServer, Fault, Response   # tests/ is on sys.path under pytest

    with FaultServer({"/clip.mp4": Path("video.mp4"), "/a.json": b"{}"}) as srv:
        srv.plan("/clip.mp4", ["429", "reset", "stall", "truncate"])  # then serves normally
        srv.plan("/a.json", [], then="500")                            # always 500
        url = srv.url("/clip.mp4")
        ...
        assert srv.count("/clip.mp4") == 5
        srv.requests[0].headers["user-agent"]

Routes
    Keys are URL paths, optionally with a query string (``"/seg.so?oid=1&segment_index=2"``).
    A request matches the key with its exact query first (parameters compared sorted, so their
    order does not matter), then the bare path. Values may be ``bytes``, ``str`` (UTF-8), a
    ``pathlib.Path`` (read at request time), a ``Response`` (status, headers, body) or a callable
    ``f(RecordedRequest) -> Response | bytes``. ``root=`` also serves a folder's files by path.
    ``GET`` and ``HEAD`` are served; a single ``Range: bytes=a-b`` is answered with 206 (video
    downloaders resume with it). Unknown paths get 404.

Faults (``plan(key, faults, then=None)``): the next requests to ``key`` (same matching rule)
    take the faults in order; once used up, ``then`` applies to every later request (``None``:
    serve normally). A fault is a ``Fault`` or a string:

    ``"429"``, ``"412"``, ``"500"``, any 3-digit status
        answer with that status (``Fault.status(429, retry_after=2)`` adds Retry-After)
    ``"reset"``
        read the request, then close the socket with SO_LINGER 0: the client sees a TCP reset
    ``"stall"``
        send nothing for ``stall_s`` seconds (longer than the client's timeout), then close;
        closing the server wakes stalled handlers, so tests never wait for the stall to end
    ``"truncate"``
        send the headers with the full Content-Length but only half the body, then close
    ``"ok"``
        serve normally (useful in the middle of a plan)
    ``"trickle"``
        send headers with a huge Content-Length (``Fault.trickle(declared=, every_s=)``), then
        one byte every ``every_s`` until the client gives up or the server closes
    ``"trickle_headers"``
        send the status line, then one header byte every ``every_s``, never ending the headers

A ``Response(..., send_length=False)`` goes without Content-Length and ends by closing the
connection (a body whose size the client learns only by reading it).

Every request is recorded (``srv.requests``): method, path, query, headers (lower-case names),
``time`` (``time.monotonic()`` when it arrived) and the fault applied, so tests can count
requests, check headers such as Cookie or Range, and measure spacing.
"""

from __future__ import annotations

import mimetypes
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable, Mapping, Union
from urllib.parse import parse_qsl, urlencode, urlsplit


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True


@dataclass(frozen=True)
class Fault:
    kind: str  # "status", "reset", "stall", "truncate", "ok", "trickle", "trickle_headers"
    status: int = 200
    retry_after: float | None = None
    declared: int = 2_000_000_000  # trickle: the Content-Length announced
    every_s: float = 0.5  # trickle: seconds between bytes

    @classmethod
    def parse(cls, spec: Union["Fault", str, int]) -> "Fault":
        if isinstance(spec, Fault):
            return spec
        spec = str(spec).strip().lower()
        if re.fullmatch(r"\d{3}", spec):
            return cls("status", status=int(spec))
        if spec in ("reset", "stall", "truncate", "ok", "trickle", "trickle_headers"):
            return cls(spec)
        raise ValueError(f"unknown fault {spec!r}: use a 3-digit status, reset, stall, truncate, trickle or ok")

    @classmethod
    def trickle(cls, declared: int = 2_000_000_000, every_s: float = 0.5, headers: bool = False) -> "Fault":
        return cls("trickle_headers" if headers else "trickle", declared=declared, every_s=every_s)

    @classmethod
    def with_status(cls, code: int, retry_after: float | None = None) -> "Fault":
        return cls("status", status=code, retry_after=retry_after)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    time: float
    fault: str | None = None

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))


Route = Union[bytes, str, Path, Response, Callable[[RecordedRequest], Union[Response, bytes]]]


def _normal_key(key: str) -> str:
    """``path?query`` with the query parameters sorted (their order never matters)."""
    split = urlsplit(key)
    query = urlencode(sorted(parse_qsl(split.query, keep_blank_values=True)))
    return f"{split.path}?{query}" if query else split.path


class FaultServer:
    def __init__(
        self,
        routes: Mapping[str, Route] | None = None,
        *,
        root: str | Path | None = None,
        stall_s: float = 10.0,
        host: str = "127.0.0.1",
    ):
        self.routes: dict[str, Route] = {_normal_key(k): v for k, v in (routes or {}).items()}
        self.root = Path(root).resolve() if root is not None else None
        self.stall_s = stall_s
        self.requests: list[RecordedRequest] = []
        self._plans: dict[str, tuple[list[Fault], Fault | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _QuietServer((host, 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "FaultServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()  # wakes stalled handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- configuration -------------------------------------------------------------------------
    def add(self, key: str, route: Route) -> None:
        with self._lock:
            self.routes[_normal_key(key)] = route

    def plan(self, key: str, faults: Iterable[Fault | str | int], *, then: Fault | str | int | None = None) -> None:
        """The next requests to ``key`` take ``faults`` in order; afterwards ``then`` (or serve)."""
        plan = [Fault.parse(f) for f in faults]
        with self._lock:
            self._plans[_normal_key(key)] = (plan, Fault.parse(then) if then is not None else None)

    # -- inspection ----------------------------------------------------------------------------
    def requests_for(self, key: str) -> list[RecordedRequest]:
        """Requests that match ``key``: its path, and its query parameters if it names any."""
        want = urlsplit(key)
        params = dict(parse_qsl(want.query, keep_blank_values=True))
        with self._lock:
            seen = list(self.requests)
        return [r for r in seen if r.path == want.path and all(r.params.get(k) == v for k, v in params.items())]

    def count(self, key: str) -> int:
        return len(self.requests_for(key))

    # -- serving -------------------------------------------------------------------------------
    def _lookup(self, table: Mapping[str, object], path: str, query: str) -> tuple[str | None, object]:
        for key in (_normal_key(f"{path}?{query}"), path):
            if key in table:
                return key, table[key]
        return None, None

    def _next_fault(self, path: str, query: str) -> Fault | None:
        with self._lock:
            key, plan = self._lookup(self._plans, path, query)
            if key is None:
                return None
            pending, then = plan  # type: ignore[misc]
            return pending.pop(0) if pending else then

    def _resolve(self, rec: RecordedRequest) -> Response:
        with self._lock:
            _, route = self._lookup(self.routes, rec.path, rec.query)
        if route is None and self.root is not None:
            candidate = (self.root / rec.path.lstrip("/")).resolve()
            if candidate.is_file() and self.root in candidate.parents:
                route = candidate
        if route is None:
            return Response(b"not found", 404, {"Content-Type": "text/plain"})
        if callable(route) and not isinstance(route, (bytes, str, Path, Response)):
            route = route(rec)
        if isinstance(route, Response):
            return route
        if isinstance(route, Path):
            ctype = mimetypes.guess_type(route.name)[0] or "application/octet-stream"
            return Response(route.read_bytes(), 200, {"Content-Type": ctype})
        if isinstance(route, str):
            return Response(route.encode("utf-8"), 200, {"Content-Type": "text/html; charset=utf-8"})
        return Response(bytes(route), 200, {"Content-Type": "application/octet-stream"})

    def handle(self, handler: "_Handler") -> None:
        split = urlsplit(handler.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        rec = RecordedRequest(handler.command, split.path, split.query, headers, time.monotonic())
        fault = self._next_fault(split.path, split.query)
        rec.fault = None if fault is None else (str(fault.status) if fault.kind == "status" else fault.kind)
        with self._lock:
            self.requests.append(rec)
        head = handler.command == "HEAD"
        if fault is None or fault.kind == "ok":
            self._send(handler, self._ranged(self._resolve(rec), headers.get("range")), head)
        elif fault.kind == "status":
            extra = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
            self._send(handler, Response(f"fault {fault.status}".encode(), fault.status, extra), head)
        elif fault.kind == "reset":
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.close_connection = True
            handler.connection.close()  # real close (an RST) happens once the handler lets go
        elif fault.kind == "stall":
            self._stop.wait(self.stall_s)
            handler.close_connection = True
        elif fault.kind in ("trickle", "trickle_headers"):
            self._trickle(handler, fault)
        elif fault.kind == "truncate":
            resp = self._resolve(rec)
            keep = max(0, min(len(resp.body) - 1, len(resp.body) // 2))
            self._send(handler, resp, head, send_bytes=keep)
            handler.close_connection = True

    def _trickle(self, handler: "_Handler", fault: Fault) -> None:
        """One byte every ``fault.every_s`` until the client leaves or the server closes."""
        handler.close_connection = True
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
            if fault.kind == "trickle":
                handler.wfile.write(f"Content-Length: {fault.declared}\r\nContent-Type: text/xml\r\n\r\n".encode())
            handler.wfile.flush()
            for _ in range(fault.declared):
                if self._stop.wait(fault.every_s):
                    return
                handler.wfile.write(b"X" if fault.kind == "trickle_headers" else b"<")
                handler.wfile.flush()
        except OSError:
            return  # the client gave up: what a deadline is for

    @staticmethod
    def _ranged(resp: Response, range_header: str | None) -> Response:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (range_header or "").strip())
        if resp.status != 200 or not match or match.groups() == ("", ""):
            return resp
        size = len(resp.body)
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(size - 1, int(last) if last else size - 1)
        if start >= size or start > end:
            return Response(b"", 416, {"Content-Range": f"bytes */{size}"})
        headers = dict(resp.headers, **{"Content-Range": f"bytes {start}-{end}/{size}"})
        return Response(resp.body[start : end + 1], 206, headers)

    @staticmethod
    def _send(handler: "_Handler", resp: Response, head: bool, send_bytes: int | None = None) -> None:
        try:
            handler.send_response(resp.status)
            names = {k.lower() for k in resp.headers}
            for name, value in resp.headers.items():
                handler.send_header(name, value)
            if "content-type" not in names:
                handler.send_header("Content-Type", "application/octet-stream")
            if "accept-ranges" not in names:
                handler.send_header("Accept-Ranges", "bytes")
            if resp.send_length:
                handler.send_header("Content-Length", str(len(resp.body)))
            else:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()
            if not head:
                handler.wfile.write(resp.body if send_bytes is None else resp.body[:send_bytes])
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True  # the client gave up (its timeout); nothing to do


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # a client that hung up is no error


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers and pooled clients use

    def do_GET(self) -> None:
        self.server.owner.handle(self)  # type: ignore[attr-defined]

    do_HEAD = do_GET

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the socket was reset or closed on purpose

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass
