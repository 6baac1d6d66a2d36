"""Content hashes: one convention for the pipeline and the training programs.

A file's identity is the SHA-256 of its bytes, 64 hex digits (``sha256_file``): the data version
of a checkpoint reported through Dagster Pipes, the ``sha256`` of a shard in ``index.json``. Where
the pipeline stores a shorter identity (a cleaned table's ``file_hash``, a clip's fingerprint,
the data versions of the corpus assets) it is the first 32 hex digits of the same digest
(``short_hash``), so a short value is always a prefix of the full one and existing lakes keep
their values.
"""

from __future__ import annotations

import hashlib
import os
from typing import IO, Any

SHORT_LEN = 32
CHUNK = 1 << 20


def sha256_stream(fh: IO[bytes], chunk: int = CHUNK) -> str:
    """SHA-256 (64 hex) of everything left in a binary file object, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    while block := fh.read(chunk):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike | Any, chunk: int = CHUNK) -> str:
    """SHA-256 (64 hex) of a file. ``path`` may be anything with ``.open("rb")`` (a
    ``universal_pathlib`` path on an object store), else it is opened as a local path."""
    opener = getattr(path, "open", None)
    with (opener("rb") if callable(opener) else open(path, "rb")) as fh:
        return sha256_stream(fh, chunk)


def short_hash(digest: str) -> str:
    """The short (32 hex) form of a 64-hex digest, as the lake stores it."""
    return digest[:SHORT_LEN]


def file_hash(path: str | os.PathLike | Any) -> str:
    """The lake's short content hash of a file: ``short_hash(sha256_file(path))``."""
    return short_hash(sha256_file(path))


def sha256_bytes(data: bytes) -> str:
    """SHA-256 (64 hex) of bytes already in memory (a shard, a report payload)."""
    return hashlib.sha256(data).hexdigest()
