"""Orchestration cost at corpus scale: ``corpus_job`` over N local comment files against the same
parse and clean in one plain Python process, in the same run.

N copies of a real Bilibili XML (``../shared/fixtures/bilibili/xml/2170097.xml``, 973 comments;
each copy gets its own video id) are catalogued as local sources, then:

1. in-process: ``read_comments`` + ``clean_comments`` over every file, one process (the work);
2. ``dagster job execute -j corpus_job`` from the shell, the multiprocess executor, a fresh
   ``DAGSTER_HOME`` (the real machinery a user runs);
3. the same command again with nothing changed (the no-op refresh).

Prints both times and their ratio, the no-op time, the peak memory (largest process of the job)
and the size of Dagster's event log. Targets: job <= 2 x in-process + 30 s; no-op <= 30 s.

    python bench/bench_scale.py [--n 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURE = ROOT.parent / "shared" / "fixtures" / "bilibili" / "xml" / "2170097.xml"
CODE_LOCATION = ["-m", "lcaffect_pipeline.definitions"]


def make_corpus(folder: Path, n: int) -> Path:
    data = FIXTURE.read_bytes()
    (folder / "comments").mkdir(parents=True)
    lines = ["video_id,platform,source,language"]
    for i in range(n):
        path = folder / "comments" / f"v{i:05d}.xml"
        path.write_bytes(data)
        lines.append(f"v{i:05d},bilibili,{path},zh")
    catalogue = folder / "catalogue.csv"
    catalogue.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return catalogue


def in_process(folder: Path, n: int) -> float:
    from lcaffect_pipeline.cleaning import clean_comments
    from lcaffect_pipeline.formats import read_comments

    t0 = time.perf_counter()
    for i in range(n):
        raw = read_comments(folder / "comments" / f"v{i:05d}.xml", platform="bilibili", video_id=f"v{i:05d}",
                            author_salt="bench")
        clean_comments(raw)
    return time.perf_counter() - t0


def run_job(config: Path, home: Path) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).parent / "dagster"), "job", "execute", *CODE_LOCATION, "-j", "corpus_job",
           "-c", str(config)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"corpus_job failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--spawn", action="store_true", help="steps spawned, not forked (the executor's old default)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if not FIXTURE.is_file():
        sys.exit(f"{FIXTURE} is absent (../shared/fixtures)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        catalogue = make_corpus(folder, args.n)
        work = in_process(folder, args.n)
        home = folder / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        config = folder / "run.yaml"
        config.write_text(json.dumps({"resources": {
            "catalogue": {"config": {"path": str(catalogue)}},
            "lake": {"config": {"root": str(folder / "lake"), "author_salt": "bench"}},
            "crawler": {"config": {"min_interval_s": 0.0}}},
            **({"execution": {"config": {"multiprocess": {"forkserver": False}}}} if args.spawn else {})}))
        first = run_job(config, home)
        noop = run_job(config, home)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        events_mib = folder_mib(home / "storage") if (home / "storage").exists() else folder_mib(home)
    result = {"videos": args.n, "in_process_s": work, "job_s": first, "ratio": first / work, "noop_s": noop,
              "target_job_s": 2 * work + 30, "peak_rss_mib": peak_mib, "event_log_mib": events_mib}
    print(f"{args.n} videos: in-process parse+clean {work:.1f} s; corpus_job {first:.1f} s ({first / work:.2f}x; "
          f"target <= 2x + 30 s = {2 * work + 30:.0f} s); no-op re-run {noop:.1f} s (target <= 30 s); "
          f"peak RSS {peak_mib:.0f} MiB; event log {events_mib:.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
