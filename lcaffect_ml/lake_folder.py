"""A training program's run folder in the lake, wherever the program runs.

A program started anywhere (a pod, another node, a private mount namespace) with the lake's URL
and credentials (for ``s3://`` the ``AWS_*`` variables s3fs reads) needs nothing from the machine
that launched it: ``run_folder(output_dir)`` gives it a local scratch copy of its run folder in
the lake (the files of a previous attempt, of the checkpoints only the newest complete one), each
checkpoint is published to the lake as soon as it is complete (its marker file last, so a
killed program resumes from the lake), and ``publish`` uploads the outputs with the files that
mark a finished run last. ``local_inputs`` copies the inputs named by lake URLs (the utterance
table with its media, a features folder, a V2LC run) into scratch. A local ``output_dir`` or input
is used as it is, with nothing copied.

Only fsspec (and its s3fs, gcsfs ... implementations) is used here: the ML package imports
nothing of the pipeline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from .contracts.naming import safe_name

CHECKPOINTS = "checkpoints"
_STEP = re.compile(rf"({CHECKPOINTS}(?:/[^/]+)?)/step-(\d+)/(.+)")  # (checkpoint folder, step, file)


def is_url(text: str | os.PathLike) -> bool:
    """An fsspec URL of a file store (``s3://``, ``gs://``, ``memory://``), not a local path."""
    text = str(text)
    return "://" in text and text.split("://", 1)[0].lower() != "file"


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


def read_bytes(path: str | os.PathLike) -> bytes:
    """A local file's or a lake URL's bytes (a program's ``--config`` may be either)."""
    if not is_url(path):
        return Path(str(path).removeprefix("file://")).read_bytes()
    fs, key = _fs(str(path))
    return fs.cat_file(key)


def scratch_root() -> Path:
    """``$LCAFFECT_SCRATCH``, else the system's temp folder: a cache, never the lake."""
    return Path(os.environ.get("LCAFFECT_SCRATCH") or Path(tempfile.gettempdir()) / "lcaffect-scratch")


class RunFolder:
    """``local``: the folder the program writes; ``url``: its home in the lake (None when local)."""

    def __init__(self, local: Path, url: str | None = None, marker: str = ""):
        self.local, self.url, self.marker = local, url, marker  # marker: what completes a checkpoint

    def location(self, path: str | os.PathLike | None) -> str | None:
        """Where ``path`` (under ``local``) is, or will be once published, in the lake."""
        if path is None or self.url is None:
            return None if path is None else str(Path(path).resolve())
        return f"{self.url.rstrip('/')}/{Path(path).relative_to(self.local).as_posix()}"

    def pull(self) -> None:
        """The lake folder's files into ``local``: everything but the checkpoints, and of those the
        newest complete one of each checkpoint folder (``checkpoints/step-N``, or one per run as
        ``checkpoints/{run}/step-N``; complete: its ``marker`` present, uploaded last)."""
        fs, root = _fs(self.url)
        if not fs.exists(root):
            return
        files = [f[len(root.rstrip("/")) + 1:] for f in fs.find(root)]
        newest: dict[str, int] = {}  # checkpoint folder -> its newest complete step
        for rel in files:
            if (step := _STEP.fullmatch(rel)) and step.group(3) == self.marker:
                newest[step.group(1)] = max(newest.get(step.group(1), -1), int(step.group(2)))
        for rel in files:
            step = _STEP.fullmatch(rel)
            if rel.startswith(CHECKPOINTS + "/") and not (step and newest.get(step.group(1)) == int(step.group(2))):
                continue
            target = self.local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{root}/{rel}", str(target))

    def publish_checkpoint(self, folder: Path, kept: Sequence[Path]) -> None:
        """A complete local checkpoint folder to the lake (its marker last), then the lake's
        checkpoints that are no longer among ``kept`` removed."""
        if self.url is None:
            return
        self.publish_tree(folder, last=(self.marker,))
        fs, root = _fs(self.url)
        ckpts = f"{root}/{folder.parent.relative_to(self.local).as_posix()}"
        keep = {p.name for p in kept}
        for entry in fs.ls(ckpts, detail=False) if fs.exists(ckpts) else []:
            if entry.rstrip("/").rsplit("/", 1)[-1] not in keep:
                fs.rm(entry, recursive=True)

    def publish_tree(self, folder: Path, last: Sequence[str] = ()) -> None:
        """The files of ``folder`` (under ``local``) to the lake, the names in ``last`` at the end."""
        if self.url is not None:
            self._upload([p for p in sorted(folder.rglob("*")) if p.is_file()], last=tuple(folder / n for n in last))

    def publish(self, last: Sequence[str] = ()) -> None:
        """Every file of ``local`` outside the checkpoints (published as they were written) to the
        lake, the names in ``last`` after all others, in their order: a reader that finds them
        finds the whole run."""
        if self.url is None:
            return
        files = [p for p in sorted(self.local.rglob("*"))
                 if p.is_file() and p.relative_to(self.local).parts[0] != CHECKPOINTS]
        self._upload(files, last=tuple(self.local / n for n in last))

    def _upload(self, files: Sequence[Path], last: Sequence[Path]) -> None:
        fs, root = _fs(self.url)
        order = sorted(files, key=lambda p: (p in last, last.index(p) if p in last else 0))
        for path in order:  # one PUT per file: an object appears whole or not at all
            fs.put_file(str(path), f"{root}/{path.relative_to(self.local).as_posix()}")


@contextlib.contextmanager
def run_folder(output_dir: str | os.PathLike, marker: str, *, pull: bool = True) -> Iterator[RunFolder]:
    """The program's run folder: ``output_dir`` itself when local; for a lake URL a scratch folder
    named after it (the same local path for every rank of a one-node torchrun job; only the rank
    that ``pull``s fills it), removed at the end whatever happened: the lake holds what counts.
    ``marker``: the file written last into a complete checkpoint."""
    if not is_url(output_dir):
        local = Path(str(output_dir).removeprefix("file://"))
        yield RunFolder(local, marker=marker)
        return
    url = str(output_dir).rstrip("/")
    key = f"{safe_name(url.rsplit('/', 1)[-1])[:40]}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    local = scratch_root() / "runs" / key
    folder = RunFolder(local, url, marker)
    if pull:
        shutil.rmtree(local, ignore_errors=True)  # a killed attempt's leftovers: the lake decides
        local.mkdir(parents=True)
        folder.pull()
    try:
        yield folder
    finally:
        if pull:
            _remove(local)


@contextlib.contextmanager
def local_inputs(paths: dict[str, str | None], for_output: str, *, exclude: Sequence[str] = (),
                 beside: dict[str, Sequence[str]] | None = None) -> Iterator[dict[str, str | None]]:
    """Each input (a file or a folder: a local path, used as it is, or a lake URL, copied into a
    scratch folder that is removed after) as a local path, under the same keys. The folder is named
    after the inputs and ``for_output`` (the program's output_dir): the same local paths every time,
    since programs fold input paths into their cache keys. A folder is copied
    without its top-level names in ``exclude``; ``beside[key]``: the folders next to a file input
    that it names relative to its own folder (an utterance table's ``media``), copied with it."""
    urls = {k: v for k, v in paths.items() if v and is_url(v)}
    if not urls:
        yield dict(paths)
        return
    name = json.dumps([for_output, sorted(urls.items())])
    folder = scratch_root() / "inputs" / hashlib.sha256(name.encode()).hexdigest()[:16]
    shutil.rmtree(folder, ignore_errors=True)  # a killed attempt's copies
    folder.mkdir(parents=True)
    try:
        local = dict(paths)
        for key, url in urls.items():
            fs, path = _fs(url.rstrip("/"))
            local[key] = str(folder / key / path.rsplit("/", 1)[-1])
            if fs.isdir(path):
                _get_tree(fs, path, Path(local[key]), exclude)
            else:
                Path(local[key]).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(path, local[key])
                for name in (beside or {}).get(key, ()):
                    if fs.isdir(sibling := f"{path.rsplit('/', 1)[0]}/{name}"):
                        _get_tree(fs, sibling, Path(local[key]).parent / name, ())
        yield local
    finally:
        _remove(folder)


def _remove(folder: Path) -> None:
    """A scratch folder, and its parent (``runs/``, ``inputs/``) once no other program uses it."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: another program's folder is there
        folder.parent.rmdir()


def _get_tree(fs, path: str, local: Path, exclude: Sequence[str]) -> None:
    """Copy a lake folder; each copy keeps its object's modification time, so a program's cache key
    of size and mtime (``feature_io.media_fingerprint``) stays the same from one copy to the next."""
    for key, info in fs.find(path, detail=True).items():
        rel = key[len(path) + 1:]
        if rel.split("/", 1)[0] not in exclude:
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(key, str(target))
            if (modified := _modified(info)) is not None:
                os.utime(target, ns=(modified, modified))


def _modified(info: dict) -> int | None:
    """An fsspec listing entry's modification time in ns (s3fs: LastModified; local: mtime; gcsfs:
    updated; memory: created, its objects being written whole)."""
    value = info.get("LastModified") or info.get("mtime") or info.get("updated") or info.get("created")
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    seconds = value.timestamp() if hasattr(value, "timestamp") else float(value)
    return int(seconds * 1e9)
