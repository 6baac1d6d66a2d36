"""The V2LC training program's configuration (``TrainConfig``: each option is documented where it
is declared, and ``python -m lcaffect_ml.train_v2lc --help`` prints them), the options a resume must
keep, and the trainer's progress state. ``lcaffect_ml.train_v2lc`` re-exports them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


from .data import AUTO_GROUP
from .options import ConfigError, build, check_bounds, opt
from .v2lc import V2LCConfig


@dataclass
class TrainConfig:
    shards: Any = opt(help="index.json path/URL, a folder holding one, or a list of shard URLs", section="Data")
    output_dir: str = opt(help="where everything is written: model, metrics, loss curve, checkpoints/")
    eval_fraction: float = opt(0.1, "share of *videos* held out for retrieval evaluation (split by video id)")
    split_seed: int = opt(0, "seed of the video split, independent of `seed`")
    split_group: str = opt(AUTO_GROUP, 'what the held-out split keeps together: "video", a catalogue column the index '
                           'names (series, uploader, group, genre …: every video of one value on one side), or '
                           '"auto" (the catalogue\'s declared group where the index names any, else video)')
    eval_platforms: list = opt(help="hold out every video of these platforms instead of a share (e.g. [niconico]: "
                               "train on Bilibili, test on another live-comment culture); the index must name "
                               "each shard's platform", factory=list)
    num_workers: int = opt(2, "DataLoader worker processes; keep it unchanged across a resume", low=0)
    shuffle_buffer: int = opt(64, "samples in each worker's shuffle buffer (frames are held as raw bytes)")
    open_shards: int | None = opt(None, "shards (videos) each worker reads interleaved (default: batch_size)")
    max_per_video: int = opt(2, "at most this many segments of one video in a batch (0 disables): segments of "
                             "one video are alike, and all others in a batch are negatives", low=0)
    on_error: str = opt("warn", '"warn" (skip a bad sample or shard, naming it) or "raise"')
    video_encoder: str = opt("tiny", '"tiny", "base" (TimeSformer-base shape, random init) or a hub name/local '
                             "path, e.g. facebook/timesformer-base-finetuned-k400", section="Model")
    text_encoder: str = opt("tiny", '"tiny", "base" or a hub name/local path (hfl/chinese-roberta-wwm-ext, xlm-roberta-base)')
    tokenizer: str | None = opt(None, "tokenizer name/path; default: the comment encoder's own, or for a preset "
                                "one a character-level tokenizer built from the training comments (saved with the model)")
    tokenizer_vocab_size: int = opt(8000, "cap on that built vocabulary")
    video_overrides: dict = opt(help="passed to the video encoder's config, e.g. {num_frames: 8}", factory=dict)
    text_overrides: dict = opt(help="passed to the comment encoder's config", factory=dict)
    embed_dim: int = opt(256, "width of the shared embedding space")
    max_comments: int = opt(5, "comments per segment used as positives, sampled at every step from the segment's "
                            "stored comments (up to 32) with a generator seeded by (seed, epoch, sample)")
    text_max_length: int = opt(32, "tokens per comment")
    text_pooling: str = opt("cls", '"cls" or "mean"')
    positives: str = opt("sum", 'multi-positive video→comment form, "sum" or "mean" (see lcaffect_ml.losses)', choices=("sum", "mean"))
    shuffle_comments: bool = opt(False, "control only: pair each training segment with the comments of another "
                                 "segment of its batch (lcaffect_ml.data); evaluation keeps each segment's own")
    freeze_video: bool = opt(False, "train only the comment tower and the projections")
    freeze_text: bool = opt(False, "train only the video tower and the projections")
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass (less memory)")
    batch_size: int = opt(32, "segments per rank per micro-batch", section="Optimisation", low=1)
    grad_accum: int = opt(1, "micro-batches per optimiser step; a step sees batch_size*grad_accum*world segments, "
                          "but negatives come from one micro-batch (gathered across ranks)", low=1)
    lr: float = opt(1e-4, "peak learning rate (AdamW)", above=0, high=10.0)
    weight_decay: float = opt(0.1, "AdamW weight decay; none on biases, norms and the temperature", low=0)
    betas: list = opt(help="AdamW betas", factory=lambda: [0.9, 0.98])
    eps: float = opt(1e-6, "AdamW epsilon")
    warmup_steps: int = opt(100, "linear warm-up steps before the cosine decay", low=0)
    min_lr_ratio: float = opt(0.0, "the cosine decay's floor, as a share of lr")
    max_steps: int = opt(1000, "optimiser steps", low=1)
    grad_clip: float = opt(1.0, "max gradient norm (0 disables)")
    precision: str = opt("auto", '"auto" (bf16 on CUDA where supported, else fp32), "bf16", "fp16" (GradScaler), "fp32"')
    device: str = opt("auto", '"auto", "cuda" or "cpu"')
    seed: int = opt(0, "model init, dropout and data order")
    eval_every: int = opt(0, "steps between held-out retrieval evaluations (0: only at the end)",
                          section="Evaluation, checkpoints, output", low=0)
    eval_batch_size: int = opt(64, "segments per evaluation forward pass", low=1)
    eval_max_segments: int = opt(2000, "caps the evaluation pool (chance R@1 = 1/pool)")
    checkpoint_every: int = opt(500, "steps between checkpoints; one is always written at the last step", low=0)
    keep_checkpoints: int = opt(2, "newest checkpoints kept", low=1)
    log_every: int = opt(10, "steps between log lines", low=1)
    progress: bool = opt(True, "tqdm progress bar with clips/s")
    pipes_asset_key: str | None = opt(None, "asset key to report under Dagster Pipes when the step has several assets")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        cfg = build(cls, data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        check_bounds(self)  # each option's bounds, declared on its field
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")

    def model_config(self) -> V2LCConfig:
        return V2LCConfig(
            video_encoder=self.video_encoder, text_encoder=self.text_encoder, embed_dim=self.embed_dim,
            max_comments=self.max_comments, text_max_length=self.text_max_length,
            text_pooling=self.text_pooling, freeze_video=self.freeze_video, freeze_text=self.freeze_text,
            gradient_checkpointing=self.gradient_checkpointing, video_overrides=dict(self.video_overrides),
            text_overrides=dict(self.text_overrides))


# Options that must match for a resume to continue the same run (others, e.g. max_steps, may change).
RESUME_KEYS = ("batch_size", "grad_accum", "seed", "shuffle_comments", "split_seed", "split_group", "eval_fraction", "eval_platforms", "num_workers", "shards")


@dataclass
class TrainerState:
    step: int = 0
    micro_batches: int = 0  # micro-batches this rank consumed: the data position
    train_time_s: float = 0.0
    timed_steps: int = 0
    loss_history: list = field(default_factory=list)  # [step, loss]
    eval_history: list = field(default_factory=list)  # {"step": n, **metrics}
    resumed_from: int | None = None


def hub_models(options: dict[str, Any], used_by: str = "train_v2lc") -> list:
    """The pretrained models (``lcaffect_ml.hub.ModelRef``) that training with ``options`` (a
    ``TrainConfig`` as a dict, or the pipeline's merged options) loads; presets need none."""
    from .hub import ModelRef
    from .v2lc import TEXT_PRESETS, VIDEO_PRESETS

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    get = lambda key: defaults[key] if options.get(key) is None else options[key]  # noqa: E731  (None: the default)
    refs = [ModelRef(get(key), f"{used_by}.{key}") for key, presets in
            (("video_encoder", VIDEO_PRESETS), ("text_encoder", TEXT_PRESETS)) if get(key) not in presets]
    if get("tokenizer"):
        refs.append(ModelRef(get("tokenizer"), f"{used_by}.tokenizer", weights=False))
    return refs
