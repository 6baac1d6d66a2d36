"""Faults (slow part): SIGKILL in the middle of writing Parquet, shards and checkpoints.

A child process writes the same deterministic content over and over; the test kills it with
SIGKILL after random short delays, then checks that every file under a final name reads back
completely, and that a re-run finishes with exactly the content of a clean run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT

CHILD = r'''
import sys, json
from pathlib import Path
import numpy as np, pyarrow as pa, torch
from lcaffect_pipeline import lake
from lcaffect_pipeline.shards import write_shard_stream
from lcaffect_ml.trainutil import CheckpointManager, save_state, COMPLETE_MARKER

out, mode = Path(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
table = pa.table({"text": [rng.bytes(200).hex() for _ in range(20000)], "n": np.arange(20000)})  # ~8 MB
n = 6
segs = pa.table({"video_id": ["v"] * n, "segment_index": list(range(n)), "start_ms": [0] * n, "end_ms": [8000] * n,
                 "comments": [["a"]] * n, "comment_ids": [["1"]] * n, "comment_count": [1] * n,
                 "frame_times_ms": [[0]] * n, "shard": [None] * n, "sample_key": [None] * n})
frames = rng.integers(0, 255, (n, 2, 160, 160, 3), dtype=np.uint8)
weights = {"w": torch.from_numpy(rng.standard_normal(1_000_000).astype("float32"))}

def write_ckpt(folder):
    save_state(folder, "model", weights)
    (folder / COMPLETE_MARKER).write_text(json.dumps({"step": 1}))

def once():
    lake.write_parquet(table, out / "comments.parquet")
    write_shard_stream(segs, zip(frames, [[0]] * n), out / "shards", "v", version="a" * 16, max_shard_bytes=400_000)
    CheckpointManager(out / "ckpt").save(1, write_ckpt)

print("ready", flush=True)
if mode == "loop":
    while True:
        once()
else:
    once()
'''


def _child(out: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out), mode], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _finish(out: Path) -> None:
    proc = _child(out, "once")
    assert proc.wait(timeout=120) == 0


def _check_final_files_complete(out: Path) -> None:
    """Every file under a final (non-temporary) name reads back completely."""
    for path in out.rglob("*"):
        if not path.is_file() or ".tmp-" in str(path.relative_to(out)):
            continue
        if path.suffix == ".parquet":
            assert pq.read_table(path).num_rows == 20000, path
        elif path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    assert len(tar.extractfile(member).read()) == member.size, path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            assert [t.size for t in load_file(str(path)).values()] == [1_000_000], path


def _content(out: Path) -> dict[str, bytes]:
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and ".tmp-" not in str(p.relative_to(out)):
            data = p.read_bytes()
            files[str(p.relative_to(out))] = data.replace(str(out).encode(), b"OUT")  # shard urls are absolute
    return files


@pytest.mark.slow
def test_sigkill_during_parquet_shard_and_checkpoint_writes(tmp_path):
    clean = tmp_path / "clean"
    _finish(clean)
    expected = _content(clean)
    assert {"comments.parquet", f"shards/v/{'a' * 16}/shards.json", "ckpt/step-1/model.safetensors"} <= set(expected)
    rng = random.Random(7)
    victim = tmp_path / "killed"
    kills = 0
    for _ in range(5):
        proc = _child(victim, "loop")
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.5))  # somewhere inside one of the writes
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += proc.returncode == -signal.SIGKILL
        _check_final_files_complete(victim)
    assert kills == 5
    _finish(victim)  # the re-run: temporary leftovers of the killed runs are ignored or cleaned
    _check_final_files_complete(victim)
    assert _content(victim) == expected
