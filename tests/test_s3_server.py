"""The object store the scale-out path runs on: a real SeaweedFS S3 server started by
scripts/s3_server.sh on loopback, driven with s3fs (the lake's fsspec filesystem for s3://).
Skipped with the reason where the server cannot start; a failure under CI.
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlparse

import pytest

from services import require_module, running

MiB = 2**20


@pytest.fixture(scope="module")
def s3():
    s3fs = require_module("s3fs")
    with running("s3_server.sh") as env:
        fs = s3fs.S3FileSystem(endpoint_url=env["LCAFFECT_S3_ENDPOINT"], key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"], skip_instance_cache=True)
        yield fs, env
    url = urlparse(env["LCAFFECT_S3_ENDPOINT"])
    deadline = time.monotonic() + 15  # stopped: nothing listens on its port any more (a busy machine may take a moment)
    while time.monotonic() < deadline:
        try:
            socket.create_connection((url.hostname, url.port), timeout=2).close()
        except OSError:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"something still listens on {url.netloc} 15 s after scripts/s3_server.sh stopped")


def test_put_list_get_round_trip(s3) -> None:
    fs, env = s3
    bucket = env["LCAFFECT_S3_BUCKET"]
    fs.pipe({f"{bucket}/t/a.txt": b"alpha", f"{bucket}/t/sub/b.bin": bytes(range(256))})
    assert sorted(fs.find(f"{bucket}/t")) == [f"{bucket}/t/a.txt", f"{bucket}/t/sub/b.bin"]
    assert fs.cat(f"{bucket}/t/a.txt") == b"alpha"
    assert fs.cat(f"{bucket}/t/sub/b.bin") == bytes(range(256))
    fs.rm(f"{bucket}/t", recursive=True)
    assert not fs.exists(f"{bucket}/t/a.txt")


def test_wrong_secret_is_refused(s3) -> None:
    import s3fs

    fs, env = s3
    intruder = s3fs.S3FileSystem(endpoint_url=env["LCAFFECT_S3_ENDPOINT"], key=env["AWS_ACCESS_KEY_ID"], secret="not-the-secret", skip_instance_cache=True)
    with pytest.raises(PermissionError):
        intruder.pipe(f"{env['LCAFFECT_S3_BUCKET']}/intruder.txt", b"x")
    assert not fs.exists(f"{env['LCAFFECT_S3_BUCKET']}/intruder.txt")


def test_multipart_upload_is_invisible_until_complete(s3) -> None:
    fs, env = s3
    path = f"{env['LCAFFECT_S3_BUCKET']}/big/shard.bin"
    payload = os.urandom(12 * MiB)
    with fs.open(path, "wb", block_size=5 * MiB) as f:  # 5 MiB parts: S3's smallest
        f.write(payload[: 6 * MiB])
        f.flush()  # the first part is uploaded now
        assert f.mpu is not None, "s3fs did not start a multipart upload"
        assert not fs.exists(path), "a part-written object is visible under its final name"
        f.write(payload[6 * MiB :])
    info = fs.info(path)
    assert info["size"] == len(payload)
    assert info["ETag"].strip('"').endswith("-2")  # two parts: the 6 MiB flushed, then the rest
    assert fs.cat(path) == payload
