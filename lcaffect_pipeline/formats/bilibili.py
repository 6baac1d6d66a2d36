"""Bilibili comments: the XML file (``comment.bilibili.com/{cid}.xml``, yt-dlp ``.danmaku.xml``)
and the protobuf segments (``x/v2/dm/web/seg.so``).

XML: ``<d p="time_s,mode,size,color,sent_unix,pool,user_hash,dmid[,weight]">text</d>``. The
``p`` strings of a batch are comma-separated values, so Arrow's CSV reader parses and converts
them in one C++ call; a batch with any irregular row goes through split-and-cast instead, which
skips and counts the rows that do not convert. Python touches only the rare rows that need it
(mode 7 payloads that are not plain, ids derived from content).

Protobuf: the protobuf runtime parses each segment (``bili_proto``); the columns come from
ptars (Rust, straight into Arrow) when it is installed, else from the parsed messages. The
segments of one call are assembled into rows together.

Decisions (documented for users of the corpus):

- ``p`` with fewer than 7 fields (including ``p=""``) is skipped and counted: without a time
  the comment cannot be placed on the video, and inventing 0 s would pile such rows into the
  first segment. A row whose numeric fields do not parse is skipped and counted the same way.
- Files older than the dmid (7 fields) or rows whose dmid is empty or ``0`` get an id derived
  from ``p`` and the text, so verbatim-repeated elements deduplicate to one. Protobuf
  elements with ``id`` 0 likewise get one derived from their fields (not the user hash);
  identical comments of distinct viewers are kept apart by ``_common.separate_viewers``.
- The 8-field form has no weight: ``weight`` is null (not 0, which is a real weight).
- ``/n`` is Bilibili's newline and becomes ``\\n``; XML entities are decoded by the parser.
- Mode 7 (positioned): the text is element [4] of the JSON array and the payload is kept in
  ``raw``; a payload that is not such an array keeps its raw text as ``text``.
- Modes 8 (code) and 9 (BAS script) are both ``code``; 1-3 scroll, 4 bottom, 5 top, 6 reverse;
  anything else ``other``.
"""

from __future__ import annotations

import functools
import json
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from .bili_proto import DmSegMobileReply

from ._common import BILI_MODES, ParseContext, derived_id, make_batch, make_table, posted_from_seconds
from ._xml import FastPathAbandoned, stream_children_fast, stream_elements

_FLOAT_RE = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_INT_RE = r"^[-+]?\d{1,18}$"
# p field index -> (name, Arrow type, validation regex)
_P_FIELDS = (
    ("time_s", pa.float64(), _FLOAT_RE),
    ("mode", pa.int32(), _INT_RE),
    ("font_size", pa.int32(), _INT_RE),
    ("color", pa.int64(), _INT_RE),
    ("posted_at", pa.int64(), _INT_RE),
    ("pool", pa.int32(), _INT_RE),
)  # fields 6 (user hash) and 7 (dmid) are text; 8 (weight) is an optional int
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError)


# --------------------------------------------------------------------------------------- XML


def parse_xml(ctx: ParseContext, fh: BinaryIO) -> list[pa.RecordBatch]:
    try:
        return [_xml_batch(ctx, ps, texts) for ps, texts in stream_children_fast(ctx, fh, "i", "d", "p")]
    except FastPathAbandoned:
        ctx.skipped = 0  # start again: what the fast pass counted is counted again below
        return [_xml_batch(ctx, ps, texts) for (ps,), texts in stream_elements(ctx, fh, "d", ("p",))]


def _xml_batch(ctx: ParseContext, ps: list, texts: list) -> pa.RecordBatch:
    typed = _p_fields_fast(ps)
    if typed is None:
        return _xml_batch_checked(ctx, pa.array(ps, pa.string()), pa.array(texts, pa.string()))
    typed = typed.append_column("text", pa.array(texts, pa.string()))
    return _assemble(ctx, typed, lambda rows: [ps[i] for i in rows])


