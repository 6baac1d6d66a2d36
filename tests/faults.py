"""Fault injection for tests only: run a training program with a crash or a NaN loss injected.

    python tests/faults.py [--kill-after-step N] [--nan-at-step K] MODULE [program args ...]

runs ``python -m MODULE program args ...`` with ``lcaffect_ml.trainutil``'s fault-injection
points replaced: the process SIGKILLs itself (a crash, not a clean exit) right after its N-th
optimiser step (counted over every run in the process, so a fusion program with several seeds
dies inside a later run), and/or the loss of step K is multiplied by NaN. In-process tests use
``inject(monkeypatch, ...)``. The shipped programs have no such flag or option.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install(trainutil, kill_after_step: int | None = None, nan_at_step: int | None = None, setattr_=setattr) -> None:
    """Replace the fault-injection points of ``trainutil`` (through ``setattr_``)."""
    taken = [0]

    def after_optimizer_step(step: int) -> None:
        taken[0] += 1
        if kill_after_step is not None and taken[0] >= kill_after_step:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def loss_hook(loss, step: int):
        return loss * float("nan") if nan_at_step is not None and step == nan_at_step else loss

    setattr_(trainutil, "after_optimizer_step", after_optimizer_step)
    setattr_(trainutil, "loss_hook", loss_hook)


def inject(monkeypatch, **faults) -> None:
    """In-process: the same faults, undone at the end of the test."""
    from lcaffect_ml import trainutil

    install(trainutil, setattr_=monkeypatch.setattr, **faults)


def command(module: str, *, kill_after_step: int | None = None, nan_at_step: int | None = None) -> list[str]:
    """The command line that runs ``module`` with those faults (append the program's arguments)."""
    cmd = [sys.executable, str(Path(__file__).resolve())]
    if kill_after_step is not None:
        cmd += ["--kill-after-step", str(kill_after_step)]
    if nan_at_step is not None:
        cmd += ["--nan-at-step", str(nan_at_step)]
    return [*cmd, module]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--nan-at-step", type=int)
    parser.add_argument("module")
    args, rest = parser.parse_known_args(argv)
    sys.path.insert(0, str(ROOT))
    from lcaffect_ml import trainutil

    install(trainutil, kill_after_step=args.kill_after_step, nan_at_step=args.nan_at_step)
    sys.argv = [args.module, *rest]
    runpy.run_module(args.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
