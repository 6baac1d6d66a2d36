"""Prove V2LC pretraining on a CUDA machine in one command (< 4 minutes; no network, no downloads).

Runs the real training program (``lcaffect_ml.train_v2lc.train``) in bf16 on synthetic WebDataset
shards for two configurations:

* ``tiny``  (TimeSformer 2 layers x 64, 4 x 32 x 32 frames; BERT 2 x 64)
* ``base``  (TimeSformer-base dimensions: 12 layers x 768, 8 x 224 x 224 frames, 16 px patches;
  BERT-base comment encoder; both randomly initialised from config)

and records, for each: clips/s of the training loop, FLOPs per optimiser step (counted by
``torch.utils.flop_counter.FlopCounterMode`` on one forward + backward), the MFU estimate
(FLOPs/s over the GPU's dense bf16 peak: 989 TFLOP/s for H100/H200 SXM unless ``--peak-tflops``),
and peak CUDA memory. Then a resume check on the tiny configuration: a run SIGKILLed after step 6
and resumed with the same command against an uninterrupted run (weights compared tensor by
tensor; GPU kernels such as index backward use atomics, so bitwise equality is reported, and the
largest difference with it). Prints a Markdown table and writes JSON to ``--out``.

    python bench/gpu_check.py --out gpu_check.json
    python bench/gpu_check.py --out cpu_smoke.json --allow-cpu --configs tiny --steps 6   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lcaffect_ml.data import SegmentStream, load_shard_index, write_synthetic_shards  # noqa: E402
from lcaffect_ml.losses import v2lc_loss  # noqa: E402
from lcaffect_ml.train_v2lc import TrainConfig, train  # noqa: E402
from lcaffect_ml.trainutil import autocast, init_distributed, resolve_precision  # noqa: E402
from lcaffect_ml.v2lc import V2LCModel  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}

CONFIGS = {
    "tiny": dict(shard=dict(frames=4, size=32, n_videos=16, segments_per_video=16),
                 train=dict(video_encoder="tiny", text_encoder="tiny", embed_dim=64, batch_size=64)),
    "base": dict(shard=dict(frames=8, size=224, n_videos=12, segments_per_video=12),
                 train=dict(video_encoder="base", text_encoder="base", embed_dim=512, batch_size=16,
                            eval_max_segments=64)),
}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def flops_per_step(out_dir: Path, shards, cfg: TrainConfig, device: torch.device, precision: str) -> float:
    """FLOPs of one optimiser step (forward + backward of one batch, times grad_accum)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = V2LCModel.from_pretrained(out_dir).to(device).train()
    batch = next(iter(SegmentStream(shards, batch_size=cfg.batch_size, tokenizer=model.tokenizer,
                                    max_comments=cfg.max_comments, max_length=cfg.text_max_length)))
    tensors = [batch[k].to(device) for k in ("frames", "input_ids", "attention_mask", "comment_mask")]
    with FlopCounterMode(display=False) as counter:
        with autocast(device, precision):
            out = model(*tensors)
        v2lc_loss(out.video_embeds, out.comment_embeds, out.comment_segment, out.logit_scale).loss.backward()
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return float(counter.get_total_flops()) * cfg.grad_accum