_CSV_TYPES = {"f0": pa.float64(), "f1": pa.int32(), "f2": pa.int32(), "f3": pa.int64(), "f4": pa.int64(),
              "f5": pa.int32(), "f6": pa.string(), "f7": pa.string(), "f8": pa.int32()}


def _p_fields_fast(ps: list) -> pa.Table | None:
    """Typed ``p`` fields for a batch in which every ``p`` is well formed, else None.

    The ``p`` strings are comma-separated values, so Arrow's CSV reader parses and converts the
    whole batch in C++ (about four times faster than splitting and casting column by column).
    Any irregularity (a missing ``p``, a line break inside one, rows of different lengths, a
    value that does not convert) returns None and the checked path takes the batch.
    """
    if not ps or not isinstance(ps[0], str):
        return None
    width = ps[0].count(",") + 1
    if not 7 <= width <= 9:
        return None
    names = [f"f{i}" for i in range(width)]
    try:
        table = pacsv.read_csv(
            pa.py_buffer("\n".join(ps).encode("utf-8")),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True, block_size=1 << 20),
            parse_options=pacsv.ParseOptions(quote_char=False, escape_char=False, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: _CSV_TYPES[n] for n in names},
                null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False,
            ),
        )
        if table.num_rows != len(ps):  # an empty or multi-line p shifted the rows
            return None
        return _typed(
            time_s=table["f0"], mode=table["f1"], font_size=table["f2"], color=table["f3"],
            posted_at=table["f4"], pool=table["f5"], author=table["f6"],
            dmid=table["f7"] if width > 7 else pa.repeat(pa.scalar("", pa.string()), len(ps)),
            weight=table["f8"] if width > 8 else pa.nulls(len(ps), pa.int32()),
        )
    except (*_ARROW_ERRORS, TypeError, UnicodeError):  # TypeError: a None among the p values
        return None


def _typed(time_s, mode, font_size, color, posted_at, pool, author, dmid, weight) -> pa.Table:
    """The converted ``p`` fields; raises an Arrow error if a time is not finite or too large."""
    offset_ms = pc.cast(pc.round(pc.multiply(time_s, 1000.0)), pa.int64())
    return pa.table({
        "offset_ms": offset_ms, "mode": mode, "font_size": font_size, "color": color,
        "posted_at": posted_from_seconds(posted_at), "pool": pool, "author": author, "dmid": dmid, "weight": weight,
    })


def _xml_batch_checked(ctx: ParseContext, p: pa.Array, text: pa.Array) -> pa.RecordBatch:
    """The batch through split-and-cast, skipping and counting the rows that do not convert."""
    # Two commas appended so that fields 7 (dmid) and 8 (weight) exist, empty, on short rows.
    parts = pc.split_pattern(pc.binary_join_element_wise(p, ",,", ""), ",")
    enough = pc.fill_null(pc.greater_equal(pc.list_value_length(parts), 9), False)  # >= 7 real
    if not pc.all(enough).as_py():
        parts, p, text = parts.filter(enough), p.filter(enough), text.filter(enough)
    fields = pa.table({f"f{i}": pc.list_element(parts, i) for i in range(9)})
    fields = fields.append_column("p", p).append_column("text", text)
    ctx.skipped += len(enough) - fields.num_rows
    typed = _convert_robustly(ctx, fields)
    if typed.num_rows == 0:
        return make_batch(ctx, {"comment_id": []})
    return _assemble(ctx, typed, lambda rows: typed["p"].take(rows).to_pylist())


def _convert(fields: pa.Table) -> pa.Table:
    """Cast the ``p`` fields from strings; raises an Arrow error if any row does not convert."""
    cast = {name: pc.cast(fields[f"f{i}"], typ) for i, (name, typ, _regex) in enumerate(_P_FIELDS)}
    weight = fields["f8"]
    typed = _typed(
        **cast, author=fields["f6"], dmid=fields["f7"],
        weight=pc.cast(pc.if_else(pc.equal(weight, ""), pa.scalar(None, pa.string()), weight), pa.int32()),
    )
    return typed.append_column("p", fields["p"]).append_column("text", fields["text"])


