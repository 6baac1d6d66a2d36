"""Safe, streaming XML for comment files (lxml's pull parser).

Hostile input: entities are never resolved, nothing is fetched (``no_network``), no DTD is loaded,
``huge_tree`` stays off (libxml2's size and depth limits apply), and a file whose prolog carries a
DOCTYPE is refused outright: Bilibili and Niconico comment XML never has one, and a DOCTYPE is
what XXE and entity-expansion ("billion laughs") attacks need.

Memory stays bounded on a 100 MB single-line file: bytes are fed in 64 KiB chunks, completed
elements are read off the parser's event queue and deleted from the tree straight away. The
pull parser is used rather than ``iterparse`` because reading the event queue once per chunk
costs less Python per element than the iterator protocol.

Bilibili's servers are known to emit control characters that XML 1.0 forbids (``\\x08`` and
friends, usually pasted by users); they are removed from the byte stream before parsing, as
danmaku2ass and biliass do, so one such comment does not end the file.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

from lxml import etree

from ._common import BATCH_ROWS, CommentFormatError, ParseContext

CHUNK_BYTES = 1 << 16
PROLOG_LIMIT = 1 << 20  # the root element must start within the first MiB
_FORBIDDEN_CONTROLS = bytes(range(0x00, 0x09)) + b"\x0b\x0c" + bytes(range(0x0E, 0x20))
XML_ERRORS = (etree.LxmlError, ValueError, UnicodeError)


def _pull_parser(events: tuple[str, ...], tag: str | None = None) -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=events,
        tag=tag,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=False,
    )


def _ascii_compatible(head: bytes) -> bool:
    """False for UTF-16/32 input, where stripping control bytes would corrupt characters."""
    return not (head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:4])


def xml_root_tag(path: object, fh: BinaryIO) -> str:
    """The root element's tag; refuses a DOCTYPE and input that is not XML."""
    fh.seek(0)
    parser = _pull_parser(("start",))
    strip: bool | None = None
    read = 0
    while read < PROLOG_LIMIT:
        chunk = fh.read(CHUNK_BYTES)
        if strip is None:
            strip = _ascii_compatible(chunk)
        failure = None
        try:
            if chunk:
                parser.feed(chunk.translate(None, _FORBIDDEN_CONTROLS) if strip else chunk)
            else:
                parser.close()
        except XML_ERRORS as exc:
            failure = exc
        for _event, element in parser.read_events():
            if element.getroottree().docinfo.doctype:
                raise CommentFormatError(
                    path, "XML with a DOCTYPE is refused (comment files never have one; "
                    "it is how external-entity and entity-expansion attacks work)"
                )
            tag = element.tag
            return tag if isinstance(tag, str) else ""
        if failure is not None:
            raise CommentFormatError(path, f"not well-formed XML: {failure}")
        if not chunk:
            break
        read += len(chunk)
    raise CommentFormatError(path, "no XML root element found")


def stream_elements(
    ctx: ParseContext, fh: BinaryIO, tag: str, attrs: tuple[str, ...], batch_rows: int = BATCH_ROWS
) -> Iterator[tuple[list[list], list]]:
    """Yield ``(attribute columns, texts)`` for batches of completed ``<tag>`` elements.

    A syntax error part-way ends the stream: every element completed before it has been
    yielded (a correct partial parse) and the error is noted in ``ctx.notes["xml_error"]``.
    """
    fh.seek(0)
    parser = _pull_parser(("end",), tag)
    cols: list[list] = [[] for _ in attrs]
    texts: list = []
    strip: bool | None = None
    done = False
    while not done:
        chunk = fh.read(CHUNK_BYTES)
        if strip is None:
            strip = _ascii_compatible(chunk)
        try:
            if chunk:
                parser.feed(chunk.translate(None, _FORBIDDEN_CONTROLS) if strip else chunk)
            else:
                done = True
                parser.close()
        except XML_ERRORS as exc:
            done = True
            ctx.notes["xml_error"] = str(exc)
        last = _drain(parser, attrs, cols, texts)
        if last is not None:
            parent = last.getparent()
            if parent is not None:
                del parent[:-1]  # completed elements are read: free them
        if texts and (done or len(texts) >= batch_rows):
            yield cols, texts
            cols, texts = [[] for _ in attrs], []


def _drain(parser: etree.XMLPullParser, attrs: tuple[str, ...], cols: list[list], texts: list):
    """Move queued elements' attributes and text into the column lists; return the last one."""
    events = parser.read_events()
    last = None
    if len(attrs) == 1:  # the Bilibili hot path: one attribute, no inner loop
        col = cols[0]
        name = attrs[0]
        for _event, last in events:
            col.append(last.get(name))
            texts.append(last.text)
        return last
    for _event, last in events:
        get = last.get
        for col, name in zip(cols, attrs):
            col.append(get(name))
        texts.append(last.text)
    return last
