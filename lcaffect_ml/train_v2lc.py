"""V2LC pretraining: align segment videos with their live comments (CLIP-style, multi-positive).

Run::

    python -m lcaffect_ml.train_v2lc --config v2lc.yaml [--set key=value ...]
    torchrun --nproc_per_node 8 -m lcaffect_ml.train_v2lc --config v2lc.yaml     # DDP

Re-running the same command resumes from the newest complete checkpoint in
``output_dir/checkpoints/`` (model, optimiser, scheduler, grad scaler, RNG states, data position);
on CPU a killed and resumed run ends with weights identical to an uninterrupted one. Under
Dagster Pipes the run streams its log, reports the materialization and the
``retrieval_above_chance`` check (``lcaffect_ml.pipes``); by hand Pipes is a no-op.

Options: a YAML or JSON mapping (``--set key=value`` overrides one, the value parsed as YAML).
Each is documented where ``TrainConfig`` (``lcaffect_ml.train_v2lc_config``) declares it, and
``python -m lcaffect_ml.train_v2lc --help`` lists them all with their defaults.
Tests inject a crash after a step or a NaN loss through ``trainutil.after_optimizer_step`` and
``trainutil.loss_hook`` (tests/faults.py); no option or flag of the program does.

Outputs in ``output_dir``: ``model.safetensors`` + ``config.json`` + ``tokenizer/``
(``V2LCModel.from_pretrained(output_dir)``), ``metrics.json`` (v2c_r1, v2c_r5, v2c_r10, v2c_medr,
c2v_*, chance_r1, steps, clips_per_s, peak_memory_mb, final_loss, train/test video counts, …),
``loss_curve.png`` and ``checkpoints/step-N/``.

Exit status: 0 done; 65 (``EXIT_NON_FINITE``) when the loss or gradient norm became NaN/inf — the
run stops before that optimiser step, so no checkpoint holds poisoned weights; 2 bad config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import (ShardSpec, SegmentStream, clip_timing, load_shard_index, make_loader, read_comments,
                   split_by_video, split_grouping)
from . import trainutil
from .losses import v2lc_loss
from .pipes import TrainingReporter, pipes_session
from .retrieval import retrieval_by_group, retrieval_metrics
from .program import program_main
from .trainutil import (adamw_param_groups, atomic_write_json, autocast, capture_rng_state, CheckpointManager,
                        COMPLETE_MARKER, cosine_schedule_with_warmup, DistInfo, init_distributed, load_state,
                        NonFiniteLossError, peak_memory_mb, resolve_precision, restore_rng_state,
                        save_state, seed_everything)
from .options import ConfigError
from .atomic import atomic_file
from .devices import runtime_info
from .hub import require as require_models
from .contracts.hashing import sha256_file
from .contracts.runs import V2LC_FINISHED
from .lake_folder import RunFolder, run_folder
from .train_v2lc_config import RESUME_KEYS, TrainConfig, TrainerState, hub_models
from .v2lc import TEXT_PRESETS, V2LCModel

log = logging.getLogger("lcaffect_ml.train_v2lc")


# ------------------------------------------------------------------------------- setup


def make_tokenizer(cfg: TrainConfig, train_shards: list[ShardSpec]):
    """The ``tokenizer`` option's, else a hub or local comment encoder's own, else (a preset comment
    encoder) a character tokenizer of the training comments."""
    from .tokenizer import build_char_tokenizer, load_tokenizer

    if cfg.tokenizer or cfg.text_encoder not in TEXT_PRESETS:
        return load_tokenizer(cfg.tokenizer or cfg.text_encoder)
    # every rank builds it from the same comments in index order, so all ranks agree
    texts = read_comments(train_shards)
    if not texts:
        raise ConfigError("no comments in the training shards to build a tokenizer from")
    tokenizer = build_char_tokenizer(texts, vocab_size=cfg.tokenizer_vocab_size, model_max_length=cfg.text_max_length)
    log.info("built a %d-token character tokenizer from %d training comments", len(tokenizer), len(texts))
    return tokenizer


def _build_model(cfg: TrainConfig, train_shards: list[ShardSpec], dist: DistInfo) -> V2LCModel:
    require_models(hub_models(dataclasses.asdict(cfg)))  # an offline node fails here, naming them
    tokenizer = make_tokenizer(cfg, train_shards)
    mcfg = cfg.model_config()
    timing = clip_timing(train_shards)  # recorded in config.json: extract_features samples at this rate
    mcfg.train_segment_s, mcfg.train_frames = timing if timing else (None, None)
    seed_everything(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    return V2LCModel.build(mcfg, tokenizer=tokenizer)


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig) -> None:
    current = dataclasses.asdict(cfg)
    changed = [k for k in RESUME_KEYS if k in saved and saved[k] != current[k]]
    if changed:
        log.warning("resuming with changed option(s) %s: the run continues but is not an exact replay",
                    {k: (saved[k], current[k]) for k in changed})


def _batch_to(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, ...]:
    nb = device.type == "cuda"
    return tuple(batch[k].to(device, non_blocking=nb) for k in ("frames", "input_ids", "attention_mask", "comment_mask"))


@dataclass
class Run:
    """What one process of a training run holds."""

    cfg: TrainConfig
    dist: DistInfo
    precision: str
    model: V2LCModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    manager: CheckpointManager
    train_shards: list[ShardSpec]
    test_shards: list[ShardSpec]
    split_group: str  # what the held-out split grouped by (metrics.json names it)
    folder: RunFolder  # where the outputs go: cfg.output_dir, or its home in the lake
    state: TrainerState = field(default_factory=TrainerState)
    net: torch.nn.Module | None = None  # the DDP wrapper, or the model itself

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def clips_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.dist.world_size

    def clips_per_s(self) -> float:
        st = self.state
        return self.clips_per_step * st.timed_steps / st.train_time_s if st.train_time_s else 0.0


# ------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: V2LCModel, shards: list[ShardSpec], cfg: TrainConfig, device: torch.device,
             precision: str) -> dict[str, float]:
    """Held-out retrieval metrics over (at most ``eval_max_segments``) segments of the test videos,
    and, where the index names them, per platform (``by_platform``) and language (``by_language``),
    each group ranked within its own pool."""
    stream = SegmentStream(shards, batch_size=cfg.eval_batch_size, tokenizer=model.tokenizer,
                           max_comments=cfg.max_comments, max_length=cfg.text_max_length, shuffle=False,
                           infinite=False, on_error=cfg.on_error, max_segments=cfg.eval_max_segments)
    loader = make_loader(stream, num_workers=min(cfg.num_workers, len(shards)), seed=cfg.seed)
    was_training = model.training
    model.eval()
    videos, comments, segments, video_ids = [], [], [], []
    offset = 0
    try:
        for batch in loader:
            frames, ids, attn, mask = _batch_to(batch, device)
            with autocast(device, precision):
                out = model(frames, ids, attn, mask)
            keep = out.comment_segment >= 0
            videos.append(out.video_embeds.float().cpu())
            comments.append(out.comment_embeds[keep].float().cpu())
            segments.append(out.comment_segment[keep].cpu() + offset)
            video_ids += batch["video_id"]
            offset += frames.shape[0]
    finally:
        model.train(was_training)
    if not videos:
        raise ConfigError("the held-out videos yielded no segment with comments: nothing to evaluate")
    embeds = torch.cat(videos), torch.cat(comments), torch.cat(segments)
    metrics: dict[str, Any] = retrieval_metrics(*embeds)
    for attr in ("platform", "language"):
        of_video = {s.video_id: getattr(s, attr) for s in shards}
        groups = retrieval_by_group(*embeds, [of_video.get(v) for v in video_ids])
        if groups:
            metrics[f"by_{attr}"] = groups
    return metrics


def _periodic_eval(run: Run) -> None:
    if run.dist.is_main:
        metrics = evaluate(run.model, run.test_shards, run.cfg, run.device, run.precision)
        run.state.eval_history.append({"step": run.state.step, **{k: metrics[k] for k in
                                       ("v2c_r1", "v2c_r5", "c2v_r1", "chance_r1")}})
        log.info("step %d held-out: v2c R@1 %.3f R@5 %.3f, c2v R@1 %.3f (chance %.3f)", run.state.step,
                 metrics["v2c_r1"], metrics["v2c_r5"], metrics["c2v_r1"], metrics["chance_r1"])
    if run.dist.distributed:
        torch.distributed.barrier()


# ---------------------------------------------------------------------- checkpointing


def _save_checkpoint(run: Run) -> Path | None:
    rng = capture_rng_state()
    gathered: list[Any] = [rng]
    if run.dist.distributed:  # every rank's RNG, so dropout streams resume per rank
        gathered = [None] * run.dist.world_size
        torch.distributed.all_gather_object(gathered, rng)
    path = None
    if run.dist.is_main:
        def write(folder: Path) -> None:
            run.model.save_pretrained(folder)
            save_state(folder, "optimizer", run.optimizer.state_dict())
            save_state(folder, "scheduler", run.scheduler.state_dict())
            save_state(folder, "scaler", run.scaler.state_dict())
            save_state(folder, "rng", {"ranks": gathered})
            atomic_write_json(folder / COMPLETE_MARKER, {  # written last: marks the folder complete
                **dataclasses.asdict(run.state), "world_size": run.dist.world_size,
                "samples_seen": run.state.micro_batches * run.cfg.batch_size * run.dist.world_size,
                "config": dataclasses.asdict(run.cfg)})

        path = run.manager.save(run.state.step, write)
        log.info("checkpoint %s written", run.folder.location(path))
    if run.dist.distributed:
        torch.distributed.barrier()
    return path


def _load_checkpoint(run: Run, path: Path) -> None:
    saved = json.loads((path / COMPLETE_MARKER).read_text(encoding="utf-8"))
    _check_resume_config(saved.get("config", {}), run.cfg)
    run.optimizer.load_state_dict(load_state(path, "optimizer"))
    run.scheduler.load_state_dict(load_state(path, "scheduler"))
    run.scaler.load_state_dict(load_state(path, "scaler"))
    ranks = load_state(path, "rng")["ranks"]
    if len(ranks) == run.dist.world_size:
        restore_rng_state(ranks[run.dist.rank])
    else:
        log.warning("checkpoint from %d rank(s), now %d: RNG streams reseeded", len(ranks), run.dist.world_size)
        seed_everything(run.cfg.seed + 1000 * run.dist.rank + saved["step"])
    run.state = TrainerState(**{k: saved[k] for k in dataclasses.asdict(TrainerState()) if k in saved})
    run.state.resumed_from = saved["step"]


# ----------------------------------------------------------------------------- outputs


def _plot_loss(path: Path, state: TrainerState) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if state.loss_history:
        steps, losses = zip(*state.loss_history)
        ax.plot(steps, losses, lw=1, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("V2LC contrastive loss")
    if state.eval_history:
        ax2 = ax.twinx()
        ax2.plot([e["step"] for e in state.eval_history], [e["v2c_r1"] for e in state.eval_history], "o-",
                 color="tab:orange", label="held-out v2c R@1")
        ax2.set_ylabel("v2c R@1")
    ax.set_title("V2LC pretraining")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _finish(run: Run, reporter: TrainingReporter) -> dict[str, Any]:
    """Final weights, held-out metrics, metrics.json, loss curve and the Pipes report (rank 0)."""
    cfg, state = run.cfg, run.state
    peak, peak_kind = peak_memory_mb(run.device)
    if not run.dist.is_main:
        if run.dist.distributed:
            torch.distributed.barrier()
        return {}
    out_dir = Path(cfg.output_dir)
    run.model.save_pretrained(out_dir)
    # the weights' data version, recorded in metrics.json: a reuse of the finished run reads it there
    metrics: dict[str, Any] = {"model_sha256": sha256_file(out_dir / "model.safetensors")}
    if run.test_shards:
        metrics.update(evaluate(run.model, run.test_shards, cfg, run.device, run.precision))
    recent = [loss for _, loss in state.loss_history[-10:]]
    metrics.update({
        "steps": state.step,
        "clips_per_s": run.clips_per_s(),
        "peak_memory_mb": peak,
        "peak_memory_kind": peak_kind,
        "final_loss": state.loss_history[-1][1] if state.loss_history else float("nan"),
        "final_loss_mean10": sum(recent) / len(recent) if recent else float("nan"),
        "train_videos": len({s.video_id for s in run.train_shards}),
        "test_videos": len({s.video_id for s in run.test_shards}),
        "train_shards": len(run.train_shards),
        "test_shards": len(run.test_shards),
        "train_segments": sum(s.samples or 0 for s in run.train_shards),
        "split_group": run.split_group,
        "clips_seen": state.micro_batches * cfg.batch_size * run.dist.world_size,
        "world_size": run.dist.world_size,
        **runtime_info(run.device, run.precision),
        "logit_scale": float(run.model.scale().detach()),
        "resumed_from_step": state.resumed_from if state.resumed_from is not None else -1,
    })
    atomic_write_json(out_dir / "metrics.json", metrics)
    _plot_loss(out_dir / "loss_curve.png", state)
    run.folder.publish(last=V2LC_FINISHED)  # before the report: what it names is in the lake
    result = reporter.report_training_result(metrics, run.folder.location(out_dir),
                                             run.folder.location(run.manager.latest()))
    if "v2c_r1" in metrics:
        log.info("held-out v2c R@1 %.3f (chance %.3f): %s; model sha256 %s", metrics["v2c_r1"],
                 metrics["chance_r1"], "above chance" if result["passed"] else "NOT above chance",
                 result["data_version"][:16])
    else:
        log.warning("no held-out videos (eval_fraction=0): no retrieval metrics")
    if run.dist.distributed:
        torch.distributed.barrier()
    return metrics


# -------------------------------------------------------------------------------- train


SPLIT_NAME = "split.json"


def _write_split(path: Path, group: str, train: list[ShardSpec], test: list[ShardSpec]) -> None:
    """The held-out split actually used: its grouping and each side's videos with their group value."""
    side = lambda shards: {s.video_id: s.column(group) for s in shards}  # noqa: E731
    atomic_write_json(path, {"split_group": group, "train": side(train), "test": side(test)})


