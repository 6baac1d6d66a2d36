"""The lake: one root folder (or fsspec URL), safe names, atomic writes, content hashes.

Every file the pipeline writes goes through ``atomic_write``: it is written under a hidden
temporary name in the same folder and renamed into place, so a reader (or a crashed run)
never sees a half-written file under its final name. On object stores a single PUT is
already atomic, so the temporary step is skipped there. Local files go through
``lcaffect_ml.atomic`` (the one atomic-write helper, which the training programs use too): a
temporary name carries its writer (host and process id), so the next write into the folder
removes what a killed run left.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator, Sequence


import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from lcaffect_ml.atomic import atomic_file
from lcaffect_ml.contracts import hashing
from lcaffect_ml.contracts.naming import safe_name


class LakePathError(ValueError):
    """A path built from outside input would leave the lake root."""


# An object store that refuses connections for a while (a restart, a failover) is waited for:
# s3fs retries its retryable errors with back-off (0.1 s * 1.7^i, about 30 s over 10 tries); a
# refused connection is not one of them by default.
OBJECT_STORE_RETRIES = 10
try:
    import botocore.exceptions
    import s3fs.core

    s3fs.core.S3FileSystem.retries = max(s3fs.core.S3FileSystem.retries, OBJECT_STORE_RETRIES)
    s3fs.core.add_retryable_error(botocore.exceptions.EndpointConnectionError)
except ImportError:  # s3fs is optional (pip install .[scale])
    pass


def as_path(root: str | os.PathLike) -> UPath:
    return root if isinstance(root, UPath) else UPath(root)


def is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def is_store_url(text: str | os.PathLike) -> bool:
    """An fsspec URL of a file store (``s3://``, ``gs://``, ``memory://``): read as a file, unlike
    a web page (``http(s)://``, fetched) or a local path."""
    text = str(text)
    return "://" in text and text.split("://", 1)[0].lower() not in ("http", "https", "file")


def source_path(source: str | os.PathLike) -> UPath:
    """A catalogue's local path (``~`` and ``file://`` allowed) or file-store URL, as a path."""
    text = str(source)
    return as_path(text) if is_store_url(text) else as_path(Path(text.removeprefix("file://")).expanduser())


class RemoteLakeError(ValueError):
    """A stage that needs local files was given a lake on an object store."""


def local_path(path: str | os.PathLike, needed_by: str) -> Path:
    """``path`` as a local ``pathlib.Path``, where something truly needs the lake's own local
    file (not a copy: ``local_copy``, ``scratch``). A remote lake is refused with the reason:
    ``Path("s3://bucket/x")`` would silently become a local folder named ``s3:``."""
    upath = as_path(path)
    if not is_local(upath):
        raise RemoteLakeError(f"{path}: {needed_by} needs a local or mounted file system, "
                              f"not a {upath.protocol}:// URL (docs/OPERATIONS.md)")
    return Path(upath.path if getattr(upath, "protocol", "") else str(upath))


# ---------------------------------------------------------------- local scratch for local-only tools


def scratch_root() -> Path:
    """Where tools that need local files work (``$LCAFFECT_SCRATCH``, else the system's temp
    folder): a cache, never the lake; what is there is removed after use."""
    return Path(os.environ.get("LCAFFECT_SCRATCH") or Path(tempfile.gettempdir()) / "lcaffect-scratch")


def check_not_scratch(root: str | os.PathLike) -> None:
    """A lake inside the scratch folder would be deleted by the next clean-up: refuse it."""
    upath = as_path(root)
    if is_local(upath):
        here, scratch_dir = local_path(upath, "the lake").resolve(), scratch_root().resolve()
        if here == scratch_dir or scratch_dir in here.parents:
            raise LakePathError(f"{root}: the lake cannot live in the scratch folder {scratch_dir} ($LCAFFECT_SCRATCH)")


@contextlib.contextmanager
def scratch(needed_by: str, key: str | None = None) -> Iterator[Path]:
    """A local working folder for ``needed_by`` (ffmpeg, DuckDB, a training program), removed
    when the block ends. With ``key`` the folder is named by it and kept when the block fails,
    so a retry of the same work (a training run) resumes where it stopped."""
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    if key is None:
        folder = Path(tempfile.mkdtemp(prefix=safe_name(needed_by)[:40] + "-", dir=root))
    else:
        folder = root / safe_name(key)
        folder.mkdir(exist_ok=True)
    try:
        yield folder
    except BaseException:
        if key is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_copy(path: str | os.PathLike, needed_by: str) -> Iterator[Path]:
    """A local file with ``path``'s content for a tool that opens only local files (ffprobe,
    ffmpeg, PyAV, decord): the file itself in a local lake, else a copy in scratch, removed after."""
    upath = as_path(path)
    if is_local(upath):
        yield local_path(upath, needed_by)
        return
    with scratch(needed_by) as folder:
        dest = folder / upath.name
        upath.fs.get_file(upath.path, str(dest))
        yield dest


@contextlib.contextmanager
def local_copies(paths: Sequence[str | os.PathLike], needed_by: str) -> Iterator[list[Path]]:
    """``local_copy`` of several files of one folder (their names kept: parsers read them)."""
    if all(is_local(as_path(p)) for p in paths):
        yield [local_path(p, needed_by) for p in paths]
        return
    with scratch(needed_by) as folder:
        out = []
        for p in map(as_path, paths):
            out.append(folder / p.name)
            p.fs.get_file(p.path, str(out[-1]))
        yield out


def upload_tree(local_dir: str | os.PathLike, dest: str | os.PathLike, *, last: Sequence[str] = ()) -> list[str]:
    """Copy a finished local folder to ``dest`` in the lake, each file an atomic write, and the
    files named in ``last`` (relative paths) after every other: a reader that finds them finds
    the whole folder. Returns the relative paths copied."""
    local_dir, dest = Path(local_dir), as_path(dest)
    names = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
    for name in sorted(names, key=lambda n: (n in last, last.index(n) if n in last else 0, n)):
        publish_copy(local_dir / name, dest.joinpath(*name.split("/")))
    return names


@contextlib.contextmanager
def workspace(folder: str | os.PathLike, needed_by: str, *, only: Sequence[str] | None = None,
              last: Sequence[str] = ()) -> Iterator[Path]:
    """A lake folder as a local one, for programs that read and write local files (the training
    programs, media preparation): the folder itself in a local lake. On an object store: a copy
    in a scratch folder named after the folder's URL (the same local path every time, so paths
    written into tables stay valid, and a failed attempt's files stay for its retry), with only
    the top-level names in ``only`` where given; when the block succeeds, its new and changed
    files are uploaded (``last`` after the others: see ``upload_tree``) and the copy removed."""
    upath = as_path(folder)
    if is_local(upath):
        path = local_path(upath, needed_by)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    key = f"{safe_name(upath.name)[:40]}-{hashlib.sha256(str(upath).encode()).hexdigest()[:16]}"
    with scratch(needed_by, key=key) as local:
        if upath.exists():
            download_tree(upath, local, only=only)
        before = _stats(local)
        yield local
        changed = {n for n, st in _stats(local).items() if before.get(n) != st}
        for name in sorted(changed, key=lambda n: (n in last, last.index(n) if n in last else 0, n)):
            publish_copy(local / name, upath.joinpath(*name.split("/")))


@contextlib.contextmanager
def local_tree(folder: str | os.PathLike, needed_by: str, *, only: Sequence[str] | None = None,
               exclude: Sequence[str] = (), key: str | None = None) -> Iterator[Path]:
    """A lake folder to read as a local one: itself in a local lake, else a copy in a scratch
    folder (its top-level names in ``only``, without those in ``exclude``), removed after. With
    ``key`` the copy has the same local path every time (for paths a table records)."""
    upath = as_path(folder)
    if is_local(upath):
        yield local_path(upath, needed_by)
        return
    with scratch(needed_by, key=key) as local:
        download_tree(upath, local, only=only, exclude=exclude)
        yield local


def _stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (st.st_size, st.st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and (st := p.stat())}


def download_tree(src: str | os.PathLike, local_dir: str | os.PathLike, *, only: Sequence[str] | None = None,
                  exclude: Sequence[str] = ()) -> None:
    """Copy a lake folder to a local one (its top-level names in ``only`` where given, not those in ``exclude``)."""
    src, local_dir = as_path(src), Path(local_dir)
    for path in src.rglob("*"):
        if path.is_file():
            rel = path.relative_to(src).as_posix() if is_local(src) else path.path[len(src.path.rstrip("/")) + 1:]
            top = rel.split("/", 1)[0]
            if (only is not None and top not in only) or top in exclude:
                continue
            target = local_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)


def under(root: str | os.PathLike, *parts: str, ext: str = "") -> UPath:
    """``root / parts`` with each part made safe (``ext`` after the last), kept under ``root``.

    ``under(root, "raw_comments", platform, video_id, ext=".parquet")``: the extension is
    never part of the id, so the name is ``safe_name(video_id) + ".parquet"``.
    """
    root_p = as_path(root)
    names = [safe_name(p) for p in parts]
    if ext:
        names[-1] = safe_name(parts[-1], ext)
    path = root_p.joinpath(*names)
    if is_local(root_p):
        base = local_path(root_p, "the lake").resolve()
        resolved = local_path(path, "the lake").resolve()
        if base != resolved and base not in resolved.parents:
            raise LakePathError(f"{path} escapes the lake root {root_p}")
    return path


# ---------------------------------------------------------------- temporaries


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing; it appears under its name only when the block succeeds."""
    path = as_path(path)
    if not is_local(path):
        # Written locally first and PUT (one object, or a multipart upload completed at the end)
        # only when the block succeeded: an object-store file closed after an error would upload
        # what was written so far under the final name.
        with scratch("an object-store write") as folder:
            tmp = folder / path.name
            with open(tmp, mode) as fh:
                yield fh
            path.fs.put_file(str(tmp), path.path)
        return
    with atomic_file(local_path(path, "an atomic write"), keep_suffix=False) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()


def publish_file(src: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a finished local file to its final place atomically (a PUT of a copy remotely)."""
    if is_local(as_path(final)):
        final = local_path(final, "a local move")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, final)
        return
    publish_copy(src, final)


