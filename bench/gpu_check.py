"""V2LC pretraining at the paper's shapes on one GPU, in one command (< 5 minutes; no network).

The shapes are the example pretraining config's (``configs/pretrain.example.yaml``: its encoders,
``batch_size`` 64 per GPU, ``num_workers``, ``gradient_checkpointing``) on 8 frames of 224 px
(the TimeSformer-base preset). On synthetic 224-px WebDataset shards written here it measures:

* ``loader``: the training program's shard loader alone (``train_v2lc.train_loader``), clips/s,
  with ``TrainConfig``'s default workers and with the run's (``--workers``, default the example's);
* ``flops``: FLOPs of one optimiser step, counted by ``torch.utils.flop_counter.FlopCounterMode``
  on a forward + backward of a few segments and scaled to the batch, without checkpointing (the
  model's FLOPs: MFU) and with it (the recompute included: HFU);
* ``train``: the real training program (``train_v2lc.train``, bf16 on CUDA) for ``--steps`` steps,
  with and without gradient checkpointing, in this process and under ``torchrun
  --nproc_per_node 1`` (DDP): clips/s, peak memory, achieved TFLOP/s, MFU over the card's dense
  bf16 peak (989 TFLOP/s for H100 SXM and H200; an unknown card reports TFLOP/s only) and the
  loader's clips/s over the run's. Running out of memory is a result (``"oom": true``), not a crash;
* ``resume`` (unless ``--skip-resume``): a tiny run SIGKILLed after step 6 and resumed with the
  same command, against an uninterrupted one (weights compared tensor by tensor).

The encoders are the example's hub names when the Hugging Face cache holds them (read offline),
else TimeSformer-base / BERT-base built from config with random weights (``encoders`` says which).
Each measurement is printed as one JSON line, then a summary table; all of it goes to ``--out``.

    python bench/gpu_check.py --out gpu_check.json                    # CUDA, the paper's shapes
    python bench/gpu_check.py --out cpu.json --device cpu --tiny      # the same code paths on CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported: never download

import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lcaffect_ml.data import SegmentStream, load_shard_index  # noqa: E402
from lcaffect_ml.synthetic import write_synthetic_shards  # noqa: E402
from lcaffect_ml.losses import v2lc_loss  # noqa: E402
from lcaffect_ml.train_v2lc import make_tokenizer, train, train_loader  # noqa: E402
from lcaffect_ml.train_v2lc_config import TrainConfig  # noqa: E402
from lcaffect_ml.trainutil import DistInfo, autocast, init_distributed, resolve_precision  # noqa: E402
from lcaffect_ml.v2lc import VIDEO_PRESETS, V2LCModel  # noqa: E402

EXAMPLE_CONFIG = ROOT / "configs" / "pretrain.example.yaml"
# dense bf16 TFLOP/s; the longest name contained in torch.cuda.get_device_name wins ("H100 PCIe" over "H100")
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
                    "L40S": 362.0, "L4": 121.0, "A10": 125.0}
FRAMES = VIDEO_PRESETS["base"]  # the shards' shape: TimeSformer-base's 8 frames of 224 px


def peak_for_name(card: str) -> float | None:
    return next((PEAK_BF16_TFLOPS[k] for k in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True) if k in card), None)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override or device.type != "cuda":
        return override
    return peak_for_name(torch.cuda.get_device_name(device))


def paper_options(path: Path = EXAMPLE_CONFIG) -> dict:
    """The example pretraining resource's training options (extra_json merged, launch fields dropped)."""
    settings = yaml.safe_load(path.read_text(encoding="utf-8"))["resources"]["v2lc_training"]["config"]
    settings.update(json.loads(settings.pop("extra_json", None) or "{}"))
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in settings.items() if k in known}


def _in_hf_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return Path(name).is_dir() or isinstance(try_to_load_from_cache(name, "config.json"), str)


def pick_encoders(options: dict, tiny: bool) -> dict:
    """For each tower: the example's hub name if cached, else the preset of its shape."""
    out = {}
    for key in ("video_encoder", "text_encoder"):
        asked = options[key]
        used = "tiny" if tiny else asked if _in_hf_cache(asked) else "base"
        weights = "pretrained, from the HF cache" if used == asked else "random: built from config in code" + (
            "" if tiny else f" ({asked} is not in the HF cache)")
        out[key] = {"asked": asked, "used": used, "weights": weights}
    return out


