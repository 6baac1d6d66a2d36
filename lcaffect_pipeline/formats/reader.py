"""Format detection from content, one entry point for every comment file, deduplication.

The format is recognised from the bytes, never the extension: ``<`` starts XML (its root
element, ``<i>`` or ``<packet>``, says whose), ``[`` a JSON array (its first record says whose),
``{`` JSON lines (YouTube live chat), anything else is tried as a Bilibili protobuf segment.
A Bilibili segment starts with byte 0x0A (a newline); the text patterns below also ask for the
character after the opening one, which a protobuf length byte followed by a field tag never
provides, so segments are not mistaken for text. UTF-16/32 text (a byte-order mark, or XML whose
``<`` comes with NUL bytes) is decoded before these patterns, so UTF-16 XML is read as XML.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lcaffect_pipeline.schema import COMMENTS_SCHEMA, PLATFORMS
from lcaffect_pipeline.schema import author_salt as author_salt_of

from . import acfun, bilibili, niconico, youtube
from ._common import CommentFormatError, ParseContext, hash_authors, separate_viewers
from ._xml import XML_ERRORS, xml_root_tag

FORMAT_PLATFORM = {
    "bilibili_xml": "bilibili",
    "bilibili_protobuf": "bilibili",
    "niconico_xml": "niconico",
    "niconico_legacy_json": "niconico",
    "niconico_comments_json": "niconico",
    "youtube_live_chat": "youtube",
    "acfun_json": "acfun",
}
FORMATS = tuple(FORMAT_PLATFORM)
_XML_ROOTS = {"i": "bilibili_xml", "packet": "niconico_xml"}
_NICONICO_LEGACY_KEYS = {"ping", "thread", "chat", "leaf", "global_num_res", "view_counter"}
_SEGMENT_NAME = re.compile(r"(\.pb|\.so)$|^seg", re.IGNORECASE)
_KNOWN_SUFFIXES = (".live_chat.json", ".comments.json", ".danmaku.xml", ".xml", ".json", ".pb", ".so")
_XML_START = re.compile(rb"<[?!A-Za-z_]")
_ARRAY_START = re.compile(rb"\[\s*[\[{\]]")
_OBJECT_START = re.compile(rb'\{\s*["}]')
_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
              (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
HEAD_BYTES = 1 << 16

META_SKIPPED = b"lcaffect.skipped"
META_DUPLICATES = b"lcaffect.duplicates"
META_FORMATS = b"lcaffect.formats"
META_XML_ERRORS = b"lcaffect.xml_errors"

# Exceptions a parser may raise on malformed content that per-row handling did not absorb;
# they become CommentFormatError so callers only ever catch one type.
_CONTENT_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
                   OverflowError, UnicodeError, pa.ArrowException, *XML_ERRORS)


# ---------------------------------------------------------------------------------- detection


def _open(path: Path) -> BinaryIO:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CommentFormatError(path, f"cannot read the file: {exc.strerror or exc}") from None
    return fh


def _sniff(path: Path, fh: BinaryIO) -> tuple[str, object]:
    """(format, parsed JSON array or None): JSON arrays are parsed once, here."""
    try:
        head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise CommentFormatError(path, f"cannot read the file: {exc}") from None
    if not head:
        raise CommentFormatError(path, "empty file")
    wide = _wide_text(head)
    text = wide if wide is not None else (head[len(_BOM):] if head.startswith(_BOM) else head)
    text = text.lstrip(b" \t\r\n")
    if wide is not None and not _XML_START.match(text):
        raise CommentFormatError(path, "UTF-16/32 text that is not XML (only XML comment files may be UTF-16/32)")
    if _XML_START.match(text):
        root = xml_root_tag(path, fh)
        if root not in _XML_ROOTS:
            raise CommentFormatError(path, f"XML with root <{root}> is not a known comment format")
        return _XML_ROOTS[root], None
    if _ARRAY_START.match(text):
        items = _load_json(path, fh)
        return _json_array_format(path, items), items
    if _OBJECT_START.match(text):
        return "youtube_live_chat", None
    return "bilibili_protobuf", None


def _wide_text(head: bytes) -> bytes | None:
    """The head of a UTF-16/32 file as UTF-8 (the XML parser reads the file itself), or None.

    Without this, the NUL bytes of ``<\x00?\x00x\x00m\x00l\x00`` fail every text pattern and
    the file is tried, and rejected, as protobuf. Without a byte-order mark, the file counts as
    UTF-16 only if it then starts like XML (a protobuf segment starts with 0x0A).
    """
    for bom, enc in _WIDE_BOMS:
        if head.startswith(bom):
            return head[len(bom):].decode(enc, "ignore").encode("utf-8")
    if b"\x00" in head[:4]:
        for enc in ("utf-16-le", "utf-16-be"):
            text = head.decode(enc, "ignore").lstrip().encode("utf-8", "ignore")
            if _XML_START.match(text):
                return text
    return None


def _load_json(path: Path, fh: BinaryIO) -> object:
    # JSON arrays (AcFun, Niconico) are loaded whole: they are small next to Bilibili XML and
    # YouTube chat, which stream.
    fh.seek(0)
    try:
        return json.loads(fh.read().decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CommentFormatError(path, f"not valid JSON: {exc}") from None


def _json_array_format(path: Path, items: object) -> str:
    if not isinstance(items, list):
        raise CommentFormatError(path, "JSON is not a list of comments")
    first = next((item for item in items if isinstance(item, dict)), None)
    if first is None and any(isinstance(item, list) for item in items):
        inner = acfun.flatten(items)
        first = inner[0] if inner and acfun.is_acfun_item(inner[0]) else None
    if first is None:
        if not items and path.name.lower().endswith(".comments.json"):
            return "niconico_comments_json"  # yt-dlp wrote a video without comments
        raise CommentFormatError(path, "JSON array without comment records")
    if acfun.is_acfun_item(first):
        return "acfun_json"
    if len(first) == 1 and next(iter(first)) in _NICONICO_LEGACY_KEYS:
        return "niconico_legacy_json"
    if "vposMs" in first or ("body" in first and "no" in first):
        return "niconico_comments_json"
    raise CommentFormatError(path, f"JSON records with keys {sorted(first)[:8]} are not a known comment format")


def detect_format(path: str | os.PathLike) -> str:
    """The format of a comment file, from its content: one of ``FORMATS``.

    Raises ``CommentFormatError`` for an unreadable, empty or unknown file. A binary file is
    reported as ``bilibili_protobuf`` only if it decodes as a segment.
    """
    path = Path(path)
    with _open(path) as fh:
        fmt, _items = _sniff(path, fh)
        if fmt == "bilibili_protobuf":
            fh.seek(0)
            ctx = ParseContext(path, "bilibili", "", str(path))
            bilibili.decode_segment(ctx, _read_all(path, fh))
        return fmt


def _read_all(path: Path, fh: BinaryIO) -> bytes:
    try:
        return fh.read()
    except OSError as exc:
        raise CommentFormatError(path, f"cannot read the file: {exc}") from None


# ---------------------------------------------------------------------------------- video ids


def video_id_from_path(path: str | os.PathLike) -> str:
    """The video id a file name implies.

    ``{cid}.xml`` and ``{cid}-{i}.pb`` give the Bilibili cid, ``sm9_legacy.json`` the Niconico
    id, yt-dlp's ``{id}.live_chat.json`` / ``{id}.comments.json`` / ``{id}.danmaku.xml`` (and its
    default ``Title [id].ext``) the id; otherwise the name without its suffix.
    """
    name = Path(path).name
    lowered = name.lower()
    stem = next((name[: -len(s)] for s in _KNOWN_SUFFIXES if lowered.endswith(s)), Path(name).stem)
    for pattern in (r"\[([^\[\]]+)\]$", r"^(\d+)-\d+$", r"^((?:sm|nm|so)\d+)"):
        match = re.search(pattern, stem)
        if match:
            return match.group(1)
    return stem or name


def _segment_files(folder: Path) -> list[Path]:
    try:
        files = [p for p in folder.iterdir() if p.is_file() and _SEGMENT_NAME.search(p.name)]
    except OSError as exc:
        raise CommentFormatError(folder, f"cannot list the folder: {exc}") from None
    if not files:
        raise CommentFormatError(folder, "no protobuf segment files (*.pb, *.so, seg*) in the folder")
    return sorted(files, key=_natural_key)


def _natural_key(path: Path) -> list:
    """Sort ``x-2.pb`` before ``x-10.pb``, so the first copy kept on dedup is the earlier segment."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _folder_video_id(folder: Path, files: Sequence[Path]) -> str:
    ids = {video_id_from_path(f) for f in files}
    if len(ids) == 1 and re.fullmatch(r"\d+", next(iter(ids))):
        return ids.pop()
    return folder.name


