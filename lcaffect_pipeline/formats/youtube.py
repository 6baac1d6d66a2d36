"""YouTube live chat as yt-dlp writes it (``{id}.live_chat.json``): one JSON object per line.

Each line is a ``replayChatItemAction`` holding ``actions`` and ``videoOffsetTimeMsec`` (for a
stream recorded live, yt-dlp puts ``videoOffsetTimeMsec`` beside it instead). Text messages
(``liveChatTextMessageRenderer``) and Super Chats (``liveChatPaidMessageRenderer``, kept with
``superchat=True``) become comments; every other action (membership, placeholders, banners,
deletions) is not a comment and is passed over without counting.

Message runs are joined: text runs as they are; a standard emoji as its character (``emojiId``
is the character itself, which text models read), a channel's custom emoji as its shortcut
(``:_name:``), else its image label. The file is read line by line, so memory stays bounded:
a line over ``MAX_LINE_BYTES`` (one chat action takes a few KiB) is skipped and counted without
ever being held whole. A line that is not JSON (a truncated last line, say) is skipped and counted.
"""

from __future__ import annotations

import json
from typing import BinaryIO, Iterator

import pyarrow as pa

from ._common import ROW_ERRORS, ColumnLists, ParseContext, derived_id, to_int

MAX_LINE_BYTES = 8 << 20
_RENDERERS = (("liveChatTextMessageRenderer", False), ("liveChatPaidMessageRenderer", True))


def emoji_text(emoji: dict) -> str:
    if not emoji.get("isCustomEmoji") and emoji.get("emojiId"):
        return str(emoji["emojiId"])
    shortcuts = emoji.get("shortcuts") or []
    if shortcuts:
        return str(shortcuts[0])
    label = (((emoji.get("image") or {}).get("accessibility") or {}).get("accessibilityData") or {}).get("label")
    return str(label or emoji.get("emojiId") or "")


def runs_text(message: dict | None) -> str:
    if not message:
        return ""
    if "simpleText" in message:
        return str(message["simpleText"])
    parts = []
    for run in message.get("runs") or []:
        if "text" in run:
            parts.append(str(run["text"]))
        elif "emoji" in run:
            parts.append(emoji_text(run["emoji"]))
    return "".join(parts)


def _add_line(rows: ColumnLists, record: dict) -> None:
    replay = record.get("replayChatItemAction")
    if not isinstance(replay, dict):
        return
    offset = replay.get("videoOffsetTimeMsec", record.get("videoOffsetTimeMsec"))
    for action in replay.get("actions") or []:
        item = (action.get("addChatItemAction") or {}).get("item") or {}
        for key, superchat in _RENDERERS:
            renderer = item.get(key)
            if renderer is None:
                continue
            text = runs_text(renderer.get("message"))
            offset_ms = to_int(offset)
            author = renderer.get("authorExternalChannelId")
            usec = renderer.get("timestampUsec")
            rows.append(
                # Without an id: from the offset, send time and text, never the author (an
                # unsalted hash over the channel id could be reversed by trying candidates).
                comment_id=str(renderer.get("id") or derived_id(offset_ms, usec, text)),
                offset_ms=offset_ms,
                text=text,
                mode="scroll",
                posted_ms=to_int(usec) // 1000 if usec is not None else None,
                author=author,
                superchat=superchat,
            )


def parse_live_chat(ctx: ParseContext, fh: BinaryIO) -> list[pa.RecordBatch]:
    fh.seek(0)
    rows = ColumnLists()
    batches = []
    good_lines = 0
    for line in _lines(ctx, fh):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            ctx.skipped += 1
            continue
        if not isinstance(record, dict):
            ctx.skipped += 1
            continue
        good_lines += 1
        mark = len(rows)
        try:
            _add_line(rows, record)
        except ROW_ERRORS:
            _truncate(rows, mark)  # a half-added line must not leave ragged columns
            ctx.skipped += 1
        rows.flush_if_full(ctx, batches)
    if not good_lines:
        long = ctx.notes.get("long_lines")
        raise ctx.error("no JSON line in the file: not a YouTube live chat"
                        + (f" ({long} lines over {MAX_LINE_BYTES >> 20} MiB skipped)" if long else ""))
    return rows.finish(ctx, batches)


def _lines(ctx: ParseContext, fh: BinaryIO) -> Iterator[bytes]:
    """The file's lines; one longer than ``MAX_LINE_BYTES`` is counted and read past in 1 MiB steps."""
    while line := fh.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            ctx.skipped += 1
            ctx.notes["long_lines"] = str(int(ctx.notes.get("long_lines", "0")) + 1)
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            continue
        yield line


def _truncate(rows: ColumnLists, length: int) -> None:
    for values in rows.cols.values():
        del values[length:]
