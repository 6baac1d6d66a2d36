"""Bilibili danmaku protobuf messages, built at import time from a descriptor (no protoc step).

Field numbers follow Bilibili's ``bilibili.community.service.dm.v1`` package as documented by
SocialSisterYi/bilibili-API-collect (``grpc_api/bilibili/community/service/dm/v1/dm.proto``):

- ``DmSegMobileReply``: the ``x/v2/dm/web/seg.so`` body, one 6-minute window of comments.
- ``DanmakuElem``: one comment (``progress`` in ms, ``ctime`` unix seconds, ``midHash`` the
  sender's crc32 user hash, ``idStr`` the dmid as text).
- ``DmWebViewReply``: the ``x/v2/dm/web/view`` body; ``dm_sge.total`` is the number of segments.

Only the fields the pipeline reads are declared; newer responses carry more, and protobuf keeps
undeclared fields as unknown fields that nothing reads. Building from ``descriptor_pb2`` keeps the
schema readable here and avoids a generated ``_pb2`` file tied to one protoc version.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "bilibili.community.service.dm.v1"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_TYPES = {
    "int64": _F.TYPE_INT64,
    "int32": _F.TYPE_INT32,
    "uint32": _F.TYPE_UINT32,
    "string": _F.TYPE_STRING,
    "bool": _F.TYPE_BOOL,
}

# (message, [(field name, number, type or message name, repeated?)])
_MESSAGES: list[tuple[str, list[tuple[str, int, str, bool]]]] = [
    (
        "DanmakuElem",
        [
            ("id", 1, "int64", False),
            ("progress", 2, "int32", False),  # ms into the video
            ("mode", 3, "int32", False),
            ("fontsize", 4, "int32", False),
            ("color", 5, "uint32", False),
            ("midHash", 6, "string", False),
            ("content", 7, "string", False),
            ("ctime", 8, "int64", False),  # unix seconds
            ("weight", 9, "int32", False),
            ("action", 10, "string", False),
            ("pool", 11, "int32", False),
            ("idStr", 12, "string", False),
            ("attr", 13, "int32", False),
            ("animation", 22, "string", False),
        ],
    ),
    ("DanmakuFlag", [("dmid", 1, "int64", False), ("flag", 2, "uint32", False)]),
    ("DanmakuAIFlag", [("dm_flags", 1, "DanmakuFlag", True)]),
    ("DmColorful", [("type", 1, "int32", False), ("src", 2, "string", False)]),
    (
        "DmSegMobileReply",
        [
            ("elems", 1, "DanmakuElem", True),
            ("state", 2, "int32", False),
            ("ai_flag", 3, "DanmakuAIFlag", False),
            # Not in the public .proto: observed in every fixture as [start, end] of the
            # segment's window in ms (0, 360000 for segment 1); named here for that reason.
            ("window_ms", 4, "int64", True),
            ("colorfulSrc", 5, "DmColorful", True),
        ],
    ),
    ("DmSegConfig", [("page_size", 1, "int64", False), ("total", 2, "int64", False)]),
    (
        "DmWebViewReply",
        [
            ("state", 1, "int32", False),
            ("text", 2, "string", False),
            ("text_side", 3, "string", False),
            ("dm_sge", 4, "DmSegConfig", False),
            ("special_dms", 6, "string", True),  # URLs of BAS/special comment files
            ("check_box", 7, "bool", False),
            ("count", 8, "int64", False),
        ],
    ),
]


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="lcaffect/bilibili_dm.proto", package=PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES:
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, repeated in fields:
            field = msg.field.add(
                name=fname, number=number, label=_REPEATED if repeated else _OPTIONAL
            )
            if ftype in _TYPES:
                field.type = _TYPES[ftype]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{ftype}"
    return fdp


# A private pool: never clashes with another copy of these names in the default pool.
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message_class(name: str) -> type:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


DanmakuElem = _message_class("DanmakuElem")
DmSegMobileReply = _message_class("DmSegMobileReply")
DmSegConfig = _message_class("DmSegConfig")
DmWebViewReply = _message_class("DmWebViewReply")

__all__ = ["DanmakuElem", "DmSegMobileReply", "DmSegConfig", "DmWebViewReply", "PACKAGE"]