def _convert_robustly(ctx: ParseContext, fields: pa.Table) -> pa.Table:
    """``_convert``, skipping (and counting) the rows it cannot convert.

    The whole batch is tried first; on failure rows whose fields do not look numeric are dropped
    with one regex pass, and whatever still fails (an int32 overflow, a time too large for
    int64 ms) is isolated by bisection.
    """
    try:
        return _convert(fields)
    except _ARROW_ERRORS:
        pass
    mask = pa.repeat(pa.scalar(True), fields.num_rows)
    for i, (_name, _typ, regex) in enumerate(_P_FIELDS):
        mask = pc.and_(mask, pc.fill_null(pc.match_substring_regex(fields[f"f{i}"], regex), False))
    weight = fields["f8"]
    mask = pc.and_(mask, pc.or_(pc.equal(weight, ""), pc.match_substring_regex(weight, _INT_RE)))
    plausible = fields.filter(mask)
    ctx.skipped += fields.num_rows - plausible.num_rows
    return _bisect(ctx, plausible)


def _bisect(ctx: ParseContext, fields: pa.Table) -> pa.Table:
    try:
        return _convert(fields)
    except _ARROW_ERRORS:
        if fields.num_rows == 1:
            ctx.skipped += 1
            return _convert(fields.slice(0, 0))
    half = fields.num_rows // 2
    return pa.concat_tables([_bisect(ctx, fields.slice(0, half)), _bisect(ctx, fields.slice(half))])


def _assemble(ctx: ParseContext, c: pa.Table, p_of_rows) -> pa.RecordBatch:
    """The batch from typed fields; ``p_of_rows(rows)`` gives raw ``p`` strings (for derived ids)."""
    mode_num = c["mode"].combine_chunks()
    payload = pc.fill_null(c["text"].combine_chunks(), "")
    text, raw = _positioned_text(mode_num, payload)
    return make_batch(
        ctx,
        {
            "comment_id": _fill_missing_ids(c["dmid"].combine_chunks(), p_of_rows, payload),
            "offset_ms": c["offset_ms"],
            "text": pc.replace_substring(text, "/n", "\n"),
            "mode": _mode_names(mode_num),
            "color": c["color"],
            "font_size": c["font_size"],
            "posted_at": c["posted_at"],
            "author": c["author"],  # raw ids: the reader hashes them
            "weight": c["weight"],
            "pool": c["pool"],
            "raw": raw,
        },
    )


def _mode_names(mode_num: pa.Array) -> pa.Array:
    known = pc.and_(pc.greater_equal(mode_num, 0), pc.less(mode_num, len(BILI_MODES)))
    return pc.take(BILI_MODES, pc.if_else(known, mode_num, 0))


# A mode-7 payload that is a flat JSON array of scalars whose element [4] is a string without
# escapes: for these (nearly all) the regex below is exactly what json.loads would find, and
# RE2 applies it to the whole column at once; every other payload goes through json.loads.
_J_WS = r"[ \t\n\r]*"
_J_STR = r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"'
_J_LIT = r"(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null|NaN|-?Infinity)"
_J_VAL = f"(?:{_J_STR}|{_J_LIT})"
_J_SEP = f"{_J_WS},{_J_WS}"
_POSITIONED_RE = (
    f"^{_J_WS}\\[{_J_WS}" + _J_SEP.join([_J_VAL] * 4) + _J_SEP
    + r'"(?P<text>[^"\\\x00-\x1f]*)"' + f"(?:{_J_SEP}{_J_VAL})*{_J_WS}\\]{_J_WS}$"
)


