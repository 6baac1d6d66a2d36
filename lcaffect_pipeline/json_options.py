"""JSON-object options (the resources' ``*_json`` fields, as the launchpad and ``-c`` files give
them): one parser and one wording for what is wrong with one."""

from __future__ import annotations

import json
from typing import Any


def json_object(text: str | None, what: str, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """``text`` parsed as a JSON object (empty: ``{}``); ``error`` names ``what`` and the reason."""
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise error(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, not {type(value).__name__}")
    return value
