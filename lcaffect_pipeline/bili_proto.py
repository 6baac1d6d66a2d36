"""Moved to ``lcaffect_pipeline.formats.bili_proto`` (the Bilibili format's protobuf messages);
this name stays importable for code written before the move."""

from .formats.bili_proto import PACKAGE, DanmakuElem, DmSegConfig, DmSegMobileReply, DmWebViewReply  # noqa: F401