def _positioned_text(mode_num: pa.Array, text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Mode 7: text becomes element [4] of the JSON array; the payload moves to ``raw``."""
    is_positioned = pc.equal(mode_num, 7)
    rows = pc.indices_nonzero(is_positioned)
    if len(rows) == 0:
        return text, pa.nulls(len(text), pa.string())
    payloads = text.take(rows)
    raw = pc.replace_with_mask(pa.nulls(len(text), pa.string()), is_positioned, payloads)
    shown = pc.struct_field(pc.extract_regex(payloads, _POSITIONED_RE), [0])
    if shown.null_count:
        unmatched = pc.indices_nonzero(pc.is_null(shown))
        slow = [positioned_text(p) for p in payloads.take(unmatched).to_pylist()]
        shown = pc.replace_with_mask(shown, pc.is_null(shown), pa.array(slow, pa.string()))
    return pc.replace_with_mask(text, is_positioned, shown), raw


def positioned_text(payload: str) -> str:
    """The displayed text of a Bilibili mode-7 payload, or the payload itself if it is not JSON."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return payload
    if isinstance(value, list) and len(value) > 4 and isinstance(value[4], (str, int, float)):
        return str(value[4])
    return payload


def _fill_missing_ids(dmid: pa.Array, p_of_rows, text: pa.Array) -> pa.Array:
    missing = pc.or_(pc.equal(dmid, ""), pc.equal(dmid, "0"))
    rows = pc.indices_nonzero(missing)
    if len(rows) == 0:
        return dmid
    row_list = rows.to_pylist()
    made = [derived_id(pp, tt) for pp, tt in zip(p_of_rows(row_list), text.take(rows).to_pylist())]
    return pc.replace_with_mask(dmid, missing, pa.array(made, pa.string()))


# --------------------------------------------------------------------------------- protobuf

_ELEM_COLUMNS = ("id", "progress", "mode", "fontsize", "color", "midHash", "content", "ctime", "weight", "pool")


def decode_segment(ctx: ParseContext, data: bytes) -> pa.Table:
    """The comment fields of one ``seg.so`` body, as columns (see ``assemble_segments``).

    The protobuf runtime parses (and so validates) every segment: it alone decides what is a
    segment. The columns then come from ptars when it is installed (the same values, decoded
    into Arrow in Rust), else from the parsed message.
    """
    reply = DmSegMobileReply()
    try:
        reply.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ctx.error(f"not a Bilibili protobuf segment (DmSegMobileReply): {exc}") from None
    if not reply.elems:
        if len(UnknownFieldSet(reply)):
            # Junk bytes often decode as protobuf made only of unknown fields: refuse those.
            raise ctx.error("not a Bilibili protobuf segment: no comments and only unknown fields")
        return _SEGMENT_SCHEMA.empty_table()  # a window without comments
    return pa.table(_columns_with_ptars(data, len(reply.elems)) or _columns_of(reply), schema=_SEGMENT_SCHEMA)


def assemble_segments(parts: list[tuple[ParseContext, pa.Table]]) -> pa.Table:
    """``COMMENTS_SCHEMA`` rows from decoded segments, in one pass over all of them.

    The segments of a video are assembled together rather than one by one: each Arrow call
    then runs once per video instead of once per 6-minute window.
    """
    columns = pa.concat_tables([table for _ctx, table in parts])

    def per_file(values: list[str]) -> pa.ChunkedArray:
        return pa.chunked_array(
            [pa.repeat(pa.scalar(v, pa.string()), t.num_rows) for v, (_ctx, t) in zip(values, parts)], pa.string()
        )

    mode_num = columns["mode"].combine_chunks()
    text, raw = _positioned_text(mode_num, columns["content"].combine_chunks())
    return make_table(
        parts[0][0],
        {
            "platform": per_file([ctx.platform for ctx, _t in parts]),
            "video_id": per_file([ctx.video_id for ctx, _t in parts]),
            "source_file": per_file([ctx.source_file for ctx, _t in parts]),
            # ``id`` rather than ``idStr``: the same dmid, and old segments lack ``idStr``.
            "comment_id": _segment_ids(columns),
            "offset_ms": columns["progress"],
            "text": pc.replace_substring(text, "/n", "\n"),
            "mode": _mode_names(mode_num),
            "color": columns["color"],
            "font_size": columns["fontsize"],
            "posted_at": posted_from_seconds(columns["ctime"]),
            "author": columns["midHash"],  # raw ids: the reader hashes them
            "weight": columns["weight"],
            "pool": columns["pool"],
            "raw": raw,
        },
    )


def _segment_ids(columns: pa.Table) -> pa.Array:
    """The dmid as text; a dmid of 0 (unset) gets an id derived from the comment, as in XML, so
    distinct comments stay distinct and verbatim repeats deduplicate. The user hash is left out
    of the derivation: an id must not reveal its author."""
    ids = columns["id"].combine_chunks()
    missing = pc.equal(ids, 0)
    text = pc.cast(ids, pa.string())
    if not pc.any(missing).as_py():
        return text
    rows = columns.filter(missing).select(list(_DERIVED_ID_FIELDS)).to_pylist()
    made = [derived_id("pb", *(r[k] for k in _DERIVED_ID_FIELDS)) for r in rows]
    return pc.replace_with_mask(text, missing, pa.array(made, pa.string()))


_DERIVED_ID_FIELDS = ("progress", "mode", "fontsize", "color", "content", "ctime", "weight", "pool")


def _columns_of(reply) -> dict[str, pa.Array]:
    """Columns from the parsed message: one comprehension per field (attribute access is the
    cost), each list converted to Arrow once."""
    elems = list(reply.elems)  # one wrapper per element, reused by every column
    return {name: pa.array([getattr(e, name) for e in elems], _ELEM_TYPES[name]) for name in _ELEM_COLUMNS}


_ELEM_TYPES = {
    "id": pa.int64(), "progress": pa.int64(), "mode": pa.int32(), "fontsize": pa.int32(),
    "color": pa.int64(), "midHash": pa.string(), "content": pa.string(), "ctime": pa.int64(),
    "weight": pa.int32(), "pool": pa.int32(),
}
_SEGMENT_SCHEMA = pa.schema([(name, _ELEM_TYPES[name]) for name in _ELEM_COLUMNS])


@functools.cache
def _ptars_handler():
    """ptars decodes whole segments straight into Arrow columns in Rust, several times faster
    than attribute access on the parsed message. Optional: without it the message is read.

    It is given a slim copy of ``DmSegMobileReply`` holding only the fields read here (same
    numbers and types, other fields unknown and skipped), so no column is built for nothing.
    """
    try:
        from ptars import HandlerPool
    except ImportError:
        return None
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    slim = descriptor_pb2.FileDescriptorProto()
    DmSegMobileReply.DESCRIPTOR.file.CopyToProto(slim)
    slim.name, slim.package = "lcaffect/bilibili_dm_slim.proto", "lcaffect.slim"
    keep = {"DanmakuElem": set(_ELEM_COLUMNS), "DmSegMobileReply": {"elems"}}
    for message in list(slim.message_type):
        if message.name not in keep:
            slim.message_type.remove(message)
            continue
        fields = [f for f in message.field if f.name in keep[message.name]]
        del message.field[:]
        message.field.extend(fields)
        for f in message.field:
            if f.type_name:
                f.type_name = f.type_name.replace(f".{DmSegMobileReply.DESCRIPTOR.file.package}.", ".lcaffect.slim.")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(slim)
    reply = message_factory.GetMessageClass(pool.FindMessageTypeByName("lcaffect.slim.DmSegMobileReply"))
    return HandlerPool([reply.DESCRIPTOR.file]).get_for_message(reply.DESCRIPTOR)


def _columns_with_ptars(data: bytes, count: int) -> dict[str, pa.Array] | None:
    """Columns via ptars; None (use the parsed message) if it is missing, fails or disagrees
    on the number of comments."""
    handler = _ptars_handler()
    if handler is None:
        return None
    try:
        elems = handler.list_to_record_batch([data]).column("elems").flatten()
    except Exception:  # noqa: BLE001 - any ptars failure: the parsed message is the answer
        return None
    if len(elems) != count:
        return None
    return {name: pc.cast(elems.field(name), _ELEM_TYPES[name]) for name in _ELEM_COLUMNS}