def setup_run(cfg: TrainConfig, dist: DistInfo, reporter: TrainingReporter, folder: RunFolder | None = None) -> Run:
    """Split the shards, then build a new run or restore the newest checkpoint's (``folder``: the
    run folder's home in the lake, whose checkpoints are published as they are written)."""
    precision = resolve_precision(cfg.precision, dist.device)
    out_dir = Path(cfg.output_dir)
    folder = folder or RunFolder(out_dir)
    manager = CheckpointManager(out_dir / "checkpoints", keep=cfg.keep_checkpoints,
                                publish=folder.publish_checkpoint)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in manager.clean_stale():
            log.warning("removed %s, left by a run killed while writing a checkpoint", stale)
    try:
        shards = load_shard_index(cfg.shards)
        group = "platform" if cfg.eval_platforms else split_grouping(shards, cfg.split_group)
        train_shards, test_shards = split_by_video(shards, cfg.eval_fraction, cfg.split_seed, cfg.eval_platforms,
                                                   group_by=group)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not train_shards:
        raise ConfigError("no training videos after the split")
    if cfg.eval_platforms and not test_shards:
        raise ConfigError(f"eval_platforms {cfg.eval_platforms}: the index has no video of those platforms")
    log.info("%d train videos, %d held-out videos (split by %s); precision %s on %s, world size %d",
             len({s.video_id for s in train_shards}), len({s.video_id for s in test_shards}), group, precision,
             dist.device, dist.world_size)
    if dist.is_main:
        _write_split(out_dir / SPLIT_NAME, group, train_shards, test_shards)
    latest = manager.latest()
    if latest is not None:
        log.info("resuming from %s%s", latest,
                 f" (Dagster retry {reporter.retry_number})" if reporter.retry_number else "")
        model = V2LCModel.from_pretrained(latest)
        model.set_freeze(video=cfg.freeze_video, text=cfg.freeze_text)
    else:
        model = _build_model(cfg, train_shards, dist)
    model.set_gradient_checkpointing(cfg.gradient_checkpointing)  # a resume may switch it
    model.to(dist.device).train()
    optimizer = torch.optim.AdamW(adamw_param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=tuple(cfg.betas), eps=cfg.eps)
    run = Run(cfg, dist, precision, model, optimizer,
              cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio),
              torch.amp.GradScaler(dist.device.type, enabled=precision == "fp16"), manager,
              train_shards, test_shards, group, folder)
    seed_everything(cfg.seed + 1000 * dist.rank)  # per-rank dropout streams
    if latest is not None:
        _load_checkpoint(run, latest)
    run.net = model
    if dist.distributed:
        run.net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    return run


