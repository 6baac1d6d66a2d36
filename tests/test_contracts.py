"""The contracts between the pipeline and the training programs are defined once, in
``lcaffect_ml.contracts``, and both sides agree with them (docs/ARCHITECTURE.md, "Contracts")."""

from __future__ import annotations

import hashlib

from lcaffect_ml.contracts import hashing
from lcaffect_ml import pipes
from lcaffect_pipeline import lake


def test_one_hash_convention_long_and_short(tmp_path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # over one read chunk
    path.write_bytes(data)
    full = hashlib.sha256(data).hexdigest()
    assert hashing.sha256_file(path) == full == hashing.sha256_bytes(data)
    assert pipes.sha256_file is hashing.sha256_file  # the Pipes data version is the same digest
    # The lake's short hash keeps its stored format (32 hex) and is a prefix of the full digest.
    assert lake.file_hash(path) == full[:32] == hashing.file_hash(str(path))
    assert hashing.sha256_file(lake.as_path(path)) == full  # a universal_pathlib path opens through .open
