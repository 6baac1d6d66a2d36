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
from pathlib import Path
from typing import IO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from lcaffect_ml.atomic import (STALE_UNOWNED_S, atomic_file, process_alive,  # noqa: F401  (the lake's names)
                               sweep_stale_temps, temp_path)
from lcaffect_ml.contracts import hashing
from lcaffect_ml.contracts.naming import HASH_LEN, MAX_NAME, MAX_STEM, safe_name  # noqa: F401  (the lake's names)

class LakePathError(ValueError):
    """A path built from outside input would leave the lake root."""


def as_path(root: str | os.PathLike) -> UPath:
    return root if isinstance(root, UPath) else UPath(root)


def is_local(path: UPath) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


class RemoteLakeError(ValueError):
    """A stage that needs local files was given a lake on an object store."""


def local_path(path: str | os.PathLike, needed_by: str) -> Path:
    """``path`` as a local ``pathlib.Path``, for the stages that still need local files (DuckDB's
    database file, ffmpeg, the downstream folders). A remote lake is refused with the reason:
    ``Path("s3://bucket/x")`` would silently become a local folder named ``s3:``."""
    upath = as_path(path)
    if not is_local(upath):
        raise RemoteLakeError(f"{path}: {needed_by} needs the lake on a local or mounted file system; "
                              f"a {upath.protocol}:// lake is not supported there yet (README, \"Operating at scale\")")
    return Path(upath.path if getattr(upath, "protocol", "") else str(upath))


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
        with path.open(mode) as fh:
            yield fh
        return
    with atomic_file(Path(str(path)), keep_suffix=False) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()


def publish_file(src: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a finished local file to its final place atomically (copy through atomic_write remotely)."""
    if is_local(as_path(final)):
        Path(str(final)).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, str(final))
        return
    with open(src, "rb") as fin, atomic_write(final, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


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
    return table.cast(schema) if schema is not None else table


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
