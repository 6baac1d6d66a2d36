"""Paths read from lake content, resolved against the lake root (the one rule for them).

A manifest, a Delta log action, a segments row or a shard index names files of the lake. Such a
name is lake content, not a command and not a pointer to elsewhere: it is a path relative to the
lake (or to a folder of it), or an absolute path or object-store URL *inside* the lake root (a Delta
log may name its files so). ``resolve`` turns it into the file's location
under the current root and refuses anything else (``..`` out of the lake, absolute paths outside
it, another host or bucket, ``pipe:`` and other schemes) with ``LakeContentError`` naming the file
the name came from. Everything that reads or deletes such a path goes through it (retention
deletes nothing else), so a lake copied or moved elsewhere reads only itself.
"""

from __future__ import annotations

import os
import posixpath
import re

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class LakeContentError(ValueError):
    """A path read from lake content leaves the lake (or is not a path); names the file it came from."""

    def __init__(self, source: str, value: object, reason: str):
        self.source, self.value = str(source), value
        super().__init__(f"{source}: {str(value)[:200]!r} {reason}")


def _split(root: str) -> tuple[str, str]:
    """(scheme prefix such as ``s3://`` or '', the root's path without a trailing slash)."""
    root = str(root)
    if "://" in root and not root.startswith("file://"):
        scheme, rest = root.split("://", 1)
        return f"{scheme.lower()}://", rest.rstrip("/")
    return "", os.path.abspath(root.removeprefix("file://"))


def _normal(path: str) -> str | None:
    """A relative path without ``.``/empty parts; None when it climbs out (``..`` at its top)."""
    norm = posixpath.normpath(path)
    return None if norm == ".." or norm.startswith("../") or norm.startswith("/") else norm


def relative(root: str | os.PathLike, value: str) -> str | None:
    """``value`` (an absolute path or URL) relative to the lake root, or None when it is not inside it."""
    prefix, base = _split(str(root))
    text = str(value)
    if prefix:
        inner = text[len(prefix):] if text.lower().startswith(prefix) else ""
        if not inner.startswith(base + "/"):
            return None
        return _normal(inner[len(base) + 1:])
    if _SCHEME.match(text) and not text.startswith("file:"):
        return None
    path = text.removeprefix("file://").removeprefix("file:")
    if not os.path.isabs(path):
        return None
    path = os.path.normpath(path)
    if not path.startswith(base.rstrip("/") + "/"):
        return None
    return path[len(base.rstrip("/")) + 1:]


def resolve(root: str | os.PathLike, value: object, source: str | os.PathLike, *, base: str = "",
            inside: str | None = None) -> str:
    """The location (absolute path, or URL under an object-store root) of ``value``, a path read
    from ``source`` in the lake at ``root``. A relative ``value`` is taken relative to ``base`` (a
    folder of the lake, relative to its root); the result must lie strictly below the lake folder
    ``inside`` (``base`` when not given), never be that folder itself. Local results are also
    checked after following symbolic links."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise LakeContentError(source, value, "is not a path")
    inside = base if inside is None else inside
    rel = relative(root, value)
    if rel is None:
        scheme = _SCHEME.match(value)
        if (scheme and not value.startswith("file:")) or os.path.isabs(value.removeprefix("file://").removeprefix("file:")):
            raise LakeContentError(source, value, f"is outside the lake {root} (a lake names its files by paths "
                                                  "relative to it, or by URLs of the lake itself)")
        rel = _normal(posixpath.join(base, value)) if base else _normal(value)
        if rel is None:
            raise LakeContentError(source, value, f"leaves the lake {root}")
    scope = _normal(inside) if inside else ""
    if rel in ("", ".") or (scope and scope != "." and not rel.startswith(scope + "/")):
        raise LakeContentError(source, value, f"is not inside {scope or 'the lake'}/ of {root}")
    prefix, root_path = _split(str(root))
    if prefix:
        return f"{prefix}{root_path}/{rel}"
    out = os.path.join(root_path, *rel.split("/"))
    real_root, real = os.path.realpath(root_path), os.path.realpath(out)
    if not real.startswith(real_root.rstrip("/") + "/"):
        raise LakeContentError(source, value, f"leaves the lake {root} through a symbolic link")
    return out


# ------------------------------------------------------------ JSON kept in the lake (manifests, state)

POINTERS = "lake_paths"  # the key that lists where a stored JSON object holds lake-relative paths
UPGRADE = "run `python -m lcaffect_pipeline.versions_cli --lake LAKE upgrade` (with --from OLD_ROOT for a moved lake)"


def to_lake(root: str | os.PathLike, value: dict) -> dict:
    """``value`` as stored in the lake: every string that is a path inside the lake made relative
    to it, and their places (key paths) listed under ``POINTERS``, so a copied or moved lake
    resolves them against its own root (``from_lake``)."""
    pointers: list[list] = []

    def walk(item, where: list):
        if isinstance(item, dict):
            return {k: walk(v, [*where, k]) for k, v in item.items() if not (not where and k == POINTERS)}
        if isinstance(item, (list, tuple)):
            return [walk(v, [*where, i]) for i, v in enumerate(item)]
        if isinstance(item, str) and (rel := relative(root, item)) not in (None, "", "."):
            pointers.append(where)
            return rel
        return item

    out = walk(dict(value), [])
    return {**out, POINTERS: pointers} if pointers else out


def from_lake(root: str | os.PathLike, stored: dict, source: str | os.PathLike) -> dict:
    """A JSON object ``to_lake`` stored, read from ``source``: the paths ``POINTERS`` lists resolved
    against the current root (``resolve``: a path out of the lake is refused). An object that names
    files of the lake by absolute path (stored before paths were relative) is refused: ``UPGRADE``."""
    pointers = stored.get(POINTERS)
    out = {k: v for k, v in stored.items() if k != POINTERS}
    if not isinstance(pointers, list):
        if stale := to_lake(root, out).get(POINTERS):
            raise LakeContentError(source, _at(out, stale[0]), f"names a file of the lake by absolute path (stored "
                                                               f"before paths were relative): {UPGRADE}")
        return out
    for where in pointers:
        if not isinstance(where, list) or not where:
            raise LakeContentError(source, where, f"is not a place in the object ({POINTERS})")
        try:
            holder = _at(out, where[:-1])
            holder[where[-1]] = resolve(root, holder[where[-1]], source)
        except (KeyError, IndexError, TypeError) as exc:
            raise LakeContentError(source, where, f"names no value ({POINTERS}: {exc})") from None
    return out


def _at(item, where: list):
    for key in where:
        item = item[key]
    return item