def run_config(name: str, work: Path, steps: int, device: torch.device, peak: float | None, workers: int) -> dict:
    spec = CONFIGS[name]
    t0 = time.perf_counter()
    index = write_synthetic_shards(work / f"lake-{name}", seed=0, **spec["shard"])
    cfg = TrainConfig(shards=str(index), output_dir=str(work / f"out-{name}"), max_steps=steps, warmup_steps=2,
                      lr=5e-4, eval_fraction=0.2, checkpoint_every=0, eval_every=0, num_workers=workers,
                      precision="auto", progress=False, log_every=max(1, steps // 4), **spec["train"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    metrics = train(cfg)
    precision = metrics["precision"]
    flops = flops_per_step(Path(cfg.output_dir), load_shard_index(index), cfg, device, precision)
    steps_per_s = metrics["clips_per_s"] / (cfg.batch_size * cfg.grad_accum)
    achieved = flops * steps_per_s
    return {
        "config": name, "precision": precision, "batch_size": cfg.batch_size, "steps": metrics["steps"],
        "clips_per_s": metrics["clips_per_s"], "flops_per_step": flops, "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (peak * 1e12) if peak else None, "peak_memory_mb": metrics["peak_memory_mb"],
        "peak_memory_kind": metrics["peak_memory_kind"], "final_loss": metrics["final_loss"],
        "v2c_r1": metrics.get("v2c_r1"), "chance_r1": metrics.get("chance_r1"),
        "wall_s": time.perf_counter() - t0,
    }


def resume_check(work: Path, workers: int, device: str) -> dict:
    """Uninterrupted 12 steps vs killed after 6 (checkpoint at 4) and resumed, in subprocesses."""
    from safetensors.torch import load_file

    t0 = time.perf_counter()
    index = write_synthetic_shards(work / "lake-resume", n_videos=12, segments_per_video=8, seed=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = {}
    for label, kills in (("uninterrupted", [None]), ("resumed", [6, None])):
        cfg = work / f"resume-{label}.json"
        cfg.write_text(json.dumps(dict(shards=str(index), output_dir=str(work / f"resume-{label}"), batch_size=16,
                                       max_steps=12, checkpoint_every=4, warmup_steps=2, lr=1e-3, embed_dim=32,
                                       eval_fraction=0.25, num_workers=workers, progress=False, device=device)))
        codes = []
        for kill in kills:
            # the kill comes from the tests' fault-injection wrapper, not a flag of the program
            program = [sys.executable, str(ROOT / "tests" / "faults.py"), "--kill-after-step", str(kill)] if kill else [sys.executable, "-m"]
            cmd = [*program, "lcaffect_ml.train_v2lc", "--config", str(cfg)]
            codes.append(subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300).returncode)
        outs[label] = (work / f"resume-{label}", codes)
    a = load_file(str(outs["uninterrupted"][0] / "model.safetensors"))
    b = load_file(str(outs["resumed"][0] / "model.safetensors"))
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    max_diff = max((float((a[k].float() - b[k].float()).abs().max()) for k in unequal), default=0.0)
    resumed_metrics = json.loads((outs["resumed"][0] / "metrics.json").read_text())
    return {"exit_codes_uninterrupted": outs["uninterrupted"][1], "exit_codes_killed_then_resumed": outs["resumed"][1],
            "resumed_from_step": resumed_metrics.get("resumed_from_step"), "tensors": len(a),
            "tensors_bitwise_equal": len(a) - len(unequal), "max_abs_diff": max_diff,
            "wall_s": time.perf_counter() - t0}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    ap.add_argument("--configs", default="tiny,base")
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per configuration")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of this GPU")
    ap.add_argument("--allow-cpu", action="store_true", help="smoke-test the script without a GPU")
    ap.add_argument("--skip-resume", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit("no CUDA device (use --allow-cpu for a smoke test)")
    device = init_distributed("auto").device
    peak = peak_tflops(device, args.peak_tflops)
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "precision": resolve_precision("auto", device),
                    "peak_bf16_tflops": peak, "configs": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            report["configs"].append(run_config(name, Path(tmp), args.steps, device, peak, args.workers))
            print(json.dumps(report["configs"][-1]), file=sys.stderr)
        if not args.skip_resume:
            report["resume"] = resume_check(Path(tmp), min(args.workers, 2), "auto")
    report["total_wall_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(report, indent=2))

    print(f"\n### V2LC GPU check on {report['device']} (torch {report['torch']}, {report['precision']})\n")
    print("| config | batch | clips/s | TFLOP/step | achieved TFLOP/s | MFU | peak memory MB | final loss |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in report["configs"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"| {r['config']} | {r['batch_size']} | {r['clips_per_s']:.1f} | {r['flops_per_step'] / 1e12:.3f} | "
              f"{r['achieved_tflops']:.1f} | {mfu} | {r['peak_memory_mb']:.0f} ({r['peak_memory_kind']}) | "
              f"{r['final_loss']:.3f} |")
    if "resume" in report:
        r = report["resume"]
        print(f"\nresume: killed after step 6, resumed from step {r['resumed_from_step']}; "
              f"{r['tensors_bitwise_equal']}/{r['tensors']} tensors bitwise equal to the uninterrupted run, "
              f"max |diff| {r['max_abs_diff']:.3g}; exit codes {r['exit_codes_killed_then_resumed']}")
    print(f"\ntotal {report['total_wall_s']:.0f} s; JSON in {args.out}")
    return report


if __name__ == "__main__":
    main()