def loader_clips_per_s(cfg: TrainConfig, device: torch.device, batches: int) -> dict:
    """The training program's loader alone: clips/s after its first batch (the workers' start-up)."""
    shards = load_shard_index(cfg.shards)
    loader = iter(train_loader(cfg, shards, make_tokenizer(cfg, shards), DistInfo(0, 1, 0, device)))
    next(loader)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    elapsed = time.perf_counter() - t0
    del loader  # shuts the workers down
    return {"measurement": "loader", "num_workers": cfg.num_workers, "batch_size": cfg.batch_size,
            "frames": FRAMES["num_frames"], "size": FRAMES["image_size"], "batches": batches,
            "clips_per_s": batches * cfg.batch_size / elapsed}


def step_flops(cfg: TrainConfig, device: torch.device, precision: str, count_batch: int) -> dict:
    """FLOPs of one optimiser step (forward + backward, times grad_accum) counted on ``count_batch``
    segments and scaled to ``batch_size``: the model's (no checkpointing) and with the recompute."""
    from torch.utils.flop_counter import FlopCounterMode

    shards = load_shard_index(cfg.shards)
    model = V2LCModel.build(cfg.model_config(), tokenizer=make_tokenizer(cfg, shards)).to(device).train()
    batch = next(iter(SegmentStream(shards, batch_size=count_batch, tokenizer=model.tokenizer,
                                    max_comments=cfg.max_comments, max_length=cfg.text_max_length)))
    tensors = [batch[k].to(device) for k in ("frames", "input_ids", "attention_mask", "comment_mask")]
    scale = cfg.batch_size / tensors[0].shape[0] * cfg.grad_accum
    counted = {}
    for checkpointing in (False, True):
        model.set_gradient_checkpointing(checkpointing)
        with FlopCounterMode(display=False) as counter:
            with autocast(device, precision):
                out = model(*tensors)
            v2lc_loss(out.video_embeds, out.comment_embeds, out.comment_segment, out.logit_scale).loss.backward()
        model.zero_grad(set_to_none=True)
        counted[checkpointing] = float(counter.get_total_flops()) * scale
    del model, out
    _free(device)
    return {"measurement": "flops", "counted_on_segments": tensors[0].shape[0], "batch_size": cfg.batch_size,
            "model_flops_per_step": counted[False], "hardware_flops_per_step": counted[True]}


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_training(options: dict) -> dict:
    """One run of the training program; an out-of-memory error is returned as the result."""
    cfg = TrainConfig.from_dict(options)
    dist = init_distributed(cfg.device)
    result = {"measurement": "train", "gradient_checkpointing": cfg.gradient_checkpointing,
              "ddp": dist.distributed, "world_size": dist.world_size, "batch_size": cfg.batch_size,
              "num_workers": cfg.num_workers, "steps": cfg.max_steps}
    t0 = time.perf_counter()
    try:
        metrics = train(cfg, dist=dist)
    except torch.OutOfMemoryError as exc:
        result.update(oom=True, error=str(exc).splitlines()[0])
    else:
        result.update(oom=False, precision=metrics["precision"], clips_per_s=metrics["clips_per_s"],
                      peak_memory_mb=metrics["peak_memory_mb"], peak_memory_kind=metrics["peak_memory_kind"],
                      final_loss=metrics["final_loss"])
        if dist.device.type == "cuda":
            result["peak_reserved_mb"] = torch.cuda.max_memory_reserved(dist.device) / 2**20
    finally:
        shutil.rmtree(cfg.output_dir, ignore_errors=True)  # gigabytes of checkpoint at the base shape
        _free(dist.device)
    result["wall_s"] = time.perf_counter() - t0
    return result


def measure_under_torchrun(options: dict, work: Path, name: str, timeout: float) -> dict:
    """``measure_training`` in a ``torchrun --nproc_per_node 1`` child: the DDP code path on one device."""
    spec, result = work / f"{name}.spec.json", work / f"{name}.result.json"
    spec.write_text(json.dumps({"options": options, "result": str(result)}), encoding="utf-8")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(Path(__file__).resolve()), "--run-spec", str(spec)]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=timeout)
    if result.is_file():
        return json.loads(result.read_text(encoding="utf-8"))
    return {"measurement": "train", "ddp": True, "gradient_checkpointing": options["gradient_checkpointing"],
            "error": f"torchrun exited {proc.returncode}: {proc.stderr[-2000:]}"}


