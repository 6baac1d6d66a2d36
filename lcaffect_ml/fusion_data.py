"""The fusion trainer's input side: its configuration, the data contract it reads (the utterance
table joined with the extracted features, ``lcaffect_ml.contracts.tables``) and the splits of
each protocol (official splits; MUStARD speaker-dependent folds or the held-out show).

``python -m lcaffect_ml.train_fusion`` (``lcaffect_ml.train_fusion``) trains on what ``load_data``
and ``make_splits`` return.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fusion import BASE_MODALITIES, LC_MODALITY, FusionConfig, check_base_modalities
from .metrics import METRIC_NAMES, NUM_CLASSES, TASKS
from .contracts.hashing import sha256_file
from .feature_io import FeatureFileError, load_features
from .contracts.tables import (BASE_FILE, DEFAULT_PROTOCOLS, FUSION_COLUMNS, FUSION_REQUIRED, LC_FILE, MEDIA_OK,
                               META_FILE)
from .options import ConfigError, build, check_bounds, opt

# the program's logger: messages keep the name they had before the module was split
log = logging.getLogger("lcaffect_ml.train_fusion")

PROTOCOLS = ("speaker_dependent", "speaker_independent")
# Where MUStARD's speaker-dependent folds come from: the official ones (the table's ``fold``
# column, from split_indices.p / .json) when every row has one, else stratified folds drawn here.
FOLD_SOURCES = ("auto", "official", "stratified")
DEFAULT_SELECT = {"chsims2": "mae", "meld": "weighted_f1", "mustard": "weighted_f1"}
MAX_SEEDS = 100  # fusion runs per arm: each seed trains every fold again
# Options that do not change a run's result: left out of its fingerprint.
NON_RESULT_KEYS = ("output_dir", "utterances", "features_dir", "seeds", "checkpoint_every", "checkpoint_every_s",
                   "keep_checkpoints", "log_every", "pipes_asset_key", "eval_batch_size", "device")


class DownstreamDataError(ConfigError):
    """The utterance table or a feature file named by the config is unreadable or inconsistent."""


@dataclass
class FusionTrainConfig:
    task: str = opt(help="chsims2 | meld | mustard", section="Data")
    utterances: str = opt(help="the utterance table (Parquet, lcaffect_ml.contracts.tables §1)")
    features_dir: str = opt(help="the features folder written by lcaffect_ml.extract_features")
    output_dir: str = opt(help="where everything is written: metrics.json, the model, runs/, checkpoints/")
    use_lc: bool = opt(True, "include the synthetic live-comment tokens; false is the ablation's other arm")
    modalities: list | None = opt(None, "the other modalities the model reads: a non-empty subset of text, audio, "
                                  "visual (the features folder must hold them); null: every one it holds. "
                                  "Without audio, visual and LC, utterances whose media are missing are kept")
    seeds: list = opt(help="seeds of model init, dropout and data order; metrics are mean ± std over them",
                      factory=lambda: [0], max_items=MAX_SEEDS)
    protocol: str | None = opt(None, "MUStARD only: speaker_dependent (the default: 5-fold cross-validation) | "
                               "speaker_independent (held_out_show is the test set); the other tasks use their "
                               "official split")
    folds: int = opt(5, "MUStARD speaker_dependent with stratified folds: how many")
    fold_source: str = opt("auto", "MUStARD speaker_dependent: auto (the official folds when the table has them, "
                           "else stratified) | official (refuse a table without them) | stratified")
    split_seed: int = opt(0, "seed of the stratified folds (the same folds for every seed)")
    valid_fraction: float = opt(0.0, "a split without validation rows (MUStARD's folds, the held-out show): this "
                                "stratified share of its training rows (drawn with split_seed, the same for every "
                                "seed) chooses the epoch by select_metric; 0: the last epoch is kept")
    held_out_show: str = opt("FRIENDS", "MUStARD speaker_independent: the show tested on (case-insensitive)")
    d_model: int = opt(128, "the fusion transformer's width", section="Model (FusionConfig)")
    num_layers: int = opt(2, "transformer layers over the modality tokens")
    num_heads: int = opt(4, "attention heads")
    ff_dim: int = opt(256, "feed-forward width")
    dropout: float = opt(0.1, "dropout")
    text_tune_layers: int = opt(0, "0: the text features as extracted (frozen); k > 0: the fusion model holds the "
                                "text encoder's top k layers, initialised from its checkpoint and fine-tuned (the "
                                "features must be extracted with text_layers_below_top k; lcaffect_ml.text_tower)",
                                low=0)
    text_tune_lr: float = opt(5e-5, "with text_tune_layers: the learning rate of the tuned encoder layers (the "
                              "rest of the model uses lr)", above=0, high=1.0)
    regression_activation: str = opt("linear", "CH-SIMS v2 output: linear (predictions clipped to [-1, 1] when "
                                     "scored) | tanh")
    epochs: int = opt(30, "passes over the training split", section="Optimisation", low=1)
    batch_size: int = opt(32, "utterances per optimiser step", low=1)
    lr: float = opt(5e-4, "peak learning rate (AdamW)", above=0, high=10.0)
    weight_decay: float = opt(0.01, "AdamW weight decay; none on biases, norms and embeddings")
    betas: list = opt(help="AdamW betas", factory=lambda: [0.9, 0.999])
    eps: float = opt(1e-8, "AdamW epsilon")
    warmup_ratio: float = opt(0.1, "share of all steps spent in linear warm-up before the cosine decay")
    min_lr_ratio: float = opt(0.0, "the cosine decay's floor, as a share of lr")
    grad_clip: float = opt(1.0, "max gradient norm (0 disables)")
    regression_loss: str = opt("l1", "l1 (MMSA's regression criterion; MAE is the reported error) | mse", choices=("l1", "mse"))
    class_weights: Any = opt(None, 'null | "balanced" (n / (k * count) over the training labels) | a list per class')
    select_metric: str | None = opt(None, "validation metric for model selection (default: chsims2 mae, lower is "
                                    "better; meld and mustard weighted_f1)")
    eval_every: int = opt(1, "epochs between validation evaluations", low=1)
    eval_batch_size: int = opt(256, "utterances per evaluation forward pass", low=1)
    precision: str = opt("auto", '"auto" (bf16 on CUDA, else fp32) | "bf16" | "fp16" | "fp32"')
    device: str = opt("auto", '"auto", "cuda" or "cpu"')
    checkpoint_every: int = opt(0, "optimiser steps between checkpoints (0: by time, below); one is always "
                                "written at a run's last step", section="Checkpoints, reporting", low=0)
    checkpoint_every_s: float = opt(120.0, "with checkpoint_every 0: a checkpoint at the first epoch end this many "
                                    "seconds after the last one (one per epoch cost more than training a small "
                                    "run); a killed run loses at most this much work", low=0)
    keep_checkpoints: int = opt(2, "newest checkpoints kept per run", low=1)
    log_every: int = opt(10, "epochs between progress lines", low=1)
    pipes_asset_key: str | None = opt(None, "asset key of the materialisation reported under Dagster Pipes")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FusionTrainConfig":
        cfg = build(cls, data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        check_bounds(self)  # each option's bounds, declared on its field
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, not {self.task!r}")
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        if (not self.seeds or len(set(self.seeds)) != len(self.seeds)
                or not all(isinstance(s, int) and s >= 0 for s in self.seeds)):
            raise ConfigError(f"seeds must be a non-empty list of distinct integers >= 0, got {self.seeds}")
        if self.task == "mustard":
            self.protocol = self.protocol or DEFAULT_PROTOCOLS["mustard"]
            if self.protocol not in PROTOCOLS:
                raise ConfigError(f"protocol must be one of {PROTOCOLS}, not {self.protocol!r}")
            if self.fold_source not in FOLD_SOURCES:
                raise ConfigError(f"fold_source must be one of {FOLD_SOURCES}, not {self.fold_source!r}")
        elif self.protocol not in (None, "official"):
            raise ConfigError(f"protocol applies to mustard only ({self.task} uses its official split)")
        if self.task == "mustard" and self.protocol == "speaker_dependent" and self.folds < 2:
            raise ConfigError(f"folds must be >= 2, got {self.folds}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.modalities is not None:
            try:
                self.modalities = check_base_modalities(self.modalities, "modalities")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not 0 <= self.valid_fraction < 0.5:
            raise ConfigError(f"valid_fraction must be in [0, 0.5), got {self.valid_fraction}")
        self.select_metric = self.select_metric or DEFAULT_SELECT[self.task]
        if self.select_metric not in METRIC_NAMES[self.task]:
            raise ConfigError(f"select_metric {self.select_metric!r} is not a {self.task} metric "
                              f"{METRIC_NAMES[self.task]}")
        cw = self.class_weights
        if cw is not None and cw != "balanced" and not (isinstance(cw, list) and len(cw) == NUM_CLASSES[self.task]):
            raise ConfigError(f"class_weights must be null, 'balanced' or {NUM_CLASSES[self.task]} numbers")

    def model_config(self, data: "FusionData") -> FusionConfig:
        return FusionConfig(input_dims=data.input_dims, num_outputs=NUM_CLASSES[self.task], task=self.task,
                            use_lc=self.use_lc, base_modalities=list(data.base_modalities), d_model=self.d_model, num_layers=self.num_layers,
                            num_heads=self.num_heads, ff_dim=self.ff_dim, dropout=self.dropout,
                            max_positions=data.max_positions, regression_activation=self.regression_activation,
                            text_tower=self._text_tower(data))

    def _text_tower(self, data: "FusionData") -> dict[str, Any]:
        if not self.text_tune_layers:
            return {}
        from .text_tower import encoder_config

        name = data.feature_info["text_model"]["name"]
        return {"model": name, "layers": self.text_tune_layers, "encoder": encoder_config(name)}


# ------------------------------------------------------------------------------ data


@dataclass
class FusionData:
    ids: list[str]
    labels: np.ndarray  # float64 (N,)
    split: np.ndarray  # str (N,)
    show: np.ndarray  # str (N,), "" when absent
    fold: np.ndarray  # int (N,): the official test fold, -1 when absent
    inputs: dict[str, torch.Tensor]  # "text", "text_len", ... aligned with ids
    skipped: dict[str, int]
    feature_info: dict[str, Any]
    fingerprint: str  # content identity of the inputs this run reads
    base_modalities: tuple[str, ...] = BASE_MODALITIES  # what ``inputs`` holds besides the LC tokens
    folds_file: str | None = None  # where the official folds came from (MUStARD's extra_labels["folds_file"])

    @property
    def input_dims(self) -> dict[str, int]:
        return {k: int(v.shape[-1]) for k, v in self.inputs.items() if not k.endswith("_len")}

    @property
    def max_positions(self) -> int:
        return max(1, *(int(v.shape[1]) for k, v in self.inputs.items() if not k.endswith("_len")))


def _read_features(features_dir: Path, meta: dict[str, Any], base: tuple[str, ...], use_lc: bool
                   ) -> dict[str, torch.Tensor]:
    """The features of ``meta``'s utterances, read by ``feature_io.load_features`` (which checks that
    the files were written for this ``features.json``), each modality checked for its shape."""
    try:
        loaded = load_features(features_dir, with_lc=use_lc)
    except FeatureFileError as exc:
        raise DownstreamDataError(str(exc)) from exc
    if any(loaded.get(k) != meta.get(k) for k in ("utterance_ids", "base_version", "lc_version")):
        raise DownstreamDataError(f"{features_dir / META_FILE}: changed while it was read (an extraction in progress)")
    n_rows = len(meta["utterance_ids"])
    out = _modalities(features_dir / BASE_FILE, loaded["base"], base, n_rows)
    if use_lc:
        out.update(_modalities(features_dir / LC_FILE, loaded["lc"], (LC_MODALITY,), n_rows))
    return out


def _modalities(path: Path, tensors: dict[str, torch.Tensor], names: tuple[str, ...], n_rows: int
                ) -> dict[str, torch.Tensor]:
    out = {}
    for m in names:
        x, lengths = tensors.get(m), tensors.get(f"{m}_len")
        if x is None or lengths is None:
            raise DownstreamDataError(f"{path}: lacks {m!r} or {m + '_len'!r} (has {sorted(tensors)})")
        if x.ndim != 3 or x.shape[0] != n_rows or lengths.shape != (n_rows,):
            raise DownstreamDataError(f"{path}: {m} has shape {tuple(x.shape)}, {m}_len {tuple(lengths.shape)}; "
                                      f"features.json lists {n_rows} utterances")
        if bool((lengths < 0).any()) or bool((lengths > x.shape[1]).any()):
            raise DownstreamDataError(f"{path}: {m}_len outside [0, {x.shape[1]}]")
        out[m], out[f"{m}_len"] = x.float(), lengths.long()
    return out


def _read_table(path: Path, task: str) -> dict[str, list]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types (OSError, ArrowInvalid)
        raise DownstreamDataError(f"{path}: cannot read the utterance table: {exc}") from exc
    missing = [c for c in FUSION_REQUIRED if c not in table.column_names]
    if missing:
        raise DownstreamDataError(f"{path}: utterance table lacks column(s) {missing}")
    cols = {c: table.column(c).to_pylist() for c in table.column_names
            if c in FUSION_COLUMNS}
    if "dataset" in cols:
        keep = [i for i, d in enumerate(cols["dataset"]) if d == task]
        if not keep:
            raise DownstreamDataError(f"{path}: no {task} rows (datasets {sorted(set(cols['dataset']))})")
        cols = {c: [v[i] for i in keep] for c, v in cols.items()}
    return cols


def _label_ok(task: str, value: Any) -> bool:
    if value is None or not math.isfinite(float(value)):
        return False
    if task == "chsims2":
        return True
    return float(value).is_integer() and 0 <= int(value) < NUM_CLASSES[task]


def load_data(cfg: FusionTrainConfig) -> FusionData:
    """Join the utterance table with the features; count the rows that cannot be used."""
    features_dir = Path(cfg.features_dir)
    meta_path = features_dir / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        feature_ids = [str(u) for u in meta["utterance_ids"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DownstreamDataError(f"{meta_path}: unreadable features index ({exc})") from exc
    row_of = {u: i for i, u in enumerate(feature_ids)}
    base = _base_modalities(cfg, meta, meta_path)
    if cfg.use_lc and LC_MODALITY not in meta.get("modalities", [LC_MODALITY]):
        raise DownstreamDataError(f"{meta_path}: no live-comment features (extracted with modalities "
                                  f"{meta['modalities']}); use_lc needs them")
    feats = _read_features(features_dir, meta, base, cfg.use_lc)
    needs_media = cfg.use_lc or base != ("text",)

    table_path = Path(cfg.utterances)
    cols = _read_table(table_path, cfg.task)
    skipped = {"media_not_ok": 0, "no_features": 0, "bad_label": 0, "duplicate_id": 0}
    keep, seen = [], set()
    for i, uid in enumerate(cols["utterance_id"]):
        if needs_media and cols["media_status"][i] != MEDIA_OK:
            skipped["media_not_ok"] += 1
        elif uid not in row_of:
            skipped["no_features"] += 1
        elif not _label_ok(cfg.task, cols["label"][i]):
            skipped["bad_label"] += 1
            log.warning("%s: utterance %s has an unusable %s label %r: skipped", table_path, uid, cfg.task,
                        cols["label"][i])
        elif uid in seen:
            skipped["duplicate_id"] += 1
        else:
            seen.add(uid)
            keep.append(i)
    if sum(skipped.values()):
        log.warning("skipped %d of %d utterances: %s", sum(skipped.values()), len(cols["utterance_id"]), skipped)
    if not keep:
        raise DownstreamDataError(f"{table_path}: no usable utterance (skipped: {skipped})")
    rows = torch.tensor([row_of[cols["utterance_id"][i]] for i in keep], dtype=torch.long)
    shows = cols.get("show") or [None] * len(cols["utterance_id"])
    folds = cols.get("fold") or [None] * len(cols["utterance_id"])
    info = {k: meta.get(k) for k in ("base_version", "lc_version", "lc_source", "dims", "context")}
    if "text" in base:
        info["text_model"] = _tunable_text(cfg, meta, meta_path)
    return FusionData(
        ids=[cols["utterance_id"][i] for i in keep],
        labels=np.asarray([float(cols["label"][i]) for i in keep], dtype=np.float64),
        split=np.asarray([str(cols["split"][i]) for i in keep]),
        show=np.asarray([str(shows[i] or "") for i in keep]),
        fold=np.asarray([-1 if folds[i] is None else int(folds[i]) for i in keep], dtype=np.int64),
        inputs={k: v.index_select(0, rows).contiguous() for k, v in feats.items()},
        skipped=skipped, feature_info=info,
        fingerprint=_data_fingerprint(table_path, features_dir, meta, cfg.use_lc), base_modalities=base,
        folds_file=_folds_file([cols["extra_labels"][i] for i in keep if folds[i] is not None] if "extra_labels" in cols
                               else []))


def _tunable_text(cfg: FusionTrainConfig, meta: dict[str, Any], meta_path: Path) -> dict[str, Any] | None:
    """The text encoder the features came from; with ``text_tune_layers`` k, checked to be a
    pretrained encoder whose hidden states were taken k layers below its top."""
    model = (meta.get("models") or {}).get("text")
    k = cfg.text_tune_layers
    if not k:
        return model
    name, below = (model or {}).get("name"), (model or {}).get("layers_below_top", 0)
    if name in (None, "tiny") or below != k:
        raise DownstreamDataError(
            f"{meta_path}: text_tune_layers {k} needs text features from a pretrained encoder taken {k} layers "
            f"below its top (extract with text_layers_below_top: {k}); these are from {name!r}, {below} below the top")
    return model


def _folds_file(extras: list[str | None]) -> str | None:
    """The file(s) the loader says the official folds came from (None: not recorded)."""
    names = sorted({json.loads(x).get("folds_file") for x in extras if x} - {None})
    return " + ".join(names) or None


def _base_modalities(cfg: FusionTrainConfig, meta: dict[str, Any], meta_path: Path) -> tuple[str, ...]:
    """The base modalities this run reads: the configured ones, which the features must hold, or
    all that they hold (features from before the choice existed hold all three)."""
    held = [m for m in meta.get("modalities", BASE_MODALITIES) if m in BASE_MODALITIES]
    wanted = cfg.modalities or held
    missing = [m for m in wanted if m not in held]
    if missing or not wanted:
        raise DownstreamDataError(f"{meta_path}: the features hold modalities {held}; the run asks for {wanted}")
    return tuple(wanted)


def _data_fingerprint(table: Path, features_dir: Path, meta: dict[str, Any], use_lc: bool) -> str:
    """The table's bytes and the feature versions the extractor recorded (the files' bytes without)."""
    parts = [sha256_file(table), meta.get("base_version") or sha256_file(features_dir / BASE_FILE)]
    if use_lc:  # a new V2LC checkpoint changes only lc_version: the ablation keeps its results
        parts.append(meta.get("lc_version") or sha256_file(features_dir / LC_FILE))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


# ------------------------------------------------------------------------------ splits


@dataclass
class RunSplit:
    fold: int | None
    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray


def make_splits(data: FusionData, cfg: FusionTrainConfig) -> list[RunSplit]:
    if cfg.task == "mustard":
        return [_with_validation(s, data, cfg) for s in _mustard_splits(data, cfg)]
    parts = {name: np.flatnonzero(data.split == name) for name in ("train", "valid", "test")}
    if not len(parts["train"]) or not len(parts["test"]):
        raise DownstreamDataError(f"{cfg.utterances}: {cfg.task} needs train and test rows in the split column "
                                  f"(found {dict(zip(*np.unique(data.split, return_counts=True)))})")
    return [RunSplit(None, parts["train"], parts["valid"] if len(parts["valid"]) else None, parts["test"])]


def _with_validation(split: RunSplit, data: FusionData, cfg: FusionTrainConfig) -> RunSplit:
    """``split`` with ``valid_fraction`` of its training rows held out for model selection, where
    it has no validation rows (stratified by label for the classification tasks)."""
    if split.valid is not None or not cfg.valid_fraction:
        return split
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    kind = ShuffleSplit if cfg.task == "chsims2" else StratifiedShuffleSplit
    seed = cfg.split_seed + (split.fold or 0)
    try:
        keep, valid = next(kind(1, test_size=cfg.valid_fraction, random_state=seed).split(
            np.zeros(len(split.train)), data.labels[split.train]))
    except ValueError as exc:  # too few rows of a class to hold any out
        raise DownstreamDataError(f"{cfg.utterances}: cannot hold out valid_fraction {cfg.valid_fraction} of "
                                  f"{len(split.train)} training rows: {exc}") from exc
    return RunSplit(split.fold, split.train[np.sort(keep)], split.train[np.sort(valid)], split.test)


def _mustard_splits(data: FusionData, cfg: FusionTrainConfig) -> list[RunSplit]:
    if cfg.protocol == "speaker_independent":
        held_out = np.char.upper(data.show.astype(str)) == cfg.held_out_show.upper()
        train, test = np.flatnonzero(~held_out), np.flatnonzero(held_out)
        if not len(train) or not len(test):
            raise DownstreamDataError(f"{cfg.utterances}: speaker-independent protocol needs rows of "
                                      f"{cfg.held_out_show} and of other shows ({len(test)} and {len(train)})")
        return [RunSplit(None, train, None, test)]
    source = resolve_fold_source(data, cfg)
    if source == "official":
        return [RunSplit(k, np.flatnonzero(data.fold != k), None, np.flatnonzero(data.fold == k))
                for k in np.unique(data.fold).tolist()]
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.split_seed)
    try:
        return [RunSplit(k, train, None, test)
                for k, (train, test) in enumerate(folds.split(np.zeros(len(data.labels)), data.labels))]
    except ValueError as exc:  # fewer rows of a class than folds
        raise DownstreamDataError(f"{cfg.utterances}: cannot make {cfg.folds} stratified folds: {exc}") from exc


def resolve_fold_source(data: FusionData, cfg: FusionTrainConfig) -> str | None:
    """``official`` or ``stratified`` for MUStARD's speaker-dependent protocol (None otherwise)."""
    if cfg.task != "mustard" or cfg.protocol != "speaker_dependent":
        return None
    has_fold = data.fold >= 0
    if cfg.fold_source == "stratified" or (cfg.fold_source == "auto" and not has_fold.any()):
        return "stratified"
    if not has_fold.all():
        raise DownstreamDataError(f"{cfg.utterances}: {int((~has_fold).sum())} of {len(has_fold)} rows have no "
                                  "official fold (the `fold` column); use fold_source: stratified")
    if len(np.unique(data.fold)) < 2:
        raise DownstreamDataError(f"{cfg.utterances}: the official folds leave fewer than 2 folds")
    return "official"


def describe_folds(data: FusionData, cfg: FusionTrainConfig) -> str | None:
    """What the report says about the folds used."""
    source = resolve_fold_source(data, cfg)
    if source == "official":
        where = data.folds_file or "the table's fold column"
        return f"official ({len(np.unique(data.fold))} folds of {where})"
    if source == "stratified":
        return f"stratified ({cfg.folds} folds drawn with split_seed {cfg.split_seed}; no official folds)"
    return None
