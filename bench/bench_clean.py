"""Benchmark: clean N generated live comments (default 10,000,000) from Parquet to Parquet.

    python bench/bench_clean.py [--n 10000000] [--workdir DIR] [--keep]

Generates a raw comments Parquet file with what real danmaku has (comment walls of repeated
lines, laughs of every length, traditional characters, full-width forms, control characters,
code comments, low weights, duplicated ids; rows grouped by video, a video's rows spread over
several record batches), then runs, each in its own process so that peak RSS is its own:

- baseline: DuckDB ``COPY (SELECT DISTINCT platform, video_id, text FROM raw) TO parquet``,
  one plain de-duplicating pass over the same file;
- clean: ``lcaffect_pipeline.cleaning.clean_parquet`` with the default config.

Prints wall and CPU seconds and comments/s for both, the ratios, peak RSS of the cleaning process (target < 2 GiB) and
the per-filter drop counts.
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

PER_VIDEO = 3000  # comments per video
VIDEO_MS = 20 * 60 * 1000  # a 20-minute video
BATCH = 200_000

HEAD = [  # comment-wall lines and stock phrases; traditional variants on purpose
    "前方高能", "前方高能預警", "awsl", "AWSL", "泪目", "淚目", "好耶", "草", "来了来了", "來了來了", "爷青回", "爺青回",
    "名场面", "名場面", "这个视频太好看了", "這個視頻太好看了", "打卡", "第一", "下次一定", "三连了", "三連了", "妈妈问我为什么跪着看",
    "媽媽問我為什麼跪著看", "你指尖跃动的电光，是我此生不变的信仰", "你指尖躍動的電光，是我此生不變的信仰", "空降成功", "高能预警",
    "我永远喜欢御坂美琴", "我永遠喜歡御坂美琴", "哈哈哈", "？？？", "!!!", "好听", "好聽", "再来一遍", "再來一遍", "笑死",
    "草生える", "かわいい", "すごい", "神回", "lol", "this is so good", "Hello, World", "hello world!!", "8888888",
]
WORDS = list(
    "的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多然于心学么之都好看起发当没成只如事把还用第样道想作种开美总从无情己面最女但现前些所同日手又行意动方期它头经长儿回位分爱老因很给名法间斯知世什两次使身者被高已亲其进此话常与活正感"
    "這個們來時為說國後會過對沒現動開發與氣電視頻聽愛樂網"
) + ["哈哈", "2333", "www", "ＯＫ", "ｗｗｗ", "！", "？", "……", "　"]


def generate(path: Path, n: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lcaffect_pipeline.schema import COMMENTS_SCHEMA

    rng = np.random.default_rng(seed)
    head = np.array(HEAD, dtype=object)
    zipf_p = 1.0 / np.arange(1, len(HEAD) + 1)
    zipf_p /= zipf_p.sum()
    laughs = ["哈" * k for k in range(2, 16)] + ["2" + "3" * k for k in range(2, 16)] + ["w" * k for k in range(2, 12)] + ["ｗ" * k for k in range(2, 12)]
    with pq.ParquetWriter(path, COMMENTS_SCHEMA, compression="zstd") as writer:
        for start in range(0, n, BATCH):
            m = min(BATCH, n - start)
            i = np.arange(start, start + m)
            kind = rng.random(m)
            text = np.empty(m, dtype=object)
            hd = kind < 0.40
            text[hd] = head[rng.choice(len(HEAD), size=int(hd.sum()), p=zipf_p)]
            lg = (kind >= 0.40) & (kind < 0.50)
            text[lg] = [laughs[j] for j in rng.integers(0, len(laughs), int(lg.sum()))]
            tail = np.flatnonzero(kind >= 0.50)
            lengths = rng.integers(2, 12, tail.size)
            words = rng.integers(0, len(WORDS), int(lengths.sum()))
            pos = 0
            for j, k in zip(tail.tolist(), lengths.tolist()):
                text[j] = "".join(WORDS[w] for w in words[pos : pos + k].tolist())
                pos += k
            noisy = rng.random(m) < 0.02
            text[noisy] = [t + "\n" + t if r < 0.5 else "\u3000" + t + "\x00" for t, r in zip(text[noisy], rng.random(int(noisy.sum())))]
            mode = np.where(rng.random(m) < 0.002, "code", np.where(rng.random(m) < 0.01, "positioned", "scroll"))
            weight = rng.integers(1, 12, m).astype(np.int32)
            weight[rng.random(m) < 0.01] = 0
            ids = i.copy()
            dup = rng.random(m) < 0.003
            ids[dup] = np.maximum(ids[dup] - 1, 0)  # the same dmid fetched twice (overlapping segments)
            video = i // PER_VIDEO
            cols = {
                "platform": pa.array(["bilibili"] * m),
                "video_id": pa.array([f"BV{v:08d}" for v in video.tolist()]),
                "comment_id": pa.array(ids.astype(str).tolist()),
                "offset_ms": pa.array(rng.integers(0, VIDEO_MS, m)),
                "text": pa.array(text.tolist(), pa.string()),
                "mode": pa.array(mode.tolist()),
                "color": pa.array(np.full(m, 0xFFFFFF)),
                "font_size": pa.array(np.full(m, 25, dtype=np.int32)),
                "posted_at": pa.array(rng.integers(1_500_000_000, 1_700_000_000, m), pa.int64()).cast(pa.timestamp("s", tz="UTC")),
                "author": pa.array([f"{a:08x}" for a in rng.integers(0, 2**32, m).tolist()]),
                "weight": pa.array(weight),
                "score": pa.nulls(m, pa.int32()),
                "pool": pa.array(np.zeros(m, dtype=np.int32)),
                "superchat": pa.array(np.zeros(m, dtype=bool)),
                "raw": pa.nulls(m, pa.string()),
                "source_file": pa.array([f"{v}.xml" for v in video.tolist()]),
            }
            writer.write_table(pa.table(cols, schema=COMMENTS_SCHEMA), row_group_size=BATCH)


def baseline(src: Path, dst: Path) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET temp_directory='{dst.parent}/duckdb_tmp'")
    con.execute(f"COPY (SELECT DISTINCT platform, video_id, text FROM read_parquet('{src}')) TO '{dst}' (FORMAT parquet)")
    return {"rows_out": con.execute(f"SELECT count(*) FROM read_parquet('{dst}')").fetchone()[0]}


def clean(src: Path, dst: Path) -> dict:
    from lcaffect_pipeline.cleaning import clean_parquet

    report = clean_parquet(src, dst, spool_dir=dst.parent)
    return {"rows_out": report.rows_out, "drops": report.drops}


def run_phase(phase: str, src: Path, dst: Path, n: int) -> dict:
    t0 = time.perf_counter()
    out = {"gen": lambda: generate(src, n) or {}, "baseline": lambda: baseline(src, dst), "clean": lambda: clean(src, dst)}[phase]()
    out["seconds"] = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # steadier than wall time on a shared machine
    out["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB
    return out


def child(phase: str, src: Path, dst: Path, n: int) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--src", str(src), "--dst", str(dst), "--n", str(n)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--phase", choices=["gen", "baseline", "clean"], help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:  # one phase in this process: print its figures as JSON
        print(json.dumps(run_phase(args.phase, args.src, args.dst, args.n)))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-clean-", dir=args.workdir))
    try:
        src = work / "raw.parquet"
        gen = child("gen", src, src, args.n)
        print(f"generated {args.n:,} comments in {gen['seconds']:.1f} s ({src.stat().st_size / 2**20:.0f} MiB Parquet)")
        base = child("baseline", src, work / "distinct.parquet", args.n)
        cl = child("clean", src, work / "clean.parquet", args.n)
        for name, r in (("baseline DuckDB SELECT DISTINCT", base), ("clean_parquet", cl)):
            print(f"{name:32s} {r['seconds']:7.1f} s wall {r['cpu_seconds']:7.1f} s CPU  "
                  f"{args.n / r['seconds']:>10,.0f} comments/s  peak RSS {r['peak_rss_mib']:6.0f} MiB  rows out {r['rows_out']:,}")
        print(f"ratio clean / baseline: {cl['seconds'] / base['seconds']:.1f}x wall, {cl['cpu_seconds'] / base['cpu_seconds']:.1f}x CPU")
        verdict = "under" if cl["peak_rss_mib"] < 2048 else "OVER"
        print(f"cleaning peak RSS {cl['peak_rss_mib']:.0f} MiB: {verdict} the 2 GiB target")
        print("drops:", json.dumps(cl["drops"], ensure_ascii=False))
    finally:
        if args.keep:
            print("files kept in", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
