"""Start the project's throw-away servers (scripts/postgres_server.sh, scripts/s3_server.sh) for
a test session and stop them afterwards.

Each script runs in the foreground and writes STATE_DIR/env.sh once its server is ready; this
helper waits for that file, parses the exported variables and, at the end, sends SIGTERM (the
script's trap stops the server and deletes its state). Where a server cannot start, the test
is skipped with the reason, except under CI (the CI variable set), where it fails: CI installs
both servers (scripts/install.sh), so a missing one is a broken machine, not an excuse.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORT = re.compile(r"^export (\w+)=(.*)$")


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the server must run here; see scripts/install.sh)")
    pytest.skip(reason)


def require_module(name: str):
    """Import a module the servers' clients need (installed by scripts/install.sh)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        unavailable(f"{name} is not installed ({e}); run scripts/install.sh")


def read_env(path: Path) -> dict[str, str]:
    return {m[1]: m[2] for line in path.read_text().splitlines() if (m := EXPORT.match(line))}


@contextmanager
def running(script: str, timeout_s: float = 120, state: Path | None = None) -> Iterator[dict[str, str]]:
    """Run scripts/SCRIPT until the context ends; yield the variables it exported. Its state
    folder is ``state`` (a new temporary one by default), its output ``state``.log (mode 600)."""
    state = state or Path(tempfile.mkdtemp(prefix=Path(script).stem + "-"))
    log = state.with_suffix(".log")
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / script), str(state)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not (state / "env.sh").is_file():
            if proc.poll() is not None:
                unavailable(f"scripts/{script} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                unavailable(f"scripts/{script} not ready after {timeout_s:.0f} s: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield read_env(state / "env.sh")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever the script left in its session (a server it could not stop) goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(state, ignore_errors=True)
        log.unlink(missing_ok=True)
