"""Bilibili comments: the XML file (``comment.bilibili.com/{cid}.xml``, yt-dlp ``.danmaku.xml``)
and the protobuf segments (``x/v2/dm/web/seg.so``).

XML: ``<d p="time_s,mode,size,color,sent_unix,pool,user_hash,dmid[,weight]">text</d>``. The
``p`` strings of a batch are split and converted with Arrow compute kernels, column at a time;
Python only touches the rare rows that need it (mode 7 JSON, ids derived from content, bad rows).

Decisions (documented for users of the corpus):

- ``p`` with fewer than 7 fields (including ``p=""``) is skipped and counted: without a time
  the comment cannot be placed on the video, and inventing 0 s would pile such rows into the
  first segment. A row whose numeric fields do not parse is skipped and counted the same way.
- Files older than the dmid (7 fields) or rows whose dmid is empty or ``0`` get an id derived
  from ``p`` and the text, so verbatim-repeated elements deduplicate to one.
- The 8-field form has no weight: ``weight`` is null (not 0, which is a real weight).
- ``/n`` is Bilibili's newline and becomes ``\\n``; XML entities are decoded by the parser.
- Mode 7 (positioned): the text is element [4] of the JSON array and the payload is kept in
  ``raw``; a payload that is not such an array keeps its raw text as ``text``.
- Modes 8 (code) and 9 (BAS script) are both ``code``; 1-3 scroll, 4 bottom, 5 top, 6 reverse;
  anything else ``other``.
"""

from __future__ import annotations

import json
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from lcaffect_pipeline.bili_proto import DmSegMobileReply

from ._common import BILI_MODES, ParseContext, derived_id, hash_authors, make_batch
from ._xml import stream_elements

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
)
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError)


# --------------------------------------------------------------------------------------- XML


def parse_xml(ctx: ParseContext, fh: BinaryIO) -> list[pa.RecordBatch]:
    batches = []
    for (ps,), texts in stream_elements(ctx, fh, "d", ("p",)):
        batch = _xml_batch(ctx, pa.array(ps, pa.string()), pa.array(texts, pa.string()))
        if batch.num_rows:
            batches.append(batch)
    return batches


def _xml_batch(ctx: ParseContext, p: pa.Array, text: pa.Array) -> pa.RecordBatch:
    # Two commas appended so that fields 7 (dmid) and 8 (weight) exist, empty, on short rows.
    parts = pc.split_pattern(pc.binary_join_element_wise(p, ",,", ""), ",")
    enough = pc.fill_null(pc.greater_equal(pc.list_value_length(parts), 9), False)  # >= 7 real
    fields = pa.table({f"f{i}": pc.list_element(parts.filter(enough), i) for i in range(9)})
    fields = fields.append_column("p", p.filter(enough)).append_column("text", text.filter(enough))
    ctx.skipped += len(p) - fields.num_rows
    converted = _convert_robustly(ctx, fields)
    if converted.num_rows == 0:
        return make_batch(ctx, {"comment_id": []})
    return _assemble(ctx, converted)


def _convert(fields: pa.Table) -> pa.Table:
    """Cast the numeric ``p`` fields; raises an Arrow error if any row does not parse."""
    out = {}
    for i, (name, typ, _regex) in enumerate(_P_FIELDS):
        out[name] = pc.cast(fields[f"f{i}"], typ)
    out["offset_ms"] = pc.cast(pc.round(pc.multiply(out.pop("time_s"), 1000.0)), pa.int64())
    weight = fields["f8"]
    out["weight"] = pc.cast(pc.if_else(pc.equal(weight, ""), pa.scalar(None, pa.string()), weight), pa.int32())
    for name in ("f6", "f7", "p", "text"):
        out[name] = fields[name]
    return pa.table(out)


