"""CI fails when a test skips for ffmpeg, ../shared or a test extra; a user's clone says what it skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
import skip_policy

TESTS = Path(__file__).resolve().parent

INNER = '''
import pytest
from conftest import fixture_path, need_ffmpeg

def test_needs_shared():
    fixture_path("no-such-fixture", "x.xml")

def test_needs_a_tool():
    need_ffmpeg()

def test_optional_extra():
    pytest.importorskip("ptars")  # declared optional: skips (or runs) even in CI

def test_plain_skip():
    pytest.skip("some other reason")

def test_passes():
    assert True
'''


def _run_inner(tmp_path: Path, ci: bool, select: str = "") -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = "/nonexistent"  # no ffmpeg on this PATH
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", "--rootdir", str(tmp_path),
            "-c", os.devnull, str(tmp_path / "test_inner.py")] + (["-k", select] if select else [])
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_users_clone_skips_and_says_what_it_did_not_run(tmp_path):
    proc = _run_inner(tmp_path, ci=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "not run here" in proc.stdout
    assert "test_needs_shared: shared fixture" in proc.stdout and "no-such-fixture" in proc.stdout
    assert "test_needs_a_tool: ffmpeg/ffprobe not installed" in proc.stdout
    assert "test(s) did not run here" in proc.stdout


def test_ci_fails_a_test_that_needs_shared_or_ffmpeg(tmp_path):
    proc = _run_inner(tmp_path, ci=True, select="needs")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "2 failed" in proc.stdout and "CI must provide it" in proc.stdout


def test_ci_fails_the_session_on_an_undeclared_skip_but_not_on_a_declared_extra(tmp_path):
    plain = _run_inner(tmp_path, ci=True, select="plain_skip or passes")
    assert plain.returncode == 1 and "skipped for something CI must provide" in plain.stdout, plain.stdout[-3000:]
    extra = _run_inner(tmp_path, ci=True, select="optional_extra or passes")
    assert extra.returncode == 0, extra.stdout[-3000:]
    assert skip_policy.allowed_in_ci("could not import 'ptars': No module named 'ptars'")
    assert skip_policy.allowed_in_ci("dagster-k8s not installed (pip install .[scale])")
    assert not skip_policy.allowed_in_ci("could not import 'playwright.sync_api'")


def test_fixture_path_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must provide it"):
        conftest.fixture_path("no-such-fixture")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        conftest.fixture_path("no-such-fixture")