# ---------------------------------------------------------------------------------- parsing


def parse_file(
    path: str | os.PathLike,
    *,
    platform: str | None = None,
    video_id: str | None = None,
    author_salt: str | None = None,
    strict: bool = False,
) -> pa.Table:
    """One comment file as a ``COMMENTS_SCHEMA`` table, deduplicated by comment id.

    ``strict=True`` also refuses a file with skipped elements or an XML syntax error part-way
    (by default those give the comments that parsed, with counts in the schema metadata).
    """
    _check_platform(platform)
    salt = author_salt_of(author_salt)
    return _combine([_parse_one(Path(path), platform, video_id, strict)], salt)


def _parse_one(path: Path, platform: str | None, video_id: str | None, strict: bool, in_segment_set: bool = False):
    """(table, context) for one file, not yet deduplicated, raw user ids still in ``author``.

    ``in_segment_set``: the file is one of several read together; there a 0-byte segment file
    is an empty ``DmSegMobileReply`` (a window without comments), not an error.
    """
    with _open(path) as fh:
        if in_segment_set and _SEGMENT_NAME.search(path.name) and not fh.read(1):
            fmt, items = "bilibili_protobuf", None
        else:
            fh.seek(0)
            fmt, items = _sniff(path, fh)
        ctx = ParseContext(
            path=path,
            platform=platform or FORMAT_PLATFORM[fmt],
            video_id=str(video_id) if video_id is not None else video_id_from_path(path),
            source_file=str(path),
        )
        ctx.notes["format"] = fmt
        try:
            batches = _parse(fmt, ctx, fh, items)
        except CommentFormatError:
            raise
        except _CONTENT_ERRORS as exc:
            raise CommentFormatError(path, f"malformed {fmt} content: {type(exc).__name__}: {exc}") from None
    if strict and (ctx.skipped or "xml_error" in ctx.notes):
        detail = ctx.notes.get("xml_error") or f"{ctx.skipped} malformed comments"
        raise CommentFormatError(path, f"strict: {detail}")
    return (batches if isinstance(batches, pa.Table) else _table(batches)), ctx


