"""Safe, streaming XML for comment files (lxml's pull parser).

Hostile input: entities are never resolved, nothing is fetched (``no_network``), no DTD is loaded,
``huge_tree`` stays off (libxml2's size and depth limits apply), and a file whose prolog carries a
DOCTYPE is refused outright: Bilibili and Niconico comment XML never has one, and a DOCTYPE is
what XXE and entity-expansion ("billion laughs") attacks need.

Memory stays bounded on a 100 MB single-line file: bytes are fed in 64 KiB chunks and the
elements parsed from each chunk are read and deleted from the tree straight away.

Two readers share that scheme. ``stream_elements`` (any file) reads completed elements off the
parser's event queue, so a syntax error part-way still yields every element completed before
it. ``stream_children_fast`` (the Bilibili hot path) cuts the byte stream right after an end tag
``</d>``, so every ``<d>`` in the tree is complete after each feed, and then takes the
attribute and the text of all of them with two compiled XPath queries, in C, with no Python
per element. It checks the preconditions that make this exact (no comments, CDATA or
processing instructions, no nested or mixed-content ``<d>``) and raises ``FastPathAbandoned``
when one fails or the XML is broken; the caller then reads the file with ``stream_elements``.

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


class FastPathAbandoned(Exception):
    """The fast reader met input it does not handle exactly: read the file the safe way."""


CARRY_LIMIT = 8 << 20  # bytes without an end tag before the fast path gives up


def stream_children_fast(
    ctx: ParseContext, fh: BinaryIO, root_tag: str, tag: str, attr: str, batch_rows: int = BATCH_ROWS
) -> Iterator[tuple[list, list]]:
    """Yield ``(attribute values, texts)`` for batches of the root's ``<tag>`` children.

    Raises ``FastPathAbandoned`` (possibly after yielding) when the input needs the safe reader.
    """
    end_tag = f"</{tag}>".encode()
    xp_attr = etree.XPath(f"{tag}/@{attr}", smart_strings=False)
    xp_text = etree.XPath(f"{tag}/text()", smart_strings=False)
    xp_count = etree.XPath(f"count({tag})")
    xp_irregular = etree.XPath(f"count(.//{tag}) - count({tag}) + count({tag}/*)")
    fh.seek(0)
    parser = _pull_parser(("start",), root_tag)
    root = None
    carry = b""
    values: list = []
    texts: list = []
    strip: bool | None = None
    prolog = True
    while True:
        chunk = fh.read(CHUNK_BYTES)
        if strip is None:
            strip = _ascii_compatible(chunk)
        buf = carry + chunk if carry else chunk
        if chunk:
            cut = buf.rfind(end_tag)
            if cut < 0:
                if len(buf) > CARRY_LIMIT:
                    raise FastPathAbandoned("no end tag in 8 MiB")
                carry = buf
                continue
            data, carry = buf[: cut + len(end_tag)], buf[cut + len(end_tag):]
        else:
            data, carry = buf, b""
        if strip:
            data = data.translate(None, _FORBIDDEN_CONTROLS)
        if _has_markers(data, prolog):
            raise FastPathAbandoned("comments, CDATA or processing instructions")
        prolog = False
        try:
            if data:
                parser.feed(data)
            if not chunk:
                parser.close()
        except XML_ERRORS as exc:
            raise FastPathAbandoned(str(exc)) from None
        if root is None:
            for _event, root in parser.read_events():
                if root.getroottree().docinfo.doctype:
                    raise CommentFormatError(ctx.path, "XML with a DOCTYPE is refused")
                break
        if root is not None:
            if xp_irregular(root):
                raise FastPathAbandoned(f"nested or mixed-content <{tag}>")
            count = int(xp_count(root))
            if count:
                found, said = xp_attr(root), xp_text(root)
                if len(found) != count or len(said) != count:
                    # some element lacks the attribute or the text: one Python step per element
                    children = list(root.iterchildren(tag))
                    found, said = [e.get(attr) for e in children], [e.text for e in children]
                values += found
                texts += said
            del root[:]  # every child is complete (the chunk ends after an end tag): free them
        if values and (not chunk or len(values) >= batch_rows):
            yield values, texts
            values, texts = [], []
        if not chunk:
            return


def _has_markers(data: bytes, prolog: bool) -> bool:
    """Comments, CDATA sections or processing instructions other than the XML declaration."""
    if b"<!" in data:
        return True
    allowed = 1 if prolog and data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml") else 0
    return data.count(b"<?") > allowed


def _drain(parser: etree.XMLPullParser, attrs: tuple[str, ...], cols: list[list], texts: list):
    """Move queued elements' attributes and text into the column lists; return the last one."""
    last = None
    for _event, last in parser.read_events():
        get = last.get
        for col, name in zip(cols, attrs):
            col.append(get(name))
        texts.append(last.text)
    return last
