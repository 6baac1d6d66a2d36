"""The demo's wall time per stage: the README's main job from the shell, then again with nothing
changed.

Runs ``dagster job execute -m lcaffect_pipeline.definitions -j full_pipeline -c configs/demo.yaml``
with a fresh ``DAGSTER_HOME`` and lake (the command a user runs, the multiprocess executor), then
the same command again, and prints each stage's wall time from Dagster's own step records (a
fan-out asset's plan, chunk and collect steps are one stage, from the first start to the last
end), the total of each run and the share of the longest stages. Targets (issue 10): the job
<= 600 s and the no-op re-run <= 120 s on 2 cores.

    python bench/bench_demo.py [--keep DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["-m", "lcaffect_pipeline.definitions", "-j", "full_pipeline", "-c", str(ROOT / "configs" / "demo.yaml")]
TARGETS = {"job_s": 600.0, "rerun_s": 120.0}


def run_job(home: Path, lake: Path) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(home), "LCAFFECT_LAKE": str(lake)}
    dagster = Path(sys.executable).with_name("dagster")
    start = time.perf_counter()
    proc = subprocess.run([str(dagster), "job", "execute", *COMMAND], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"full_pipeline failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return elapsed


def stage_times(home: Path) -> list[dict]:
    """Per run (newest last): each stage's first start, last end and wall time, from the step stats."""
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    runs = []
    for record in reversed(instance.get_run_records(limit=2)):
        stages: dict[str, list[float]] = {}
        for step in instance.get_run_step_stats(record.dagster_run.run_id):
            if step.start_time is None or step.end_time is None:
                continue
            name = step.step_key.split("[")[0].split(".")[0]  # fan-out steps: one stage per asset
            span = stages.setdefault(name, [step.start_time, step.end_time])
            span[0], span[1] = min(span[0], step.start_time), max(span[1], step.end_time)
        t0 = min(s for s, _ in stages.values())
        runs.append({name: {"start_s": s - t0, "wall_s": e - s} for name, (s, e) in sorted(stages.items(), key=lambda kv: kv[1][0])})
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-demo-"))
    home, lake = work / "dagster_home", work / "lake"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    try:
        job_s = run_job(home, lake)
        rerun_s = run_job(home, lake)
        first, again = stage_times(home)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'stage':40s} {'start s':>8s} {'wall s':>8s}   re-run wall s")
    for name, t in first.items():
        print(f"{name:40s} {t['start_s']:8.1f} {t['wall_s']:8.1f}   {again.get(name, {}).get('wall_s', float('nan')):8.1f}")
    print(f"\nfull_pipeline: {job_s:.1f} s (target <= {TARGETS['job_s']:.0f}); "
          f"re-run with nothing changed: {rerun_s:.1f} s (target <= {TARGETS['rerun_s']:.0f}); cpus {os.cpu_count()}")
    if args.json:
        args.json.write_text(json.dumps({"job_s": job_s, "rerun_s": rerun_s, "stages": first, "rerun_stages": again,
                                         "targets": TARGETS, "cpus": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