def _parse(fmt: str, ctx: ParseContext, fh: BinaryIO, items: object) -> list[pa.RecordBatch] | pa.Table:
    """Batches of ``COMMENTS_SCHEMA``; for a protobuf segment its decoded columns, which
    ``_combine`` assembles together with the other segments of the call."""
    if fmt == "bilibili_xml":
        return bilibili.parse_xml(ctx, fh)
    if fmt == "bilibili_protobuf":
        fh.seek(0)
        return bilibili.decode_segment(ctx, _read_all(ctx.path, fh))
    if fmt == "niconico_xml":
        return niconico.parse_legacy_xml(ctx, fh)
    if fmt == "youtube_live_chat":
        return youtube.parse_live_chat(ctx, fh)
    if fmt == "niconico_legacy_json":
        return niconico.parse_legacy_json(ctx, items)  # type: ignore[arg-type]
    if fmt == "niconico_comments_json":
        return niconico.parse_comments_json(ctx, items)  # type: ignore[arg-type]
    return acfun.parse(ctx, items)  # type: ignore[arg-type]


def read_comments(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    platform: str | None = None,
    video_id: str | None = None,
    author_salt: str | None = None,
    strict: bool = False,
) -> pa.Table:
    """Comments from a file, a folder of Bilibili protobuf segments, or a list of paths.

    Returns exactly ``COMMENTS_SCHEMA``, deduplicated on (platform, video_id, comment_id) keeping
    the first occurrence (segments overlap at their edges). The schema metadata counts what was
    left out: ``lcaffect.skipped`` (malformed elements), ``lcaffect.duplicates``, and
    ``lcaffect.xml_errors`` (a syntax error that ended an XML file early); ``comment_stats``
    reads them back. ``platform`` overrides the platform the format implies; ``video_id`` the one
    derived from file names. Raises ``CommentFormatError`` naming the file for anything unreadable.
    """
    _check_platform(platform)
    salt = author_salt_of(author_salt)
    paths = _expand(source, video_id)
    several = len(paths) > 1
    return _combine([_parse_one(path, platform, vid, strict, several) for path, vid in paths], salt)


def _expand(source, video_id: str | None) -> list[tuple[Path, str | None]]:
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise ValueError("read_comments needs at least one path")
    out: list[tuple[Path, str | None]] = []
    for item in sources:
        path = Path(item)
        if path.is_dir():
            files = _segment_files(path)
            vid = video_id if video_id is not None else _folder_video_id(path, files)
            out.extend((f, vid) for f in files)
        else:
            out.append((path, video_id))
    return out


def _check_platform(platform: str | None) -> None:
    if platform is not None and platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, not {platform!r}")


def _table(batches: list[pa.RecordBatch]) -> pa.Table:
    if not batches:
        return COMMENTS_SCHEMA.empty_table()
    return pa.Table.from_batches(batches, schema=COMMENTS_SCHEMA)


