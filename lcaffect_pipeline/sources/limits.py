"""What the crawler bounds when it talks to a server: bytes, time and pace.

- ``read_body``: a response body read in chunks and inflated here (gzip, zlib or raw deflate),
  refusing more than ``max_bytes`` on the wire or after decompression. zlib's ``max_length``
  never lets one chunk inflate past the cap, so a 1 MiB body that would inflate to 1 GiB costs
  about the cap in memory, not the gigabyte. ``inflate`` does the same for a whole body.
- ``Deadline``: a total time limit for one request. Per-read timeouts never stop a server that
  sends one byte every half second; when the deadline passes, a timer shuts down the request's
  socket, whatever phase (connecting, headers, body) the request is in. The clock starts with
  the first connection, so waiting for the host's slot does not eat into it. ``DeadlineAdapter``
  gives requests' connections the hook that tells the timer which socket that is.
- ``HostSlots``: start-to-start spacing of requests to one host, booked under a lock file per
  host, so every thread and every process that uses the same folder (the parallel chunk steps
  of a run) shares one pace.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlsplit

from filelock import FileLock
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

CHUNK = 64 * 1024
MiB = 1024 * 1024


class LimitExceeded(Exception):
    """A reply larger than the configured cap (not worth retrying: it would be as large again)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DeadlinePassed(Exception):
    def __init__(self, seconds: float):
        super().__init__(f"no complete answer within the {seconds:g} s deadline")
        self.reason = str(self)


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


def _too_large(max_bytes: int, where: str) -> LimitExceeded:
    return LimitExceeded(
        f"reply exceeds the {_size(max_bytes)} cap {where} (raise crawler max_response_bytes if it is genuine)"
    )


# -- sizes ----------------------------------------------------------------------------------
class BoundedInflater:
    """Content-Encoding ``gzip``/``deflate`` (zlib or raw) or identity, at most ``max_bytes`` out."""

    def __init__(self, encoding: str, max_bytes: int):
        enc = (encoding or "identity").strip().lower()
        wbits = {"identity": None, "gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
        if enc not in wbits:
            raise LimitExceeded(f"Content-Encoding {encoding!r} is not supported (gzip, deflate or none)")
        self.wbits, self.max_bytes, self.size = wbits[enc], max_bytes, 0
        self._d = zlib.decompressobj(self.wbits) if self.wbits else None
        self._fed = False

    def feed(self, data: bytes) -> bytes:
        if self._d is None:
            return self._count(data, "")
        first, self._fed = not self._fed, True
        try:
            out = self._d.decompress(data, self.max_bytes - self.size + 1)
        except zlib.error:
            if not (first and self.wbits == zlib.MAX_WBITS):
                raise
            # "deflate" is often sent raw, without the zlib header (as Bilibili's XML is).
            self.wbits, self._d = -zlib.MAX_WBITS, zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._d.decompress(data, self.max_bytes - self.size + 1)
        out = self._count(out, "after decompression")
        while self._d.eof and self._d.unused_data.strip(b"\0"):  # a further gzip member
            rest, self._d = self._d.unused_data, zlib.decompressobj(self.wbits)
            out += self._count(self._d.decompress(rest, self.max_bytes - self.size + 1), "after decompression")
        return out

    def finish(self) -> bytes:
        if self._d is None:
            return b""
        out = self._count(self._d.flush(), "after decompression")
        if self._fed and not self._d.eof:
            raise zlib.error("compressed body ends before its end marker")
        return out

    def _count(self, out: bytes, where: str) -> bytes:
        self.size += len(out)
        if self.size > self.max_bytes:
            raise _too_large(self.max_bytes, where or "on the wire")
        return out


def inflate(data: bytes, wbits: int, max_bytes: int) -> bytes:
    """``zlib.decompress(data, wbits)`` that refuses more than ``max_bytes`` of output."""
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, max_bytes + 1)
    if len(out) > max_bytes:
        raise _too_large(max_bytes, "after decompression")
    if not d.eof:
        raise zlib.error("compressed data ends before its end marker")
    return out


def read_body(chunks: Iterable[bytes], *, encoding: str, declared: str | None, max_bytes: int, deadline: "Deadline | None" = None) -> tuple[bytes, int]:
    """(decoded body, bytes on the wire) from raw ``chunks``, within ``max_bytes`` both ways."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes, f"(Content-Length {declared})")
    inflater = BoundedInflater(encoding, max_bytes)
    body, wire = bytearray(), 0
    for chunk in chunks:
        wire += len(chunk)
        if wire > max_bytes:
            raise _too_large(max_bytes, "on the wire")
        body += inflater.feed(chunk)
        if deadline is not None:
            deadline.check()
    body += inflater.finish()
    return bytes(body), wire


# -- time -----------------------------------------------------------------------------------
_current = threading.local()


class Deadline:
    """``with Deadline(s):`` shuts down the socket of any request made inside after ``s`` seconds."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.expired = False
        self._conns: list = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "Deadline":
        self._outer = getattr(_current, "deadline", None)
        _current.deadline = self
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _current.deadline = self._outer

    def watch(self, conn) -> None:
        with self._lock:
            if not self._conns:
                self._timer.start()  # the clock runs from the first connection
            self._conns.append(conn)
            expired = self.expired
        if expired:
            _shut(conn)

    def check(self) -> None:
        if self.expired:
            raise DeadlinePassed(self.seconds)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            conns = list(self._conns)
        for conn in conns:
            _shut(conn)


def _shut(conn) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read, unlike close()
        except OSError:
            pass


class _Watched:
    """Tells the thread's current ``Deadline`` which connection (socket) a request uses."""

    def _watch(self) -> None:
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(self)

    def connect(self):
        self._watch()
        return super().connect()  # type: ignore[misc]

    def request(self, *args, **kwargs):
        self._watch()
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections a ``Deadline`` can cut (mounted by ``PoliteSession``)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


# -- pace -----------------------------------------------------------------------------------
STALE_S = 3600.0  # a booking further ahead than this comes from a clock set back, not a queue


class HostSlots:
    """Start-to-start spacing of ``min_interval_s`` per host, shared through ``folder``.

    Each host has a small file holding the next free start time (wall clock: shared by
    processes), read and advanced under its lock file. The default folder is one per machine
    in the temporary directory; point ``folder`` at a shared one to pace several machines.
    """

    def __init__(self, min_interval_s: float, folder: str | Path | None = None, sleep: Callable[[float], None] = time.sleep):
        self.min_interval_s = float(min_interval_s)
        self.folder = Path(folder) if folder else Path(tempfile.gettempdir()) / f"lcaffect-host-slots-{getattr(os, 'getuid', lambda: 'user')()}"
        self._sleep = sleep

    def wait(self, url: str) -> None:
        if self.min_interval_s > 0:
            delay = self.reserve(urlsplit(url).netloc.lower())
            if delay > 0:
                self._sleep(delay)

    def reserve(self, host: str) -> float:
        """Book the host's next slot; returns the seconds to wait for it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        slot = self.folder / (hashlib.sha256(host.encode()).hexdigest()[:24] + ".next")
        with FileLock(str(slot) + ".lock"):
            now = time.time()
            try:
                booked = float(slot.read_text())
            except (OSError, ValueError):
                booked = 0.0
            if booked > now + STALE_S:
                booked = 0.0
            start = max(now, booked)
            slot.write_text(repr(start + self.min_interval_s))
        return start - now


__all__ = ["BoundedInflater", "Deadline", "DeadlineAdapter", "DeadlinePassed", "HostSlots", "LimitExceeded", "inflate", "read_body"]
