"""AcFun's legacy comment JSON: a list of ``{"c": "time_s,color,mode,size,user,sent_unix[,id]",
"m": text}`` (some dumps nest it one level deeper, a list of such lists; both are read).

Modes follow Bilibili's numbering. Mode 7 is a JSON object whose ``n`` is the displayed text; the
payload is kept in ``raw`` (a payload that is not JSON keeps its raw text). Other texts use
``\\r`` or ``/n`` for line breaks; both become ``\\n``. Old dumps have no comment id: one is
derived from ``c`` without its user field, and ``m``, so verbatim repeats deduplicate and the id
reveals nothing about the user (an unsalted hash over the user id could be reversed by trying
candidate ids); two users' identical comments are kept apart by ``_common.separate_viewers``. The
user ``guest`` is no user. ``m`` should be a string; a number, object or list
(some dumps store a mode-7 payload as an object) is kept as its JSON text, and a record whose
``m`` is null is skipped and counted.
"""

from __future__ import annotations

import json

import pyarrow as pa

from ._common import ROW_ERRORS, ColumnLists, ParseContext, derived_id, to_float, to_int

_MODE_NAMES = ("other", "scroll", "scroll", "scroll", "bottom", "top", "reverse", "positioned", "code", "code")


def is_acfun_item(item: object) -> bool:
    return isinstance(item, dict) and "c" in item and "m" in item


def flatten(items: list) -> list:
    """The flat list of comment records, whichever of the two shapes the file has."""
    if any(isinstance(item, list) for item in items):
        return [inner for item in items if isinstance(item, list) for inner in item]
    return items


def _message(m: object) -> str:
    """A string as it is; a number, object or list as its JSON text, never Python's repr."""
    if isinstance(m, str):
        return m
    if m is None:
        raise ValueError("comment without text ('m' is null)")
    return json.dumps(m, ensure_ascii=False)


def _text(mode: int, message: str) -> tuple[str, str | None]:
    if mode != 7:
        return message.replace("\r\n", "\n").replace("\r", "\n").replace("/n", "\n"), None
    try:
        payload = json.loads(message)
    except (ValueError, RecursionError):
        return message, message
    shown = payload.get("n") if isinstance(payload, dict) else None
    return (str(shown) if shown is not None else message), message


def parse(ctx: ParseContext, items: list) -> list[pa.RecordBatch]:
    rows = ColumnLists()
    batches = []
    for item in flatten(items):
        try:
            fields = str(item["c"]).split(",")
            message = _message(item["m"])
            mode = to_int(fields[2], 32)
            text, raw = _text(mode, message)
            user = fields[4]
            rows.append(
                comment_id=fields[6] if len(fields) > 6 and fields[6] else derived_id(*fields[:4], *fields[5:], message),
                offset_ms=to_int(to_float(fields[0]) * 1000),
                text=text,
                mode=_MODE_NAMES[mode] if 0 <= mode < len(_MODE_NAMES) else "other",
                color=to_int(fields[1]),
                font_size=to_int(fields[3], 32),
                posted_ms=to_int(to_float(fields[5]) * 1000) if len(fields) > 5 and fields[5] else None,
                author=None if user in ("", "guest") else user,
                raw=raw,
            )
        except ROW_ERRORS:
            ctx.skipped += 1
        rows.flush_if_full(ctx, batches)
    return rows.finish(ctx, batches)