def _combine(parsed: list[tuple[pa.Table, ParseContext]], salt: str | None) -> pa.Table:
    """Concatenate, deduplicate once, hash authors, record what was left out in the metadata.

    Parsers leave raw user ids in ``author``; they become salted hashes here, in one pass over
    the column (the same users comment all through a video and across its segments), so raw
    ids never leave this module.
    """
    tables = _assembled(parsed)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    single_video = len({(ctx.platform, ctx.video_id) for _t, ctx in parsed}) == 1
    table = separate_viewers(table)
    deduped = _dedupe_ids(table) if single_video else dedupe(table)
    author = deduped.schema.get_field_index("author")
    deduped = deduped.set_column(author, COMMENTS_SCHEMA.field("author"), hash_authors(deduped["author"], salt))
    metadata = dict(COMMENTS_SCHEMA.metadata)
    metadata[META_SKIPPED] = str(sum(ctx.skipped for _t, ctx in parsed)).encode()
    metadata[META_DUPLICATES] = str(table.num_rows - deduped.num_rows).encode()
    metadata[META_FORMATS] = ",".join(sorted({ctx.notes["format"] for _t, ctx in parsed})).encode()
    errors = [f"{ctx.path}: {ctx.notes['xml_error']}" for _t, ctx in parsed if "xml_error" in ctx.notes]
    metadata[META_XML_ERRORS] = json.dumps(errors, ensure_ascii=False).encode()
    return deduped.replace_schema_metadata(metadata)


def _assembled(parsed: list[tuple[pa.Table, ParseContext]]) -> list[pa.Table]:
    """The parsed tables in order, each run of protobuf segments assembled in one go."""
    out: list[pa.Table] = []
    run: list[tuple[ParseContext, pa.Table]] = []
    for table, ctx in parsed + [(None, None)]:  # a sentinel ends the last run
        if ctx is not None and ctx.notes["format"] == "bilibili_protobuf":
            run.append((ctx, table))
            continue
        if run:
            try:
                out.append(bilibili.assemble_segments(run))
            except _CONTENT_ERRORS as exc:
                raise CommentFormatError(run[0][0].path, f"malformed protobuf content: {exc}") from None
            run = []
        if table is not None:
            out.append(table)
    return out


def dedupe(table: pa.Table) -> pa.Table:
    """Rows unique on (platform, video_id, comment_id), keeping the first of each."""
    if table.num_rows < 2:
        return table
    key = pc.binary_join_element_wise(table["platform"], table["video_id"], table["comment_id"], "\x1f")
    return _keep_first(table, key)


def _dedupe_ids(table: pa.Table) -> pa.Table:
    """``dedupe`` for a table of one platform and video: the comment id alone is the key."""
    return table if table.num_rows < 2 else _keep_first(table, table["comment_id"])


def _keep_first(table: pa.Table, key: pa.ChunkedArray | pa.Array) -> pa.Table:
    # Dictionary codes are handed out in order of first appearance, so a row is the first of its
    # key exactly when its code exceeds every code before it: one hash pass, no sort.
    if isinstance(key, pa.ChunkedArray):
        key = key.combine_chunks()
    encoded = pc.dictionary_encode(_as_integers(key))
    if len(encoded.dictionary) == table.num_rows:
        return table
    codes = encoded.indices.to_numpy()
    keep = codes > np.maximum.accumulate(np.concatenate(([-1], codes[:-1])))
    return _select(table, keep)


def _select(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """``table.filter(keep)``; when few rows go (segment edges), zero-copy slices between them."""
    dropped = np.flatnonzero(~keep)
    if len(dropped) > 4096:
        return table.filter(pa.array(keep))
    starts = np.concatenate(([0], dropped + 1))
    stops = np.concatenate((dropped, [table.num_rows]))
    pieces = [table.slice(a, b - a) for a, b in zip(starts.tolist(), stops.tolist()) if b > a]
    return pa.concat_tables(pieces) if pieces else table.slice(0, 0)


def _as_integers(key: pa.Array) -> pa.Array:
    """Decimal ids (Bilibili dmids, ...) as int64 when that maps them one to one: hashing
    integers costs a third of hashing strings. Anything else is returned unchanged."""
    if not pa.types.is_string(key.type) or not pc.all(pc.ascii_is_decimal(key)).as_py():
        return key
    if pc.any(pc.and_(pc.starts_with(key, "0"), pc.greater(pc.binary_length(key), 1))).as_py():
        return key  # a leading zero: "007" and "7" must stay apart
    try:
        return pc.cast(key, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # more digits than int64 holds
        return key


def comment_stats(table: pa.Table) -> dict[str, object]:
    """The counts ``read_comments`` left in the schema metadata, as Python values."""
    meta = table.schema.metadata or {}
    return {
        "rows": table.num_rows,
        "skipped": int(meta.get(META_SKIPPED, b"0")),
        "duplicates": int(meta.get(META_DUPLICATES, b"0")),
        "formats": [f for f in meta.get(META_FORMATS, b"").decode().split(",") if f],
        "xml_errors": json.loads(meta.get(META_XML_ERRORS, b"[]")),
    }
