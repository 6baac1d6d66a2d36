"""The one file name of an id: the rule the lake and the training-shard layout share.

A video id from the web may hold any character; ``safe_name`` maps it to a file name that is
the id itself when it is already plain, else a readable stand-in with a hash. The pipeline
(``lcaffect_pipeline.lake``) names every lake file with it, and the shard layout
(``lcaffect_ml.contracts.shards``) names each video's folder, shards and WebDataset keys with it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_UNSAFE = {True: re.compile(r"[^A-Za-z0-9._-]+"), False: re.compile(r"[^A-Za-z0-9_-]+")}
_PLAIN = {True: re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*"), False: re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")}
_EXT = re.compile(r"(\.[A-Za-z0-9]{1,10}){0,2}")
HASH_LEN = 16
_HASHED = re.compile(rf".*-[0-9a-f]{{{HASH_LEN}}}")
MAX_STEM = 100  # leaves room for an extension (".info.json") under MAX_NAME
MAX_NAME = 120


def safe_name(raw: str, ext: str = "", *, dots: bool = True) -> str:
    """The one file name of an id (a video id from the web, a catalogue entry), plus ``ext``.

    An id that is already a plain name is kept as it is: ``[A-Za-z0-9._-]`` starting with a
    letter, digit or ``_``, at most ``MAX_STEM`` characters, not a Windows reserved name, and
    not ending like a hashed name. Any other id becomes a readable, NFKC-folded stand-in
    followed by ``-`` and 16 hex digits of the SHA-1 of the original. So the rule is
    injective: a hashed name always ends in ``-<16 hex>`` and a kept name never does, kept
    names are the ids themselves, and hashed names differ with their hashes. The extension
    comes last (``弹幕测试`` + ``.parquet`` -> ``_-<hash>.parquet``), so a glob on ``*.parquet``
    finds every file. ``dots=False`` also treats ``.`` as unsafe (WebDataset keys split there).
    """
    raw = str(raw)
    if not _EXT.fullmatch(ext):
        raise ValueError(f"not a file extension: {ext!r}")
    if not _is_plain(raw, dots):
        digest = hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LEN]
        stem = _UNSAFE[dots].sub("_", unicodedata.normalize("NFKC", raw)).strip("._-") or "_"
        stem = stem[: MAX_STEM - HASH_LEN - 1]
        if _reserved(stem):
            stem = "_" + stem
        raw = f"{stem}-{digest}"
    return raw + ext


def _is_plain(raw: str, dots: bool) -> bool:
    return (len(raw) <= MAX_STEM and _PLAIN[dots].fullmatch(raw) is not None
            and not _HASHED.fullmatch(raw) and not _reserved(raw))


def _reserved(name: str) -> bool:
    return name.split(".")[0].lower() in _WINDOWS_RESERVED