def train_loader(cfg: TrainConfig, shards: list[ShardSpec], tokenizer, dist: DistInfo,
                 start_batch: int = 0) -> torch.utils.data.DataLoader:
    """The training batches of this rank from micro-batch ``start_batch`` on (endless)."""
    stream = SegmentStream(shards, batch_size=cfg.batch_size, tokenizer=tokenizer,
                           max_comments=cfg.max_comments, max_length=cfg.text_max_length, seed=cfg.seed,
                           shuffle_buffer=cfg.shuffle_buffer, open_shards=cfg.open_shards,
                           start_batch=start_batch, rank=dist.rank, world_size=dist.world_size,
                           on_error=cfg.on_error, max_per_video=cfg.max_per_video,
                           shuffle_comments=cfg.shuffle_comments)
    return make_loader(stream, num_workers=cfg.num_workers, pin_memory=dist.device.type == "cuda", seed=cfg.seed)


def train(cfg: TrainConfig, reporter: TrainingReporter | None = None,
          dist: DistInfo | None = None, folder: RunFolder | None = None) -> dict[str, Any]:
    """Train (or resume) to ``max_steps`` and write the outputs (``cfg.output_dir``, published to
    ``folder``'s lake URL where it has one); returns the final metrics (rank 0)."""
    reporter = reporter or TrainingReporter()
    dist = dist or init_distributed(cfg.device)
    if cfg.num_workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers + forked workers
    run = setup_run(cfg, dist, reporter, folder)
    state = run.state
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    todo = state.step < cfg.max_steps
    bar = None
    if cfg.progress and dist.is_main and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=state.step, desc="v2lc", unit="step", dynamic_ncols=True)
    batches = (iter(train_loader(cfg, run.train_shards, run.model.tokenizer, dist, state.micro_batches))
               if todo else iter(()))  # a finished run only re-evaluates
    try:
        while state.step < cfg.max_steps:
            t0 = time.perf_counter()
            loss_value = _train_step(run, batches)
            step_time = time.perf_counter() - t0
            state.step += 1
            if state.step > 1 or cfg.max_steps == 1:  # the first step pays for warm-up and lazy init
                state.train_time_s += step_time
                state.timed_steps += 1
            state.loss_history.append([state.step, loss_value])
            _report_progress(run, bar, loss_value)
            if cfg.eval_every and state.step % cfg.eval_every == 0 and run.test_shards and state.step < cfg.max_steps:
                _periodic_eval(run)
            if state.step == cfg.max_steps or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0):
                _save_checkpoint(run)
            trainutil.after_optimizer_step(state.step)
    finally:
        if bar is not None:
            bar.close()
        del batches  # shut the loader's workers down
    return _finish(run, reporter)