def publish_copy(src: str | os.PathLike, final: str | os.PathLike) -> None:
    """Copy a finished local file to its final place in the lake atomically (the source stays)."""
    final = as_path(final)
    if is_local(final):
        with open(src, "rb") as fin, atomic_write(final, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    else:
        final.fs.put_file(str(src), final.path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_parquet(table: pa.Table, path: str | os.PathLike, **kwargs) -> str:
    """Write ``table`` atomically as Parquet (zstd) and return its content hash."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=kwargs.pop("compression", "zstd"), **kwargs)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return table_hash(table)


def read_parquet(path: str | os.PathLike, schema: pa.Schema | None = None) -> pa.Table:
    path = as_path(path)
    with path.open("rb") as fh:
        table = pq.read_table(fh)
    if schema is None:
        return table
    for f in schema:  # a file written before a nullable column was added reads it as nulls
        if f.nullable and f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)


def table_hash(table: pa.Table) -> str:
    """A content hash of a table's rows and schema (independent of Parquet encoding details)."""
    h = hashlib.sha256(str(table.schema.remove_metadata()).encode())
    for batch in table.combine_chunks().to_batches():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        h.update(sink.getvalue().to_pybytes())
    return hashing.short_hash(h.hexdigest())


def file_hash(path: str | os.PathLike) -> str:
    """The short (32 hex) content hash of a file: a prefix of its SHA-256 (``lcaffect_ml.contracts.hashing``)."""
    return hashing.file_hash(as_path(path))


def combine_hashes(hashes: dict[str, str]) -> str:
    """One hash for a set of named parts (order-independent): a data version for a collection."""
    h = hashlib.sha256()
    for key in sorted(hashes):
        h.update(f"{key}={hashes[key]}\n".encode())
    return hashing.short_hash(h.hexdigest())
