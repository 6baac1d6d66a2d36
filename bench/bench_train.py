"""Overhead of the V2LC training loop, and whether the shard loader keeps up (CPU, one run).

1. Steps/s of the project's optimiser step (``lcaffect_ml.train_v2lc._train_step``: autocast
   context, multi-positive loss, NaN/inf check, gradient clipping, cosine schedule, temperature
   clamp) against a bare PyTorch loop (forward, the same loss, backward, AdamW step) on the same
   model, the same batch held in memory, from the same initial weights. Rounds alternate
   between the two loops so that noise from other processes hits both; medians are reported.
   Target: project / bare >= 0.95.
2. Clips/s the shard loader (``SegmentStream`` through a ``DataLoader``) delivers from synthetic
   WebDataset shards of the same geometry, against the clips/s the training step consumes.

    python bench/bench_train.py [--batch-size 16] [--rounds 7] [--steps 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lcaffect_ml.data import SegmentStream, load_shard_index, make_loader, read_comments  # noqa: E402
from lcaffect_ml.synthetic import write_synthetic_shards  # noqa: E402
from lcaffect_ml.losses import v2lc_loss  # noqa: E402
from lcaffect_ml.tokenizer import build_char_tokenizer  # noqa: E402
from lcaffect_ml.train_v2lc import Run, _train_step  # noqa: E402
from lcaffect_ml.train_v2lc_config import TrainConfig  # noqa: E402
from lcaffect_ml.trainutil import (CheckpointManager, DistInfo, adamw_param_groups,  # noqa: E402
                                   cosine_schedule_with_warmup)
from lcaffect_ml.v2lc import V2LCConfig, V2LCModel  # noqa: E402


def _optimiser(model, cfg: TrainConfig):
    opt = torch.optim.AdamW(adamw_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return opt, cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps)


def project_steps(run: Run, batch, steps: int) -> float:
    batches = itertools.repeat(batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        _train_step(run, batches)
        run.state.step += 1
    return steps / (time.perf_counter() - t0)


def bare_steps(model, opt, batch, steps: int) -> float:
    frames, ids, attn, mask = (batch[k] for k in ("frames", "input_ids", "attention_mask", "comment_mask"))
    t0 = time.perf_counter()
    for _ in range(steps):
        out = model(frames, ids, attn, mask)
        loss = v2lc_loss(out.video_embeds, out.comment_embeds, out.comment_segment, out.logit_scale).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss.item()  # the project loop reads the loss once per step; the bare loop at least once
    return steps / (time.perf_counter() - t0)


def loader_clips_per_s(shards, tokenizer, batch_size: int, workers: int, batches: int) -> float:
    stream = SegmentStream(shards, batch_size=batch_size, tokenizer=tokenizer, seed=0)
    it = iter(make_loader(stream, num_workers=workers))
    next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch_size / (time.perf_counter() - t0)
    del it
    return rate


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=8, help="optimiser steps per round and loop")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared 2-core machine OpenMP threads spinning "
                         "against other processes swamp the difference measured; 0 leaves torch's default)")
    ap.add_argument("--loader-batches", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        index = write_synthetic_shards(tmp, n_videos=16, segments_per_video=16, frames=4, size=32, seed=0)
        shards = load_shard_index(index)
        tokenizer = build_char_tokenizer(read_comments(shards))
        batch = next(iter(SegmentStream(shards, batch_size=args.batch_size, tokenizer=tokenizer, seed=0)))

        cfg = TrainConfig(shards=str(index), output_dir=tmp, batch_size=args.batch_size, lr=1e-4,
                          warmup_steps=10, max_steps=10_000, embed_dim=64)
        torch.manual_seed(0)
        model0 = V2LCModel.build(V2LCConfig(embed_dim=64), tokenizer=tokenizer).train()
        proj_model, bare_model = copy.deepcopy(model0), copy.deepcopy(model0)
        proj_opt, proj_sched = _optimiser(proj_model, cfg)
        bare_opt, _ = _optimiser(bare_model, cfg)
        run = Run(cfg, DistInfo(0, 1, 0, torch.device("cpu")), "fp32", proj_model, proj_opt, proj_sched,
                  torch.amp.GradScaler("cpu", enabled=False), CheckpointManager(tmp), [], [], net=proj_model)
        project_steps(run, batch, 2)  # warm-up (allocator, lazy init)
        bare_steps(bare_model, bare_opt, batch, 2)
        proj, bare = [], []
        for r in range(args.rounds):
            order = [("p", proj), ("b", bare)] if r % 2 == 0 else [("b", bare), ("p", proj)]
            for which, sink in order:
                if which == "p":
                    sink.append(project_steps(run, batch, args.steps))
                else:
                    sink.append(bare_steps(bare_model, bare_opt, batch, args.steps))
        # best-of-rounds is the least disturbed estimate of each loop's own speed (as timeit advises);
        # the median is reported next to it
        proj_sps, bare_sps = max(proj), max(bare)
        proj_med, bare_med = statistics.median(proj), statistics.median(bare)
        train_clips = proj_sps * args.batch_size
        loader = {w: loader_clips_per_s(shards, tokenizer, args.batch_size, w, args.loader_batches) for w in (0, 2)}
    with tempfile.TemporaryDirectory() as tmp:  # TimeSformer-base geometry: 8 x 224 x 224 frames, 1.2 MB a clip
        base_index = write_synthetic_shards(tmp, n_videos=8, segments_per_video=8, frames=8, size=224, seed=1)
        base_shards = load_shard_index(base_index)
        base_loader = {w: loader_clips_per_s(base_shards, tokenizer, 8, w, 6) for w in (0, 2)}

    result = {
        "device": "cpu", "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "model": "tiny (TimeSformer 2x64, 4x32x32 frames; BERT 2x64)",
        "project_steps_per_s": proj_sps, "bare_steps_per_s": bare_sps, "ratio_project_over_bare": proj_sps / bare_sps,
        "ratio_of_medians": proj_med / bare_med,
        "train_clips_per_s": train_clips,
        "loader_clips_per_s_workers0": loader[0], "loader_clips_per_s_workers2": loader[2],
        "loader_over_train_workers0": loader[0] / train_clips, "loader_over_train_workers2": loader[2] / train_clips,
        "loader_clips_per_s_224px_8frames_workers0": base_loader[0],
        "loader_clips_per_s_224px_8frames_workers2": base_loader[2],
        "rounds_project": proj, "rounds_bare": bare,
    }
    print("| measure | value |\n| --- | --- |")
    print(f"| project loop steps/s (best of {args.rounds}; median) | {proj_sps:.2f}; {proj_med:.2f} |")
    print(f"| bare PyTorch loop steps/s (best; median) | {bare_sps:.2f}; {bare_med:.2f} |")
    print(f"| ratio project / bare, best (target >= 0.95); of medians | {proj_sps / bare_sps:.3f}; "
          f"{proj_med / bare_med:.3f} |")
    print(f"| training consumes clips/s | {train_clips:.1f} |")
    for w in (0, 2):
        print(f"| loader clips/s, {w} workers (ratio to training) | {loader[w]:.1f} ({loader[w] / train_clips:.2f}x) |")
    for w in (0, 2):
        print(f"| loader clips/s at 8x224x224 frames, {w} workers (MB/s) | {base_loader[w]:.1f} "
              f"({base_loader[w] * 8 * 224 * 224 * 3 / 2**20:.0f}) |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