def _report_progress(run: Run, bar, loss_value: float) -> None:
    lr = run.scheduler.get_last_lr()[0]
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", clips_s=f"{run.clips_per_s():.1f}", lr=f"{lr:.2e}")
    if run.state.step % run.cfg.log_every == 0:
        log.info("step %d/%d loss %.4f lr %.3e %.1f clips/s", run.state.step, run.cfg.max_steps, loss_value, lr,
                 run.clips_per_s())


def _train_step(run: Run, batches) -> float:
    """One optimiser step over ``grad_accum`` micro-batches; raises before stepping on NaN/inf."""
    cfg, device = run.cfg, run.device
    step = run.state.step + 1
    loss_sum = torch.zeros((), device=device)
    for micro in range(cfg.grad_accum):
        frames, ids, attn, mask = _batch_to(next(batches), device)
        run.state.micro_batches += 1
        last = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if (last or not run.dist.distributed) else run.net.no_sync()
        with sync:
            with autocast(device, run.precision):
                out = run.net(frames, ids, attn, mask)
            loss = v2lc_loss(out.video_embeds, out.comment_embeds, out.comment_segment, out.logit_scale,
                             positives=cfg.positives).loss
            loss = trainutil.loss_hook(loss, step)
            run.scaler.scale(loss / cfg.grad_accum).backward()
        loss_sum += loss.detach()
    optimizer, scaler = run.optimizer, run.scaler
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    params = [p for p in run.model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    # one device sync per step for both checks
    loss_total, norm_value = torch.stack([loss_sum, grad_norm.float()]).tolist()
    loss_value = loss_total / cfg.grad_accum
    # the loss is global (gathered across ranks), so every rank takes these branches together
    if not math.isfinite(loss_value):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(step, "loss", loss_value)
    if not math.isfinite(norm_value) and not scaler.is_enabled():  # fp16's scaler skips such steps itself
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(step, "gradient norm", norm_value)
    scaler.step(optimizer)
    scaler.update()
    run.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    run.model.clamp_logit_scale_()
    return loss_value


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    return program_main(argv, "lcaffect_ml.train_v2lc", "V2LC pretraining", TrainConfig, _run)


def _run(cfg: TrainConfig) -> int:
    dist = init_distributed(cfg.device)  # e.g. device cuda where CUDA is not usable: before any data is read
    try:
        # output_dir may be a lake URL: the program works in a local copy and publishes to the lake
        with run_folder(cfg.output_dir, COMPLETE_MARKER, pull=dist.is_main) as folder, \
                pipes_session(rank=dist.rank, asset_key=cfg.pipes_asset_key) as reporter:
            if dist.distributed:
                torch.distributed.barrier()  # rank 0 has pulled the lake's newest checkpoint
            metrics = train(dataclasses.replace(cfg, output_dir=str(folder.local)), reporter=reporter, dist=dist,
                            folder=folder)
    finally:
        if dist.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if dist.is_main:
        keys = ("v2c_r1", "v2c_r5", "v2c_r10", "v2c_medr", "c2v_r1", "c2v_r5", "c2v_r10", "c2v_medr",
                "chance_r1", "steps", "clips_per_s", "final_loss")
        print(json.dumps({k: metrics[k] for k in keys if k in metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
