"""Downstream fusion training on CH-SIMS v2, MELD or MUStARD, with or without the live-comment features.

Run::

    python -m lcaffect_ml.train_fusion --config fusion.yaml [--set key=value ...]

Reads the utterance table (Parquet, ``UTTERANCES_SCHEMA`` columns) and a features folder
(``base_features.safetensors``, ``lc_features.safetensors``, ``features.json``), joins them by
``utterance_id``, and trains one ``FusionModel`` per seed (and per fold for MUStARD's
speaker-dependent protocol). Rows whose ``media_status`` is not ``ok``, that have no features, or
whose label is unusable are skipped and counted (``metrics.json`` → ``skipped``).

Splits: CH-SIMS v2 and MELD use the official ``split`` column (train/valid/test; the model of the
epoch with the best validation ``select_metric`` is tested). MUStARD has no official split:
``protocol: speaker_dependent`` (the default, ``contracts.tables.DEFAULT_PROTOCOLS``, as in Dagster) is a
5-fold cross-validation over all rows: the official folds (the table's ``fold`` column, read from
MUStARD's ``split_indices.json`` by the loader) when every row has one, else stratified ``folds``
folds (fixed ``split_seed``), the same folds for every seed; a seed's metrics are the mean over its
folds and ``metrics.json["folds_used"]`` says which folds were used. ``speaker_independent`` trains
on every show but ``held_out_show`` (FRIENDS, case-insensitive) and tests on it. Without a
validation split the last epoch's model is tested.

Re-running the same command resumes: finished runs (``runs/<run>/result.json`` with a matching
fingerprint of the config and the input data) are reused, an unfinished one continues from its
newest checkpoint in ``checkpoints/<run>/step-N`` (model, optimiser, scheduler, grad scaler, RNG
states, best-so-far weights); on CPU a killed and resumed run ends with identical weights. A run
whose fingerprint changed (other options, a new V2LC checkpoint's features) starts again.

Options: a YAML or JSON mapping (``--set key=value`` overrides one, the value parsed as YAML), each
documented where ``FusionTrainConfig`` (``lcaffect_ml.fusion_data``) declares it; ``--help`` lists
them with their defaults.
Tests inject a crash after a step or a NaN loss through ``trainutil.after_optimizer_step`` and
``trainutil.loss_hook`` (tests/faults.py); no option or flag of the program does.

Outputs in ``output_dir``: ``metrics.json`` ({"task", "use_lc", "protocol", "seeds": {seed:
{metric: value}}, "mean", "std" (population std over seeds), "folds", "valid", "skipped",
"counts", "features", "runs", and with LC "lc_permuted": {"seeds": {seed: {metric: value}}}: the
same models tested with the LC tokens shuffled across the test utterances, the wiring control
that should fall back to about the without-LC figures}, and "predictions": {"ids", "labels", "seeds": {seed:
[prediction per id]}, "lc_permuted"}: every test utterance, for the ablation's paired bootstrap),
``model.safetensors`` + ``config.json`` of the last run (last
seed, last fold), ``runs/<run>/`` (each run's selected model and result), ``checkpoints/<run>/``.
Under Dagster Pipes one materialization carries the mean metrics as numeric metadata.

Exit status: 0 done; 65 (``EXIT_NON_FINITE``) loss or gradient norm NaN/inf (no checkpoint of
those weights is written); 2 bad config or unusable input files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import trainutil
from .fusion import LC_MODALITY, FusionModel
from .metrics import METRIC_NAMES, NUM_CLASSES, is_better, selection_metric, task_metrics
from .fusion_data import (NON_RESULT_KEYS, FusionTrainConfig, FusionData, load_data, RunSplit, make_splits,
                          describe_folds)
from .devices import RUNTIME_KEYS, resolve_device, runtime_info
from .pipes import TrainingReporter, pipes_session, report_model_materialization
from .program import program_main
from .contracts.hashing import sha256_file
from .contracts.runs import FUSION_FINISHED
from .lake_folder import RunFolder, local_inputs, run_folder
from .trainutil import (adamw_param_groups, atomic_write_json, autocast, capture_rng_state, CheckpointManager,
                        COMPLETE_MARKER, cosine_schedule_with_warmup, load_state, NonFiniteLossError, 
                        resolve_precision, restore_rng_state, save_state, seed_everything)

log = logging.getLogger("lcaffect_ml.train_fusion")

# ---------------------------------------------------------------------- one training run


@dataclass
class RunState:
    step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    best_valid: dict | None = None
    history: list = field(default_factory=list)  # {"epoch", "train_loss", "valid": {...}}
    epoch_loss_sum: float = 0.0
    epoch_batches: int = 0
    train_time_s: float = 0.0
    resumed_from: int | None = None


def run_name(seed: int, fold: int | None) -> str:
    return f"seed-{seed}" + (f"-fold-{fold}" if fold is not None else "")


def run_fingerprint(cfg: FusionTrainConfig, data: FusionData, seed: int, fold: int | None) -> str:
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NON_RESULT_KEYS}
    if options["modalities"] is None:  # all the features hold: data.fingerprint says which (earlier runs stay valid)
        del options["modalities"]
    if not options["text_tune_layers"]:  # frozen text: the key runs had before the option (they stay valid)
        del options["text_tune_layers"], options["text_tune_lr"]
    blob = json.dumps({"options": options, "seed": seed, "fold": fold, "data": data.fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def feature_stats(inputs: dict[str, torch.Tensor], rows: np.ndarray, modalities) -> dict[str, tuple]:
    """Per-dimension mean/std over the valid tokens of the training rows (float64 accumulation)."""
    idx = torch.as_tensor(rows, dtype=torch.long)
    stats = {}
    for m in modalities:
        x, lengths = inputs[m].index_select(0, idx), inputs[f"{m}_len"].index_select(0, idx)
        valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        tokens = x[valid].double()
        if tokens.shape[0] == 0:
            stats[m] = (torch.zeros(x.shape[-1]), torch.ones(x.shape[-1]))
        else:
            stats[m] = (tokens.mean(0).float(), tokens.std(0, unbiased=False).float())
    return stats


def _param_groups(model: FusionModel, cfg: FusionTrainConfig) -> list[dict[str, Any]]:
    """AdamW's groups, with the tuned text encoder layers at their own (lower) learning rate."""
    tower = {id(p) for p in model.text_tower.parameters()} if model.text_tower is not None else set()
    groups = []
    for group in adamw_param_groups(model, cfg.weight_decay):
        for params, lr in (([p for p in group["params"] if id(p) not in tower], cfg.lr),
                           ([p for p in group["params"] if id(p) in tower], cfg.text_tune_lr)):
            if params:
                groups.append({**group, "params": params, "lr": lr})
    return groups