def _run_spec(path: Path) -> None:
    """The torchrun child's side of ``measure_under_torchrun``."""
    spec = json.loads(path.read_text(encoding="utf-8"))
    result = measure_training(spec["options"])
    if int(os.environ.get("RANK", "0")) == 0:
        Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def rates(run: dict, flops: dict, peak: float | None, loaders: list[dict]) -> dict:
    """Achieved TFLOP/s, MFU (model FLOPs) and HFU (with the recompute), and the loader's headroom."""
    if run.get("oom") is not False:
        return run
    same_workers = [ld for ld in loaders if ld.get("num_workers") == run["num_workers"] and "clips_per_s" in ld]
    out = {**run, "loader_over_train": same_workers[0]["clips_per_s"] / run["clips_per_s"] if same_workers else None}
    if "model_flops_per_step" not in flops:  # the count failed: its error is in the report
        return out
    steps_per_s = run["clips_per_s"] / (run["batch_size"] * run["world_size"])
    model_tflops = flops["model_flops_per_step"] * steps_per_s / 1e12
    key = "hardware_flops_per_step" if run["gradient_checkpointing"] else "model_flops_per_step"
    hardware_tflops = flops[key] * steps_per_s / 1e12
    return {**out, "achieved_tflops": model_tflops, "hardware_tflops": hardware_tflops,
            "mfu": model_tflops / peak if peak else None, "hfu": hardware_tflops / peak if peak else None}


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
    return {"measurement": "resume", "exit_codes_uninterrupted": outs["uninterrupted"][1],
            "exit_codes_killed_then_resumed": outs["resumed"][1],
            "resumed_from_step": resumed_metrics.get("resumed_from_step"), "tensors": len(a),
            "tensors_bitwise_equal": len(a) - len(unequal), "max_abs_diff": max_diff,
            "wall_s": time.perf_counter() - t0}


def _emit(report: dict, record: dict) -> dict:
    report["measurements"].append(record)
    print(json.dumps(record), flush=True)
    return record


def _attempt(report: dict, label: dict, fn, *args) -> dict:
    """``fn(*args)``'s record, or its error as the record: on a lent GPU one failed measurement must
    not cost the others (the exit status still says that something failed)."""
    try:
        record = fn(*args)
    except Exception as exc:  # noqa: BLE001
        record = {**label, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    return _emit(report, record)


def run_check(args, work: Path) -> dict:
    device = init_distributed(args.device).device
    peak = peak_tflops(device, args.peak_tflops)
    options = paper_options()
    encoders = pick_encoders(options, args.tiny)
    batch = args.batch_size or (8 if args.tiny else options["batch_size"])
    steps = args.steps or (6 if args.tiny else 20)
    workers = options["num_workers"] if args.workers is None else args.workers
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "device_memory_gb": torch.cuda.get_device_properties(device).total_memory / 2**30
              if device.type == "cuda" else None,
              "torch": torch.__version__, "precision": resolve_precision(options.get("precision", "auto"), device),
              "peak_bf16_tflops": peak, "tiny": args.tiny, "encoders": encoders, "batch_size": batch,
              "frames": FRAMES["num_frames"], "size": FRAMES["image_size"], "measurements": []}
    t0 = time.perf_counter()
    # many short videos, so that each of 8 workers reads a few dozen segments an epoch (epochs repeat)
    index = write_synthetic_shards(work / "lake", n_videos=8 if args.tiny else 128, segments_per_video=2, seed=0,
                                   frames=FRAMES["num_frames"], size=FRAMES["image_size"])
    report["lake_write_s"] = time.perf_counter() - t0

    def run_options(name: str, checkpointing: bool, num_workers: int) -> dict:
        return {**options, **{k: v["used"] for k, v in encoders.items()}, "shards": str(index),
                "output_dir": str(work / f"out-{name}"), "device": device.type, "batch_size": batch,
                "num_workers": num_workers, "gradient_checkpointing": checkpointing, "max_steps": steps,
                "warmup_steps": 1, "checkpoint_every": 0, "eval_every": 0, "eval_fraction": 0.0,
                "progress": False, "log_every": steps,
                "max_per_video": 0}  # the per-video cap needs batch_size/2 videos per worker: off for a small lake

    loaders = [_attempt(report, {"measurement": "loader", "num_workers": w}, loader_clips_per_s,
                        TrainConfig.from_dict(run_options("loader", False, w)), device, args.loader_batches)
               for w in sorted({TrainConfig.num_workers, workers})]
    flops = _attempt(report, {"measurement": "flops"}, step_flops,
                     TrainConfig.from_dict(run_options("flops", False, 0)), device, report["precision"], min(batch, 8))

    def measure(ddp: bool, checkpointing: bool) -> dict:
        name = f"{'ddp' if ddp else 'single'}-{'ckpt' if checkpointing else 'plain'}"
        spec = run_options(name, checkpointing, workers)
        run = measure_under_torchrun(spec, work, name, args.child_timeout) if ddp else measure_training(spec)
        return rates(run, flops, peak, loaders)

    # the torchrun children first, then this process; without checkpointing last: it may run out of memory
    for ddp, checkpointing in ((True, True), (True, False), (False, True), (False, False)):
        _attempt(report, {"measurement": "train", "ddp": ddp, "gradient_checkpointing": checkpointing},
                 measure, ddp, checkpointing)
    if not args.skip_resume:
        _attempt(report, {"measurement": "resume"}, resume_check, work, min(workers, 2), device.type)
    report["total_wall_s"] = time.perf_counter() - t0
    return report


