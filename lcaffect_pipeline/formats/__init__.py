"""Comment formats: every platform's live-comment files into one Arrow table (``COMMENTS_SCHEMA``).

``read_comments(source)`` takes a file, a folder of Bilibili protobuf segments or a list of
paths, recognises each file's format from its content and returns the comments deduplicated by
(platform, video_id, comment_id). Anything unreadable raises ``CommentFormatError`` naming the
file and the reason; malformed elements inside a good file are skipped and counted in the schema
metadata (see ``comment_stats``). Raw user ids never leave this package: authors are salted hashes.

Formats: Bilibili XML and protobuf segments, Niconico (yt-dlp ``.comments.json``, legacy XML and
JSON), YouTube live chat (yt-dlp ``.live_chat.json``), AcFun legacy JSON.
"""

from ._common import CommentFormatError
from .bilibili import positioned_text
from .reader import (
    FORMAT_PLATFORM,
    FORMATS,
    comment_stats,
    dedupe,
    detect_format,
    parse_file,
    read_comments,
    video_id_from_path,
)

__all__ = [
    "CommentFormatError",
    "FORMATS",
    "FORMAT_PLATFORM",
    "comment_stats",
    "dedupe",
    "detect_format",
    "parse_file",
    "positioned_text",
    "read_comments",
    "video_id_from_path",
]
