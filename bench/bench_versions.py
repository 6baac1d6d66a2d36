"""What versioned tables cost against the unversioned per-video Parquet files they replaced.

    python bench/bench_versions.py [--videos 2000] [--rows 200] [--refresh 20] [--refreshes 5]

For a corpus of ``--videos`` videos of ``--rows`` comments each, it times, in one run on the
same machine:

  baseline  every video's Parquet written in place (lake.write_parquet, the layout before
            versions), then ``--refreshes`` refreshes that rewrite ``--refresh`` videos each
  versioned the same files content-addressed (tables.write) and one Delta commit per run
            (tables.commit), so every refresh is a new version
  listing   the current version's file list (what DuckDB and the checks read) after the
            refreshes, against a glob of the unversioned folder

and prints each time and the ratio versioned / baseline (target: the first load <= 1.3x, a
refresh <= 2x: a refresh of a few videos is dominated by the commit, which reads the log once).
Each figure is the best of ``--repeat``; the machine may be shared, so the ratios are what counts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datetime as dt  # noqa: E402

import pyarrow as pa  # noqa: E402

from lcaffect_pipeline import lake, schema, tables  # noqa: E402


def comments(vid: str, rows: int, salt: int) -> pa.Table:
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    return pa.Table.from_pylist([dict(platform="bilibili", video_id=vid, comment_id=f"{salt}-{i}", offset_ms=100 * i,
                                      text=f"评论 {salt} {i}", mode="scroll", superchat=False, source_file="f",
                                      posted_at=t0, language="zh") for i in range(rows)],
                                schema=schema.CLEAN_COMMENTS_SCHEMA)


def baseline(root: Path, data: dict[str, pa.Table], refreshes: list[dict[str, pa.Table]]) -> tuple[float, float]:
    start = time.perf_counter()
    for vid, table in data.items():
        lake.write_parquet(table, lake.under(root, "clean_comments", "bilibili", vid, ext=".parquet"))
    load = time.perf_counter() - start
    start = time.perf_counter()
    for batch in refreshes:
        for vid, table in batch.items():
            lake.write_parquet(table, lake.under(root, "clean_comments", "bilibili", vid, ext=".parquet"))
    return load, (time.perf_counter() - start) / len(refreshes)


def versioned(root: Path, data: dict[str, pa.Table], refreshes: list[dict[str, pa.Table]]) -> tuple[float, float]:
    start = time.perf_counter()
    tables.commit(root, "clean_comments", {vid: tables.write(root, "clean_comments", t, vid) for vid, t in data.items()},
                  rows={vid: t.num_rows for vid, t in data.items()})  # as the collect step passes them
    load = time.perf_counter() - start
    start = time.perf_counter()
    for batch in refreshes:
        tables.commit(root, "clean_comments", {vid: tables.write(root, "clean_comments", t, vid) for vid, t in batch.items()},
                      rows={vid: t.num_rows for vid, t in batch.items()})
    return load, (time.perf_counter() - start) / len(refreshes)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--refresh", type=int, default=20)
    ap.add_argument("--refreshes", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = {f"BV{i:08d}": comments(f"BV{i:08d}", args.rows, 0) for i in range(args.videos)}
    refreshes = [{vid: comments(vid, args.rows + 1, r + 1) for vid in list(data)[r * args.refresh:(r + 1) * args.refresh]}
                 for r in range(args.refreshes)]
    results = {"baseline": [], "versioned": []}
    for _ in range(args.repeat):  # interleaved, fresh folders each time
        for name, fn in (("baseline", baseline), ("versioned", versioned)):
            with tempfile.TemporaryDirectory() as tmp:
                results[name].append(fn(Path(tmp), data, refreshes))
                if name == "versioned":
                    root = Path(tmp)
                    listing = best(lambda: tables.files(root, "clean_comments"), args.repeat)
                else:
                    root = Path(tmp)
                    globbing = best(lambda: sorted((root / "clean_comments").glob("*/*.parquet")), args.repeat)
    load = {k: min(v[0] for v in r) for k, r in results.items()}
    refresh = {k: min(v[1] for v in r) for k, r in results.items()}
    print(f"{args.videos} videos x {args.rows} comments; {args.refreshes} refreshes of {args.refresh} videos")
    print(f"first load   baseline {load['baseline']:.2f} s   versioned {load['versioned']:.2f} s   "
          f"ratio {load['versioned'] / load['baseline']:.2f}x")
    print(f"one refresh  baseline {refresh['baseline'] * 1000:.0f} ms   versioned {refresh['versioned'] * 1000:.0f} ms   "
          f"ratio {refresh['versioned'] / refresh['baseline']:.2f}x")
    print(f"file list    glob {globbing * 1000:.0f} ms   current version {listing * 1000:.0f} ms   "
          f"ratio {listing / globbing:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
