"""Niconico comments: yt-dlp's ``.comments.json``, the legacy ``<packet><chat>`` XML and the
legacy JSON API response (``[{"ping": …}, {"thread": …}, …, {"chat": {…}}]``).

Position, size and colour live in the ``mail``/``commands`` words (``ue``/``shita``/``naka``,
``big``/``medium``/``small``, colour names or ``#RRGGBB``). Sizes are given on Bilibili's scale
(small 18, medium 25, big 36) so that one ``font_size`` column reads the same across platforms;
uncoloured comments are white, as the player shows them.

Comment ids: yt-dlp's ``id`` (the nvComment id); in the legacy formats ``{thread}:{no}``, with
``:{fork}`` appended for the owner/easy-comment forks, which number their comments separately.
Legacy comments marked ``deleted`` carry no text and are skipped (counted).
"""

from __future__ import annotations

from datetime import datetime, timezone
from string import hexdigits
from typing import BinaryIO

import pyarrow as pa

from ._common import ROW_ERRORS, ColumnLists, ParseContext, optional_int, to_int
from ._xml import stream_elements

_POSITIONS = {"ue": "top", "shita": "bottom", "naka": "scroll"}
_SIZES = {"small": 18, "medium": 25, "big": 36}
_COLORS = {
    "white": 0xFFFFFF, "red": 0xFF0000, "pink": 0xFF8080, "orange": 0xFFC000,
    "yellow": 0xFFFF00, "green": 0x00FF00, "cyan": 0x00FFFF, "blue": 0x0000FF,
    "purple": 0xC000FF, "black": 0x000000,
    "white2": 0xCCCC99, "niconicowhite": 0xCCCC99, "red2": 0xCC0033, "truered": 0xCC0033,
    "pink2": 0xFF33CC, "orange2": 0xFF6600, "passionorange": 0xFF6600,
    "yellow2": 0x999900, "madyellow": 0x999900, "green2": 0x00CC66, "elementalgreen": 0x00CC66,
    "cyan2": 0x00CCCC, "blue2": 0x3399FF, "marineblue": 0x3399FF,
    "purple2": 0x6633CC, "nobleviolet": 0x6633CC, "black2": 0x666666,
}
_LEGACY_ATTRS = ("thread", "no", "vpos", "date", "date_usec", "mail", "user_id", "score", "fork", "deleted")


def commands_style(words: list[str]) -> tuple[str, int, int]:
    """(mode, font size, colour) from Niconico command words."""
    mode, size, color = "scroll", 25, 0xFFFFFF
    for word in words:
        lowered = word.lower()
        if lowered in _POSITIONS:
            mode = _POSITIONS[lowered]
        elif lowered in _SIZES:
            size = _SIZES[lowered]
        elif lowered in _COLORS:
            color = _COLORS[lowered]
        elif len(word) == 7 and word.startswith("#") and all(c in hexdigits for c in word[1:]):
            color = int(word[1:], 16)
    return mode, size, color


def _legacy_id(thread: object, no: object, fork: object) -> str:
    base = f"{thread}:{to_int(no)}" if thread not in (None, "") else str(to_int(no))
    return f"{base}:{fork}" if fork not in (None, "", 0, "0") else base


def _add_legacy(rows: ColumnLists, chat: dict, text: object) -> None:
    mode, size, color = commands_style(str(chat.get("mail") or "").split())
    rows.append(
        comment_id=_legacy_id(chat.get("thread"), chat["no"], chat.get("fork")),
        offset_ms=to_int(to_int(chat["vpos"]) * 10),  # vpos is in 1/100 s and may be negative
        text="" if text is None else str(text),
        mode=mode,
        color=color,
        font_size=size,
        posted_ms=_legacy_ms(chat.get("date"), chat.get("date_usec")),
        author=chat.get("user_id"),
        score=optional_int(chat.get("score"), 32),
    )


def parse_legacy_xml(ctx: ParseContext, fh: BinaryIO) -> list[pa.RecordBatch]:
    batches = []
    rows = ColumnLists()
    for cols, texts in stream_elements(ctx, fh, "chat", _LEGACY_ATTRS):
        for values, text in zip(zip(*cols), texts):
            chat = dict(zip(_LEGACY_ATTRS, values))
            if chat.get("deleted") not in (None, "", "0"):
                ctx.skipped += 1
                continue
            try:
                _add_legacy(rows, chat, text)
            except ROW_ERRORS:
                ctx.skipped += 1
        rows.flush_if_full(ctx, batches)
    return rows.finish(ctx, batches)


def parse_legacy_json(ctx: ParseContext, items: list) -> list[pa.RecordBatch]:
    rows = ColumnLists()
    batches = []
    for item in items:
        chat = item.get("chat") if isinstance(item, dict) else None
        if chat is None:
            continue  # ping/thread/leaf/global_num_res records carry no comment
        try:
            if chat.get("deleted"):
                ctx.skipped += 1
                continue
            _add_legacy(rows, chat, chat.get("content"))
        except ROW_ERRORS:
            ctx.skipped += 1
        rows.flush_if_full(ctx, batches)
    return rows.finish(ctx, batches)


def _iso_ms(value: str) -> int:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:  # the API always sends an offset; assume UTC if one is missing
        moment = moment.replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1000)


def _legacy_ms(date: object, usec: object) -> int | None:
    if date in (None, ""):
        return None
    return to_int(to_int(date) * 1000 + (to_int(usec) // 1000 if usec not in (None, "") else 0))


def parse_comments_json(ctx: ParseContext, items: list) -> list[pa.RecordBatch]:
    """yt-dlp's ``.comments.json``: nvComment API comments ``{id, no, vposMs, body, commands, …}``."""
    rows = ColumnLists()
    batches = []
    for item in items:
        try:
            words = item.get("commands") or []
            mode, size, color = commands_style([str(w) for w in words])
            posted = item.get("postedAt")
            comment_id = item.get("id")
            rows.append(
                comment_id=str(comment_id) if comment_id not in (None, "") else str(to_int(item["no"])),
                offset_ms=to_int(item["vposMs"]),
                text=str(item.get("body") or ""),
                mode=mode,
                color=color,
                font_size=size,
                posted_ms=_iso_ms(posted) if posted else None,
                author=item.get("userId"),
                score=optional_int(item.get("score"), 32),
            )
        except ROW_ERRORS:
            ctx.skipped += 1
        rows.flush_if_full(ctx, batches)
    return rows.finish(ctx, batches)
