"""What a test may skip, and where: a pytest plugin loaded by tests/conftest.py.

A test that needs ffmpeg, ../shared (the real fixtures) or a test extra is not optional: in CI
(``CI`` set in the environment, as every CI service does) such a test fails instead of skipping,
and any skip other than a declared optional extra fails the session. In a user's clone the same
tests skip, and the run ends by saying plainly what it did not run and why.
"""

from __future__ import annotations

import os

import pytest

# What a test may skip without, even in CI: a phrase of the skip reason -> why that is optional.
OPTIONAL = {
    "could not import 'ptars'": "ptars only speeds up protobuf decoding; the protobuf runtime path is tested anyway",
    "pip install .[scale]": "the declared `scale` extra (dagster-postgres, dagster-k8s)",
    "no mount command": "a real full tmpfs needs root; the simulated ENOSPC tests cover the same contract",
    "cannot mount a small tmpfs": "a real full tmpfs needs root; the simulated ENOSPC tests cover the same contract",
}

_skipped: list[tuple[str, str]] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str) -> None:
    """A required tool or file is absent: fail in CI, skip (with the reason) elsewhere."""
    if in_ci():
        pytest.fail(f"{reason}; CI must provide it (only declared optional extras may skip)", pytrace=False)
    pytest.skip(reason)


def allowed_in_ci(reason: str) -> bool:
    return any(phrase in reason for phrase in OPTIONAL)


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append((report.nodeid, _reason(report)))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _skipped:
        return
    terminalreporter.section("not run here")
    for nodeid, reason in _skipped:
        terminalreporter.write_line(f"SKIPPED {nodeid}: {reason}")
    if in_ci():
        bad = [n for n, r in _skipped if not allowed_in_ci(r)]
        if bad:
            terminalreporter.write_line(f"CI: {len(bad)} test(s) skipped for something CI must provide: the session fails")
    else:
        terminalreporter.write_line(f"{len(_skipped)} test(s) did not run here (reasons above); in CI only declared optional extras may skip")


def pytest_sessionfinish(session, exitstatus) -> None:
    if in_ci() and any(not allowed_in_ci(r) for _, r in _skipped) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
