"""Helpers for tests that put the lake on the real object store (scripts/s3_server.sh): the
server's variables in this process, a TCP proxy in front of it that can refuse connections for
a while (a store restarting), and listings of a lake prefix."""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from urllib.parse import urlparse

from services import require_module, running

TEMP_MARKS = (".tmp", ".staging", ".download-")


@contextmanager
def s3_env(env: dict[str, str], endpoint: str | None = None):
    """The server's AWS_* variables in os.environ (the lake's s3fs reads them), and s3fs's cache
    of file systems emptied on both sides (a cached one keeps its old endpoint)."""
    s3fs = require_module("s3fs")
    settings = {k: v for k, v in env.items() if k.startswith("AWS_")}
    if endpoint:
        settings["AWS_ENDPOINT_URL_S3"] = endpoint
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield s3fs.S3FileSystem(endpoint_url=settings["AWS_ENDPOINT_URL_S3"], skip_instance_cache=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()


@contextmanager
def s3_server():
    """scripts/s3_server.sh for the block: yields its variables."""
    require_module("s3fs")
    with running("s3_server.sh") as env:
        yield env


def listing(fs, prefix: str, *, skip: tuple[str, ...] = ("_dagster_io/",)) -> dict[str, int]:
    """{key relative to the prefix: size} of every object under ``prefix`` (run-scoped step
    outputs left out: their keys name the run)."""
    out = {}
    for key, info in fs.find(prefix, detail=True).items():
        rel = key[len(prefix.rstrip("/")) + 1:]
        if not rel.startswith(skip):
            out[rel] = info["size"]
    return out


def temporaries(keys) -> list[str]:
    return [k for k in keys if any(m in part for part in k.split("/") for m in TEMP_MARKS)]


class RefusingProxy:
    """A TCP proxy on 127.0.0.1 to ``target`` (host:port). ``refuse()`` closes its port and every
    open connection, so clients get "connection refused" as from a stopped server; ``serve()``
    opens the same port again."""

    def __init__(self, target_url: str):
        url = urlparse(target_url)
        self.target = (url.hostname, url.port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refused_while = threading.Event()
        self.serve()

    def serve(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def refuse(self) -> None:
        with self._lock:
            if self._listener is not None:
                _close(self._listener)  # shutdown first: a close alone leaves a blocked accept() listening
                self._listener = None
            for conn in list(self._conns):
                _close(conn)
            self._conns.clear()

    def close(self) -> None:
        self.refuse()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)
                with self._lock:
                    self._conns.discard(s)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
