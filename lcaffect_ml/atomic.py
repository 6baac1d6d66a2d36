"""Atomic files: the one helper the pipeline's lake and the training programs share.

A file is written under a hidden temporary name in its folder and renamed into place only when
the block succeeds, so a reader (or a crashed run) never sees a half-written file under its final
name. A temporary name carries its writer (host and process id): the next write into the folder
removes what a killed writer left (``sweep_stale_temps``), and never a live writer's.
``lcaffect_pipeline.lake.atomic_write`` adds object stores on top (where one PUT is atomic).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import IO, Iterator

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
# ".{final name}.tmp-{host}-{pid}-{random}" (and DuckDB's ".wal" next to it); older versions
# wrote ".{final name}.tmp-{random}", which names no writer.
_TEMP = re.compile(r"^\..+\.tmp-(?:([0-9a-f]{6})-(\d+)-)?[0-9a-f]{8}")
STALE_UNOWNED_S = 3600.0  # a temporary that names no live writer here is stale after this long
_swept: set[str] = set()


def temp_path(final: str | os.PathLike, suffix: str = "") -> Path:
    """A hidden sibling of ``final`` that names its writer (see ``sweep_stale_temps``), ending in
    ``suffix`` (a library that picks the format from the extension needs it)."""
    final = Path(os.fspath(final))  # a local file: a remote path has no fspath and fails here
    return final.with_name(f".{final.name}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def sweep_stale_temps(folder: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Remove the temporaries that writers killed mid-write left in ``folder``.

    A temporary is stale when its writer ran on this host and is gone, or when it names no
    writer here and has not been touched for ``STALE_UNOWNED_S``; a live writer's is never
    touched, so concurrent runs are safe. Done once per folder per process (``force`` again).
    """
    key = str(folder)
    if key in _swept and not force:
        return []
    _swept.add(key)
    try:
        entries = list(os.scandir(key))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match and _stale(entry, match):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _stale(entry: os.DirEntry, match: re.Match) -> bool:
    host, pid = match.group(1), match.group(2)
    if host == _HOST:
        return not process_alive(int(pid))
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_UNOWNED_S
    except FileNotFoundError:
        return False


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs on this host (a zombie its parent has not reaped yet is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it is renamed to ``path`` only if the block succeeds.

    For libraries that write to a filename themselves (safetensors, matplotlib); the temporary
    keeps the final extension unless ``keep_suffix=False``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(final.parent)
    tmp = temp_path(final, final.suffix if keep_suffix else "")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        if not exc.filename:  # a full disk says "No space left on device" without a path: name the file
            raise OSError(exc.errno, exc.strerror, str(final)) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """``open(path, mode)`` through ``atomic_file`` (text modes are UTF-8)."""
    with atomic_file(path, keep_suffix=False) as tmp:
        kwargs = {"encoding": "utf-8"} if "b" not in mode else {}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