def _convert_robustly(ctx: ParseContext, fields: pa.Table) -> pa.Table:
    """``_convert``, skipping (and counting) the rows it cannot convert.

    The whole batch is tried first (the normal case costs nothing extra); on failure rows whose
    fields do not look numeric are dropped with one regex pass, and whatever still fails (an
    int32 overflow, say) is isolated by bisection.
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


def _assemble(ctx: ParseContext, c: pa.Table) -> pa.RecordBatch:
    mode_num = c["mode"].combine_chunks()
    payload = pc.fill_null(c["text"].combine_chunks(), "")
    text, raw = _positioned_text(mode_num, payload)
    comment_id = _fill_missing_ids(c["f7"].combine_chunks(), c["p"].combine_chunks(), payload)
    return make_batch(
        ctx,
        {
            "comment_id": comment_id,
            "offset_ms": c["offset_ms"],
            "text": pc.replace_substring(text, "/n", "\n"),
            "mode": _mode_names(mode_num),
            "color": c["color"],
            "font_size": c["font_size"],
            "posted_at": c["posted_at"],
            "author": hash_authors(c["f6"].combine_chunks(), ctx.salt),
            "weight": c["weight"],
            "pool": c["pool"],
            "raw": raw,
        },
    )


def _mode_names(mode_num: pa.Array) -> pa.Array:
    known = pc.and_(pc.greater_equal(mode_num, 0), pc.less(mode_num, len(BILI_MODES)))
    return pc.take(BILI_MODES, pc.if_else(known, mode_num, 0))


def _positioned_text(mode_num: pa.Array, text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Mode 7: text becomes element [4] of the JSON array; the payload moves to ``raw``."""
    is_positioned = pc.equal(mode_num, 7)
    raw = pc.if_else(is_positioned, text, pa.scalar(None, pa.string()))
    rows = pc.indices_nonzero(is_positioned)
    if len(rows) == 0:
        return text, raw
    payloads = text.take(rows).to_pylist()
    shown = [positioned_text(payload) for payload in payloads]
    return pc.replace_with_mask(text, is_positioned, pa.array(shown, pa.string())), raw


def positioned_text(payload: str) -> str:
    """The displayed text of a Bilibili mode-7 payload, or the payload itself if it is not JSON."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return payload
    if isinstance(value, list) and len(value) > 4 and isinstance(value[4], (str, int, float)):
        return str(value[4])
    return payload


def _fill_missing_ids(dmid: pa.Array, p: pa.Array, text: pa.Array) -> pa.Array:
    missing = pc.or_(pc.equal(dmid, ""), pc.equal(dmid, "0"))
    rows = pc.indices_nonzero(missing)
    if len(rows) == 0:
        return dmid
    made = [derived_id(pp, tt) for pp, tt in zip(p.take(rows).to_pylist(), text.take(rows).to_pylist())]
    return pc.replace_with_mask(dmid, missing, pa.array(made, pa.string()))


# --------------------------------------------------------------------------------- protobuf

def parse_protobuf(ctx: ParseContext, data: bytes) -> list[pa.RecordBatch]:
    """One ``seg.so`` body (``DmSegMobileReply``) into a batch; unknown fields are ignored."""
    reply = DmSegMobileReply()
    try:
        reply.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ctx.error(f"not a Bilibili protobuf segment (DmSegMobileReply): {exc}") from None
    if not reply.elems and len(UnknownFieldSet(reply)):
        # Junk bytes often decode as protobuf made only of unknown fields: refuse those.
        raise ctx.error("not a Bilibili protobuf segment: no comments and only unknown fields")
    elems = list(reply.elems)  # one wrapper per element, reused by every column below
    if not elems:
        return []
    # One comprehension per field: attribute access is the cost; Arrow converts each list once.
    # ``id`` rather than ``idStr``: the same dmid, and old segments lack ``idStr``.
    mode_num = pa.array([e.mode for e in elems], pa.int32())
    content = pa.array([e.content for e in elems], pa.string())
    text, raw = _positioned_text(mode_num, content)
    return [
        make_batch(
            ctx,
            {
                "comment_id": pc.cast(pa.array([e.id for e in elems], pa.int64()), pa.string()),
                "offset_ms": pa.array([e.progress for e in elems], pa.int64()),
                "text": pc.replace_substring(text, "/n", "\n"),
                "mode": _mode_names(mode_num),
                "color": pa.array([e.color for e in elems], pa.int64()),
                "font_size": pa.array([e.fontsize for e in elems], pa.int32()),
                "posted_at": pa.array([e.ctime for e in elems], pa.int64()),
                "author": hash_authors(pa.array([e.midHash for e in elems], pa.string()), ctx.salt),
                "weight": pa.array([e.weight for e in elems], pa.int32()),
                "pool": pa.array([e.pool for e in elems], pa.int32()),
                "raw": raw,
            },
        )
    ]
