"""The V2LC training program's configuration (``TrainConfig``; the program's module docstring
documents each option, and ``python -m lcaffect_ml.train_v2lc --help`` prints it), the options a
resume must keep, and the trainer's progress state. ``lcaffect_ml.train_v2lc`` re-exports them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


from .trainutil import ConfigError
from .v2lc import V2LCConfig


@dataclass
class TrainConfig:
    shards: Any
    output_dir: str
    eval_fraction: float = 0.1
    split_seed: int = 0
    num_workers: int = 2
    shuffle_buffer: int = 64
    open_shards: int | None = None
    max_per_video: int = 2
    on_error: str = "warn"
    video_encoder: str = "tiny"
    text_encoder: str = "tiny"
    tokenizer: str | None = None
    tokenizer_vocab_size: int = 8000
    video_overrides: dict = field(default_factory=dict)
    text_overrides: dict = field(default_factory=dict)
    embed_dim: int = 256
    max_comments: int = 5
    text_max_length: int = 32
    text_pooling: str = "cls"
    positives: str = "sum"
    freeze_video: bool = False
    freeze_text: bool = False
    gradient_checkpointing: bool = False
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.1
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    max_steps: int = 1000
    grad_clip: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    eval_every: int = 0
    eval_batch_size: int = 64
    eval_max_segments: int = 2000
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    progress: bool = True
    pipes_asset_key: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        missing = [k for k in ("shards", "output_dir") if k not in data]
        if missing:
            raise ConfigError(f"missing required option(s) {missing}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        positive = ("batch_size", "grad_accum", "max_steps", "eval_batch_size", "keep_checkpoints", "log_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "eval_every", "warmup_steps", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.positives not in ("sum", "mean"):
            raise ConfigError(f"positives must be 'sum' or 'mean', got {self.positives!r}")

    def model_config(self) -> V2LCConfig:
        return V2LCConfig(
            video_encoder=self.video_encoder, text_encoder=self.text_encoder, embed_dim=self.embed_dim,
            max_comments=self.max_comments, text_max_length=self.text_max_length,
            text_pooling=self.text_pooling, freeze_video=self.freeze_video, freeze_text=self.freeze_text,
            gradient_checkpointing=self.gradient_checkpointing, video_overrides=dict(self.video_overrides),
            text_overrides=dict(self.text_overrides))


# Options that must match for a resume to continue the same run (others, e.g. max_steps, may change).
RESUME_KEYS = ("batch_size", "grad_accum", "seed", "split_seed", "eval_fraction", "num_workers", "shards")


@dataclass
class TrainerState:
    step: int = 0
    micro_batches: int = 0  # micro-batches this rank consumed: the data position
    train_time_s: float = 0.0
    timed_steps: int = 0
    loss_history: list = field(default_factory=list)  # [step, loss]
    eval_history: list = field(default_factory=list)  # {"step": n, **metrics}
    resumed_from: int | None = None
