"""Does the demo's V2LC train to the same held-out retrieval on JPEG frames as on raw ones? (issue 27)

Generates the main demo world and runs the corpus and clips assets in-process with the resources
of ``configs/demo.yaml`` twice in one lake, once with ``clips.frame_codec`` jpeg and once npy
(the second run re-materialises only ``segments`` and ``training_shards``: a codec is part of the
shard fingerprint, so it writes a new shard version and a new content-addressed index). Then
trains V2LC (``lcaffect_ml.train_v2lc.train``, the demo's ``v2lc_training`` options) on each index
for every seed, one torch thread, and prints held-out video->comment R@1 and its chance per codec
(mean +- std over seeds), the difference, whether it is within noise (|diff| <= 2 x the larger
std), and the shard bytes per segment of each codec.

    python bench/bench_codec_v2lc.py [--seeds 0 1 2] [--max-steps N] [--keep DIR] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: one thread, the machine is shared

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import torch  # noqa: E402

from lcaffect_pipeline import v2lc_runs, versions  # noqa: E402
from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS  # noqa: E402
from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS  # noqa: E402
from lcaffect_pipeline.defs.definitions import build_resources  # noqa: E402
from lcaffect_pipeline.defs.resources import LakeJsonIOManager, V2LCTrainingResource  # noqa: E402
from lcaffect_ml.train_v2lc import train  # noqa: E402
from lcaffect_ml.train_v2lc_config import TrainConfig  # noqa: E402

DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
CODECS = ("jpeg", "npy")  # the default first; npy is the raw uint8 layout before codecs


def demo_resources(lake_root: Path, codec: str) -> dict:
    """The pipeline's resources as ``configs/demo.yaml`` sets them, in ``lake_root``, with ``codec``."""
    settings = yaml.safe_load(DEMO_CONFIG.read_text())["resources"]
    settings.setdefault("lake", {"config": {}})["config"]["root"] = str(lake_root)
    settings.setdefault("clips", {"config": {}})["config"]["frame_codec"] = codec
    out = {}
    for name, default in build_resources().items():
        config = settings.get(name, {}).get("config")
        out[name] = type(default)(**config) if config else default
    out["io_manager"] = LakeJsonIOManager(lake=out["lake"], as_of_json=out["scope"].as_of_json)
    return out


def write_shards(lake_root: Path, codec: str, first: bool) -> dict:
    """The corpus (first run only) and the codec's shards; returns the training_shards value."""
    selection = None if first else ["segments", "training_shards"]
    result = dg.materialize([*CORPUS, *CLIPS], resources=demo_resources(lake_root, codec), selection=selection)
    if not result.success:
        sys.exit(f"the corpus/clips materialisation with frame_codec {codec} failed")
    return versions.latest(lake_root, "training_shards")


def shard_bytes_per_segment(value: dict) -> float:
    index = Path(value["index"])
    entries = json.loads(index.read_text())
    return sum((index.parent / e["url"]).stat().st_size for e in entries) / value["samples"]


def train_one(index: str, seed: int, out: Path, max_steps: int | None) -> dict:
    settings = yaml.safe_load(DEMO_CONFIG.read_text())["resources"]["v2lc_training"]["config"]
    training = V2LCTrainingResource(**settings)
    cfg = v2lc_runs.training_config(training.model_dump(), V2LCTrainingResource.LAUNCH_FIELDS, index, out)
    cfg.update(seed=seed, progress=False, pipes_asset_key=None, **({"max_steps": max_steps} if max_steps else {}))
    t0 = time.perf_counter()
    metrics = train(TrainConfig.from_dict(cfg))
    return {"v2c_r1": metrics["v2c_r1"], "chance_r1": metrics["chance_r1"], "steps": cfg["max_steps"],
            "train_s": time.perf_counter() - t0}


def summarise(runs: dict[str, list[dict]]) -> dict:
    stats = {}
    for codec, rows in runs.items():
        r1 = [r["v2c_r1"] for r in rows]
        stats[codec] = {"mean": statistics.mean(r1), "std": statistics.stdev(r1) if len(r1) > 1 else 0.0,
                        "chance": statistics.mean(r["chance_r1"] for r in rows)}
    diff = stats["jpeg"]["mean"] - stats["npy"]["mean"]
    noise = 2 * max(s["std"] for s in stats.values())
    return {"codecs": stats, "diff": diff, "noise": noise, "within_noise": abs(diff) <= noise}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, help="fewer steps than the demo's (default: the demo's)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # the assets' data_version, once per step
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-codec-v2lc-"))
    lake_root = work / "lake"
    try:
        t0 = time.perf_counter()
        shards = {codec: write_shards(lake_root, codec, first=i == 0) for i, codec in enumerate(CODECS)}
        shards_s = time.perf_counter() - t0
        runs = {codec: [] for codec in CODECS}
        for seed in args.seeds:  # seed-major: load drifting over the run hits both codecs alike
            for codec in CODECS:
                row = train_one(shards[codec]["index"], seed, work / "runs" / f"{codec}-{seed}", args.max_steps)
                runs[codec].append(row)
                print(f"seed {seed} {codec:4s}: v2c R@1 {row['v2c_r1']:.3f} (chance {row['chance_r1']:.4f}), "
                      f"{row['train_s']:.0f} s", flush=True)
        sizes = {codec: shard_bytes_per_segment(shards[codec]) for codec in CODECS}
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(runs)
    print(f"\n{'codec':6s} {'segments':>8s} {'bytes/seg':>10s} {'v2c R@1 mean ± std':>20s} {'chance':>8s}   per seed")
    for codec in CODECS:
        s = summary["codecs"][codec]
        per_seed = ", ".join(f"{r['v2c_r1']:.3f}" for r in runs[codec])
        print(f"{codec:6s} {shards[codec]['samples']:8d} {sizes[codec]:10,.0f} {s['mean']:11.3f} ± {s['std']:.3f}"
              f" {s['chance']:8.4f}   {per_seed}")
    print(f"\njpeg - npy: {summary['diff']:+.3f}; noise bar 2 x larger std = {summary['noise']:.3f}: "
          f"{'within noise' if summary['within_noise'] else 'NOT within noise'}; "
          f"bytes jpeg/npy {sizes['jpeg'] / sizes['npy']:.3f}; seeds {args.seeds}; steps {runs['jpeg'][0]['steps']}; "
          f"shards {shards_s:.0f} s; load {os.getloadavg()[0]:.1f}; cpus {os.cpu_count()}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary, "bytes_per_segment": sizes,
                                         "shards_s": shards_s, "seeds": args.seeds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