def print_summary(report: dict) -> None:
    by_kind = lambda kind: [m for m in report["measurements"] if m["measurement"] == kind]  # noqa: E731
    print(f"\n### V2LC at the paper's shapes on {report['device']} (torch {report['torch']}, {report['precision']}; "
          f"{report['frames']} x {report['size']} px frames, batch {report['batch_size']})\n")
    for key, enc in report["encoders"].items():
        print(f"{key}: {enc['used']} ({enc['weights']})")
    for flops in by_kind("flops"):
        print(f"\nFLOP per step: {flops['model_flops_per_step'] / 1e12:.3g} T (model), "
              f"{flops['hardware_flops_per_step'] / 1e12:.3g} T with the recompute of checkpointing\n"
              if "error" not in flops else f"\nFLOP count failed: {flops['error']}\n")
    print("| run | checkpointing | clips/s | peak memory MB | TFLOP/s | MFU | HFU | loader / train |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    pct = lambda v: f"{100 * v:.1f}%" if v is not None else "n/a"  # noqa: E731
    for r in by_kind("train"):
        run = "torchrun DDP x1" if r["ddp"] else "single process"
        if r.get("oom") is not False:
            print(f"| {run} | {r.get('gradient_checkpointing')} | "
                  f"{'out of memory' if r.get('oom') else r['error'][:80]} | | | | | |")
            continue
        reserved = f", {r['peak_reserved_mb']:.0f} reserved" if "peak_reserved_mb" in r else ""
        ratio = f"{r['loader_over_train']:.2f}x" if r["loader_over_train"] is not None else "n/a"
        tflops = f"{r['achieved_tflops']:.3g}" if "achieved_tflops" in r else "n/a"
        print(f"| {run} | {r['gradient_checkpointing']} | {r['clips_per_s']:.1f} | {r['peak_memory_mb']:.0f} "
              f"({r['peak_memory_kind']}{reserved}) | {tflops} | {pct(r.get('mfu'))} | {pct(r.get('hfu'))} "
              f"| {ratio} |")
    for ld in by_kind("loader"):
        print(f"\nloader, {ld['num_workers']} workers: {ld['clips_per_s']:.1f} clips/s" if "error" not in ld
              else f"\nloader failed: {ld['error']}")
    for r in by_kind("resume"):
        if "error" in r:
            print(f"\nresume check failed: {r['error']}")
            continue
        print(f"\nresume: killed after step 6, resumed from step {r['resumed_from_step']}; "
              f"{r['tensors_bitwise_equal']}/{r['tensors']} tensors bitwise equal to the uninterrupted run, "
              f"max |diff| {r['max_abs_diff']:.3g}; exit codes {r['exit_codes_killed_then_resumed']}")
    print(f"\ntotal {report['total_wall_s']:.0f} s")


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="JSON file for the figures")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny encoders and batch 8 (a quick CPU check of every path)")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimiser steps per training run, the first not timed (default 20; 6 with --tiny)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the example config's (8 with --tiny)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers of the runs (default: the example's)")
    ap.add_argument("--loader-batches", type=int, default=12, help="batches timed in the loader measurement")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of this GPU")
    ap.add_argument("--child-timeout", type=float, default=240, help="seconds for each torchrun run")
    ap.add_argument("--skip-resume", action="store_true")
    ap.add_argument("--run-spec", type=Path, help=argparse.SUPPRESS)  # the torchrun child
    args = ap.parse_args(argv)
    if args.run_spec:
        _run_spec(args.run_spec)
        return None
    if args.out is None:
        ap.error("--out is required")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device (--device cpu --tiny runs the same code paths on the CPU)")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        report = run_check(args, Path(tmp))
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print_summary(report)
    print(f"JSON in {args.out}")
    failed = [m["measurement"] for m in report["measurements"] if "error" in m and not m.get("oom")]
    if failed:
        sys.exit(f"failed: {failed} (their errors are in {args.out})")
    return report


if __name__ == "__main__":
    main()