def _batch(inputs: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows ``idx``, each modality cut to the longest sequence in the batch (padding is masked anyway)."""
    out = {}
    for key, value in inputs.items():
        if key.endswith("_len"):
            continue
        lengths = inputs[f"{key}_len"].index_select(0, idx)
        longest = int(lengths.max()) if lengths.numel() else 0
        out[key] = value.index_select(0, idx)[:, :longest]
        out[f"{key}_len"] = lengths
    return out


def _class_weights(cfg: FusionTrainConfig, labels: np.ndarray, device: torch.device) -> torch.Tensor | None:
    if cfg.class_weights is None or cfg.task == "chsims2":
        return None
    if cfg.class_weights != "balanced":
        return torch.tensor([float(w) for w in cfg.class_weights], device=device)
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels.astype(np.int64))
    weights = np.zeros(NUM_CLASSES[cfg.task])  # a class absent from training gets no weight
    weights[present] = compute_class_weight("balanced", classes=present, y=labels.astype(np.int64))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _loss(cfg: FusionTrainConfig, out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None):
    out = out.float()
    if cfg.task == "chsims2":
        fn = F.l1_loss if cfg.regression_loss == "l1" else F.mse_loss
        return fn(out.squeeze(-1), target.float())
    return F.cross_entropy(out, target.long(), weight=weight)


@torch.no_grad()
def predict(model: FusionModel, inputs: dict[str, torch.Tensor], rows: np.ndarray, batch_size: int,
            device: torch.device, precision: str) -> np.ndarray:
    """Regression values (N,) or class indices (N,) for ``rows``, in eval mode."""
    was_training = model.training
    model.eval()
    outs = []
    try:
        for start in range(0, len(rows), batch_size):
            idx = torch.as_tensor(rows[start:start + batch_size], dtype=torch.long, device=device)
            with autocast(device, precision):
                out = model(_batch(inputs, idx)).float()
            outs.append(out.squeeze(-1) if model.config.is_regression else out.argmax(-1))
    finally:
        model.train(was_training)
    return torch.cat(outs).cpu().numpy()


def permute_lc(inputs: dict[str, torch.Tensor], rows: np.ndarray, seed: int) -> dict[str, torch.Tensor]:
    """``inputs`` with the live-comment tokens of ``rows`` shuffled among those rows (the wiring
    control: a model that uses each utterance's own LC features loses what they added)."""
    order = np.random.default_rng([seed, 0x1C]).permutation(len(rows))
    src = torch.as_tensor(rows[order], dtype=torch.long, device=inputs[LC_MODALITY].device)
    dst = torch.as_tensor(rows, dtype=torch.long, device=src.device)
    out = dict(inputs)
    for key in (LC_MODALITY, f"{LC_MODALITY}_len"):
        out[key] = inputs[key].index_copy(0, dst, inputs[key].index_select(0, src))
    return out


def _epoch_order(seed: int, fold: int | None, epoch: int, n: int) -> np.ndarray:
    """The training order of an epoch, a function of (seed, fold, epoch) only, so a resume replays it."""
    return np.random.default_rng([seed, 0 if fold is None else fold + 1, epoch, 0xF05]).permutation(n)


class FusionRun:
    """One training run (a seed, and a fold for k-fold protocols): train, select, test."""

    def __init__(self, cfg: FusionTrainConfig, data: FusionData, split: RunSplit, seed: int,
                 device: torch.device, precision: str, folder: RunFolder | None = None):
        self.cfg, self.data, self.split, self.seed = cfg, data, split, seed
        self.device, self.precision = device, precision
        self.name = run_name(seed, split.fold)
        out = Path(cfg.output_dir)
        # folder: the run folder's home in the lake (checkpoints and finished runs published there)
        self.folder = folder or RunFolder(out)
        self.run_dir = out / "runs" / self.name
        self.manager = CheckpointManager(out / "checkpoints" / self.name, keep=cfg.keep_checkpoints,
                                         publish=self.folder.publish_checkpoint)
        self.fingerprint = run_fingerprint(cfg, data, seed, split.fold)
        self.steps_per_epoch = math.ceil(len(split.train) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.last_checkpoint = time.monotonic()

    # ------------------------------------------------------------------ entry point

    def run(self) -> dict[str, Any]:
        done = self._finished_result()
        if done is not None:
            log.info("%s: finished earlier with this configuration; reusing %s", self.name, self.run_dir)
            return done
        self._start_clean_if_config_changed()
        latest = self.manager.latest()
        seed_everything(self.seed)
        cfg = self.cfg
        model = FusionModel(cfg.model_config(self.data))
        model.set_feature_stats(feature_stats(self.data.inputs, self.split.train, model.standardised))
        if model.text_tower is not None and latest is None:
            model.text_tower.load_pretrained(model.config.text_tower["model"])
        model.to(self.device).train()
        optimizer = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
        scheduler = cosine_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * self.total_steps),
                                                self.total_steps, cfg.min_lr_ratio)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        state, best_weights = RunState(), None
        if latest is not None:
            state, best_weights = self._load_checkpoint(latest, model, optimizer, scheduler, scaler)
            log.info("%s: resuming from %s", self.name, latest)
        best_weights = self._train(model, optimizer, scheduler, scaler, state, best_weights)
        return self._finish(model, state, best_weights)

    # --------------------------------------------------------------------- training

    def _train(self, model, optimizer, scheduler, scaler, state: RunState, best_weights):
        cfg, data, device = self.cfg, self.data, self.device
        inputs = {k: v.to(device) for k, v in data.inputs.items()}
        labels = torch.as_tensor(data.labels, dtype=torch.float32, device=device)
        weight = _class_weights(cfg, data.labels[self.split.train], device)
        while state.step < self.total_steps:
            epoch, position = divmod(state.step, self.steps_per_epoch)
            order = self.split.train[_epoch_order(self.seed, self.split.fold, epoch, len(self.split.train))]
            rows = order[position * cfg.batch_size:(position + 1) * cfg.batch_size]
            idx = torch.as_tensor(rows, dtype=torch.long, device=device)
            t0 = time.perf_counter()
            loss = self._step(model, optimizer, scheduler, scaler, _batch(inputs, idx), labels[idx], weight,
                              state.step + 1)
            state.train_time_s += time.perf_counter() - t0
            state.step += 1
            state.epoch_loss_sum += loss
            state.epoch_batches += 1
            if state.step % self.steps_per_epoch == 0:
                best_weights = self._end_epoch(model, inputs, state, epoch + 1, best_weights)
            if self._checkpoint_due(state):
                self._save_checkpoint(model, optimizer, scheduler, scaler, state, best_weights)
                self.last_checkpoint = time.monotonic()
            trainutil.after_optimizer_step(state.step)
        return best_weights

    def _checkpoint_due(self, state: RunState) -> bool:
        cfg = self.cfg
        if state.step == self.total_steps:
            return True
        if cfg.checkpoint_every:
            return state.step % cfg.checkpoint_every == 0
        return (state.step % self.steps_per_epoch == 0
                and time.monotonic() - self.last_checkpoint >= cfg.checkpoint_every_s)

    def _step(self, model, optimizer, scheduler, scaler, batch, target, weight, step: int) -> float:
        with autocast(self.device, self.precision):
            out = model(batch)
        loss = _loss(self.cfg, out, target, weight)
        loss = trainutil.loss_hook(loss, step)
        scaler.scale(loss).backward()
        if scaler.is_enabled():
            scaler.unscale_(optimizer)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        loss_value, norm_value = torch.stack([loss.detach().float(), norm.float()]).tolist()
        if not math.isfinite(loss_value):
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step, f"{self.name} loss", loss_value)
        if not math.isfinite(norm_value) and not scaler.is_enabled():  # fp16's scaler skips such steps itself
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step, f"{self.name} gradient norm", norm_value)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_value

    def _end_epoch(self, model, inputs, state: RunState, epoch: int, best_weights):
        cfg = self.cfg
        entry: dict[str, Any] = {"epoch": epoch, "train_loss": state.epoch_loss_sum / max(1, state.epoch_batches)}
        state.epoch_loss_sum, state.epoch_batches = 0.0, 0
        valid = self.split.valid
        if valid is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            preds = predict(model, inputs, valid, cfg.eval_batch_size, self.device, self.precision)
            value = selection_metric(cfg.task, cfg.select_metric, preds, self.data.labels[valid])
            entry["valid"] = {cfg.select_metric: value}
            if is_better(cfg.select_metric, value, state.best_value):  # every metric only for a new best
                state.best_value, state.best_epoch = value, epoch
                state.best_valid = task_metrics(cfg.task, preds, self.data.labels[valid])
                best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        state.history.append(entry)
        if epoch % cfg.log_every == 0 or epoch == cfg.epochs:
            extra = f", valid {cfg.select_metric} {entry['valid'][cfg.select_metric]:.4f}" if "valid" in entry else ""
            log.info("%s epoch %d/%d: train loss %.4f%s", self.name, epoch, cfg.epochs, entry["train_loss"], extra)
        return best_weights

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model, optimizer, scheduler, scaler, state: RunState, best_weights) -> None:
        def write(folder: Path) -> None:
            model.save_pretrained(folder)
            save_state(folder, "optimizer", optimizer.state_dict())
            save_state(folder, "scheduler", scheduler.state_dict())
            save_state(folder, "scaler", scaler.state_dict())
            save_state(folder, "rng", capture_rng_state())
            if best_weights is not None:
                save_state(folder, "best", best_weights)
            atomic_write_json(folder / COMPLETE_MARKER, {**dataclasses.asdict(state), "run": self.name,
                                                         "fingerprint": self.fingerprint,
                                                         "config": dataclasses.asdict(self.cfg)})

        self.manager.save(state.step, write)

    def _load_checkpoint(self, path: Path, model, optimizer, scheduler, scaler):
        from safetensors.torch import load_file

        saved = json.loads((path / COMPLETE_MARKER).read_text(encoding="utf-8"))
        model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(self.device)))
        optimizer.load_state_dict(load_state(path, "optimizer"))
        scheduler.load_state_dict(load_state(path, "scheduler"))
        scaler.load_state_dict(load_state(path, "scaler"))
        restore_rng_state(load_state(path, "rng"))
        best = load_state(path, "best") if (path / "best.safetensors").is_file() else None
        state = RunState(**{k: saved[k] for k in dataclasses.asdict(RunState()) if k in saved})
        state.resumed_from = saved["step"]
        return state, best

    def _finished_result(self) -> dict[str, Any] | None:
        path = self.run_dir / "result.json"
        if not path.is_file() or not (self.run_dir / "model.safetensors").is_file():
            return None
        result = json.loads(path.read_text(encoding="utf-8"))
        return result if result.get("fingerprint") == self.fingerprint else None

    def _start_clean_if_config_changed(self) -> None:
        for stale in self.manager.clean_stale():
            log.warning("removed %s, left by a run killed while writing a checkpoint", stale)
        latest = self.manager.latest()
        if latest is None:
            return
        saved = json.loads((latest / COMPLETE_MARKER).read_text(encoding="utf-8"))
        if saved.get("fingerprint") != self.fingerprint:
            log.warning("%s: checkpoints in %s come from another configuration or other input data: "
                        "training this run again from scratch", self.name, self.manager.root)
            shutil.rmtree(self.manager.root)

    # ----------------------------------------------------------------------- result

    def _finish(self, model: FusionModel, state: RunState, best_weights) -> dict[str, Any]:
        cfg = self.cfg
        if best_weights is not None:  # the epoch with the best validation score
            model.load_state_dict(best_weights)
        test = self.split.test
        inputs = {k: v.to(self.device) for k, v in self.data.inputs.items()}
        preds = predict(model, inputs, test, cfg.eval_batch_size, self.device, self.precision)
        metrics = task_metrics(cfg.task, preds, self.data.labels[test])
        permuted, permuted_preds = None, None
        if cfg.use_lc:
            permuted_preds = predict(model, permute_lc(inputs, test, self.seed), test, cfg.eval_batch_size,
                                     self.device, self.precision)
            permuted = task_metrics(cfg.task, permuted_preds, self.data.labels[test])
        model.save_pretrained(self.run_dir)
        result = {
            "run": self.name, "seed": self.seed, "fold": self.split.fold, "test": metrics,
            "test_lc_permuted": permuted,
            "valid": state.best_valid, "selected_epoch": state.best_epoch if best_weights is not None else cfg.epochs,
            "selection": "best_valid" if best_weights is not None else "last_epoch",
            "steps": state.step, "train_time_s": state.train_time_s,
            "resumed_from_step": state.resumed_from if state.resumed_from is not None else -1,
            "n_train": len(self.split.train), "n_test": len(test),
            "n_valid": len(self.split.valid) if self.split.valid is not None else 0,
            "history": state.history, "fingerprint": self.fingerprint,
            # per test utterance, for the ablation's paired bootstrap over utterances
            "test_ids": [self.data.ids[i] for i in test], "test_labels": self.data.labels[test].tolist(),
            "test_predictions": preds.tolist(),
            "test_predictions_lc_permuted": None if permuted_preds is None else permuted_preds.tolist(),
            "checkpoint": self.folder.location(self.manager.latest()),
        }
        atomic_write_json(self.run_dir / "result.json", result)
        self.folder.publish_tree(self.run_dir, last=("result.json",))  # a later attempt reuses this run
        log.info("%s: test %s", self.name, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return result


# ------------------------------------------------------------------------- all runs


def aggregate(cfg: FusionTrainConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed metrics (the mean over folds for k-fold), then mean and population std over seeds."""
    names = METRIC_NAMES[cfg.task]
    per_seed, folds, valid, permuted = {}, {}, {}, {}
    for seed in cfg.seeds:
        runs = [r for r in results if r["seed"] == seed]
        per_seed[str(seed)] = {k: float(np.mean([r["test"][k] for r in runs])) for k in names}
        if runs[0].get("test_lc_permuted"):
            permuted[str(seed)] = {k: float(np.mean([r["test_lc_permuted"][k] for r in runs])) for k in names}
        if runs[0]["fold"] is not None:
            folds[str(seed)] = [r["test"] for r in runs]
        if runs[0]["valid"] is not None:
            valid[str(seed)] = runs[0]["valid"]
    table = np.asarray([[per_seed[str(s)][k] for k in names] for s in cfg.seeds], dtype=np.float64)
    predictions = per_utterance_predictions(cfg.seeds, results)
    return {
        "task": cfg.task, "use_lc": cfg.use_lc, "protocol": cfg.protocol or "official",
        "seeds": per_seed,
        "mean": dict(zip(names, table.mean(axis=0).tolist())),
        "std": dict(zip(names, table.std(axis=0).tolist())),
        **({"folds": folds} if folds else {}),
        **({"valid": valid} if valid else {}),
        # the same models tested with the LC tokens shuffled across test utterances (per seed)
        **({"lc_permuted": {"seeds": permuted}} if permuted else {}),
        **({"predictions": predictions} if predictions else {}),
    }


def per_utterance_predictions(seeds: list[int], results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Every tested utterance's label and each seed's prediction (over all folds; each utterance is
    tested once per seed), aligned with ``ids``; None when a reused run predates these records."""
    if any("test_ids" not in r for r in results):
        return None
    labels: dict[str, float] = {}
    by_seed: dict[str, dict[str, float]] = {str(s): {} for s in seeds}
    permuted: dict[str, dict[str, float]] = {str(s): {} for s in seeds}
    for r in results:
        for i, (uid, label, pred) in enumerate(zip(r["test_ids"], r["test_labels"], r["test_predictions"])):
            labels[uid] = label
            by_seed[str(r["seed"])][uid] = pred
            if r.get("test_predictions_lc_permuted") is not None:
                permuted[str(r["seed"])][uid] = r["test_predictions_lc_permuted"][i]
    ids = list(labels)
    out = {"ids": ids, "labels": [labels[u] for u in ids],
           "seeds": {s: [p[u] for u in ids] for s, p in by_seed.items()}}
    if all(len(p) == len(ids) for p in permuted.values()):
        out["lc_permuted"] = {s: [p[u] for u in ids] for s, p in permuted.items()}
    return out


def train(cfg: FusionTrainConfig, reporter: TrainingReporter | None = None,
          folder: RunFolder | None = None) -> dict[str, Any]:
    """Every seed's (and fold's) run, the aggregate metrics and the last run's model in
    ``cfg.output_dir`` (published to ``folder``'s lake URL where it has one)."""
    reporter = reporter or TrainingReporter()
    folder = folder or RunFolder(Path(cfg.output_dir))
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg)
    splits = make_splits(data, cfg)
    log.info("%s: %d utterances used (%d skipped), %d run(s) per seed, %d seed(s), use_lc=%s, %s on %s",
             cfg.task, len(data.ids), sum(data.skipped.values()), len(splits), len(cfg.seeds), cfg.use_lc,
             precision, device)
    results = [FusionRun(cfg, data, split, seed, device, precision, folder).run()
               for seed in cfg.seeds for split in splits]
    metrics = aggregate(cfg, results)
    metrics.update({
        "skipped": data.skipped,
        "counts": {"utterances_used": len(data.ids),
                   **{str(s): int((data.split == s).sum()) for s in np.unique(data.split)}},
        "features": data.feature_info,
        "runs": [{k: r[k] for k in ("run", "seed", "fold", "selection", "selected_epoch", "steps", "train_time_s",
                                    "resumed_from_step", "n_train", "n_valid", "n_test")} for r in results],
        "model_run": results[-1]["run"], **runtime_info(device, precision),
        **({"folds_used": folds_used} if (folds_used := describe_folds(data, cfg)) else {}),
    })
    last = out_dir / "runs" / results[-1]["run"]
    FusionModel.from_pretrained(last).save_pretrained(out_dir)  # byte-identical copy, written atomically
    # the data version, hashed once here and recorded: a reuse of the finished run reads it
    metrics["model_sha256"] = sha256_file(out_dir / "model.safetensors")
    atomic_write_json(out_dir / "metrics.json", metrics)
    folder.publish(last=FUSION_FINISHED)  # before the report: what it names is in the lake
    report_model_materialization(reporter, _pipes_summary(metrics), metrics["model_sha256"],
                                 folder.location(out_dir), results[-1]["checkpoint"])
    return metrics


def _pipes_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = dict(metrics["mean"])
    summary.update({f"{k}_std": v for k, v in metrics["std"].items()})
    summary.update({"task": metrics["task"], "use_lc": metrics["use_lc"], "protocol": metrics["protocol"],
                    "n_seeds": len(metrics["seeds"]), "utterances_used": metrics["counts"]["utterances_used"],
                    "skipped_rows": sum(metrics["skipped"].values()),
                    "lc_version": str(metrics["features"].get("lc_version") or ""),
                    **{k: metrics[k] for k in RUNTIME_KEYS if k in metrics}})
    if metrics.get("folds_used"):
        summary["folds_used"] = metrics["folds_used"]
    return summary


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    return program_main(argv, "lcaffect_ml.train_fusion", "Downstream fusion training", FusionTrainConfig, _run)


def _run(cfg: FusionTrainConfig) -> int:
    # inputs and the run folder may be lake URLs: the program works on local copies and publishes
    with local_inputs({"utterances": cfg.utterances, "features_dir": cfg.features_dir}, cfg.output_dir) as inputs, \
            run_folder(cfg.output_dir, COMPLETE_MARKER) as folder, \
            pipes_session(asset_key=cfg.pipes_asset_key) as reporter:
        metrics = train(dataclasses.replace(cfg, output_dir=str(folder.local), **inputs), reporter=reporter,
                        folder=folder)
    print(json.dumps({"task": metrics["task"], "use_lc": metrics["use_lc"], "mean": metrics["mean"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
