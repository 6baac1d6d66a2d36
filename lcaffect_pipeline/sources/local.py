"""A local comment file or folder as a source: copied into the lake like a fetched one. A file
store's URL (``s3://bucket/comments/x.xml``) is one too.

A file is copied as it is; a folder contributes its visible top-level files (sub-folders and
dot-files are not comment files). The copy gets the same manifest as a web source, so the rest
of the pipeline never needs to know where the comments came from.

Unlike a web source (complete until a refresh), a local one is checked on every run, since that
costs nothing: the manifest keeps each file's size and modification time, and when any of them
differs (or a file came or went) the files are copied again. ``SourceFolder.commit`` compares
contents by sha256, so a file that was only touched leaves the data version alone.
"""

from __future__ import annotations

from pathlib import Path

from lcaffect_pipeline import lake
from lcaffect_pipeline.sources.folder import MANIFEST, FetchResult, SourceFolder


def local_files(source: str | Path) -> list:
    """The files a local source contributes; ValueError naming the path if there are none."""
    path = lake.source_path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST)
    if not files:
        raise ValueError(f"{path}: the folder holds no comment files")
    return files


def local_video_id(source: str | Path) -> str:
    """``2170097`` for ``…/2170097.xml`` (the name before its first dot), or the folder's name."""
    path = lake.source_path(source)
    return path.name.split(".")[0] if path.is_file() else path.name


def _stats(files: list) -> dict[str, list[int]]:
    """``{name: [size, mtime_ns]}``: what tells a changed local file without reading it."""
    return {p.name: [(st := p.stat()).st_size, st.st_mtime_ns] for p in files}


def fetch_local(
    source: str | Path,
    dest_dir: str | Path,
    *,
    refresh: bool = False,
    platform: str = "local",
    video_id: str | None = None,
) -> FetchResult:
    folder = SourceFolder(dest_dir)
    files = local_files(source)
    path = lake.source_path(source)
    where = str(path.resolve() if lake.is_local(path) else path)
    stats = _stats(files)  # taken before reading: a write after this shows on the next run
    done = folder.completed()
    if not refresh and done and (done.metadata.get("source_path"), done.metadata.get("source_stats")) == (where, stats):
        return done
    folder.begin(reuse=False)  # copying is cheap and local: always from scratch
    for path in files:
        folder.stage(path.name, path.read_bytes())
    metadata = {
        "source_path": where,
        "comment_source": "local",
        "source_stats": stats,
    }
    return folder.commit(
        [p.name for p in files],
        platform=platform,
        video_id=video_id or local_video_id(source),
        source=str(source),
        metadata=metadata,
    )


__all__ = ["fetch_local", "local_files", "local_video_id"]
