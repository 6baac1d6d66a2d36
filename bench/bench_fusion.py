"""Overhead of the fusion trainer (``lcaffect_ml.train_fusion``) against a bare PyTorch loop.

The project's run (``FusionRun.run``: schedule, clipping, NaN check, per-epoch validation and
model selection, checkpoints by time, the test evaluation at the end) against a bare loop
(forward, the same loss, backward, AdamW step) on the same model configuration, the same
generated features and the same number of optimiser steps. Rounds alternate between the two so
that noise from other processes hits both; medians are reported. Target: project / bare >= 0.9.

    python bench/bench_fusion.py [--utterances 240] [--epochs 20] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from lcaffect_ml.fusion import FusionModel  # noqa: E402
from lcaffect_ml.train_fusion import FusionRun, _batch, _loss
from lcaffect_ml.fusion_data import FusionTrainConfig, load_data, make_splits
from lcaffect_ml.trainutil import adamw_param_groups, seed_everything  # noqa: E402
from test_fusion import write_dataset  # noqa: E402  (the tests' generator of contract-shaped feature folders)


def project_run(cfg: FusionTrainConfig, data, split, out: Path) -> tuple[float, int]:
    cfg.output_dir = str(out)
    run = FusionRun(cfg, data, split, seed=0, device=torch.device("cpu"), precision="fp32")
    t0 = time.perf_counter()
    run.run()
    return time.perf_counter() - t0, run.total_steps


def bare_run(cfg: FusionTrainConfig, data, split, steps: int) -> float:
    seed_everything(0)
    model = FusionModel(cfg.model_config(data)).train()
    opt = torch.optim.AdamW(adamw_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    labels = torch.as_tensor(data.labels, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.as_tensor(split.train, dtype=torch.long)[torch.randperm(len(split.train), generator=gen)[: cfg.batch_size]]
        loss = _loss(cfg, model(_batch(data.inputs, idx)), labels[idx], None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--task", default="meld")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        table, features = write_dataset(Path(tmp) / "data", args.task, n=args.utterances)
        cfg = FusionTrainConfig.from_dict(dict(task=args.task, utterances=str(table), features_dir=str(features),
                                               output_dir=str(Path(tmp) / "out"), epochs=args.epochs, seeds=[0]))
        data = load_data(cfg)
        split = make_splits(data, cfg)[0]
        project_run(cfg, data, split, Path(tmp) / "warm-up")  # one-time imports (torch._dynamo via AdamW) left out
        project, bare, steps = [], [], 0
        for r in range(args.rounds):
            seconds, steps = project_run(cfg, data, split, Path(tmp) / f"run{r}")
            project.append(steps / seconds)
            bare.append(steps / bare_run(cfg, data, split, steps))
    result = {"steps": steps, "project_steps_per_s": statistics.median(project),
              "bare_steps_per_s": statistics.median(bare)}
    result["ratio"] = result["project_steps_per_s"] / result["bare_steps_per_s"]
    print(f"fusion trainer: {result['project_steps_per_s']:.1f} steps/s, bare loop {result['bare_steps_per_s']:.1f} "
          f"steps/s over {steps} steps: {result['ratio']:.3f}x (target >= 0.9)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
