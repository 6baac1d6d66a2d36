"""The V2LC encoder: a video encoder and a live-comment encoder aligned in one embedding space.

A segment's frames go through TimeSformer (transformers' ``TimesformerModel``; its [CLS] token
after the final layer norm is the video feature), a segment's live comments through a BERT-style
comment encoder (``hfl/chinese-roberta-wwm-ext``, ``xlm-roberta-base`` or a tiny config; the
[CLS] token, or the masked mean, is the comment feature). Linear projections map both to
``embed_dim``; embeddings are L2-normalised and compared with a learnable temperature
(``logit_scale``, CLIP's parameterisation: initialised to ln(1/0.07), clamped to ln(100)).
The trained video tower alone yields the "synthetic live comment features" for any video.

Encoders are named by a preset (``tiny``: a few-layer config built in code, for tests and the
offline demo; ``base``: TimeSformer-base / BERT-base dimensions, randomly initialised), or by a
hub name or local path (``facebook/timesformer-base-finetuned-k400``, ``hfl/chinese-roberta-wwm-ext``).
``save_pretrained`` writes ``model.safetensors`` + ``config.json`` (which holds the full encoder
configs, so ``from_pretrained`` rebuilds the architecture with no hub access) + ``tokenizer/``.
Save/load are written here rather than through ``PreTrainedModel`` so that the only weight format
ever read is safetensors (no pickle fallback, no remote code).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .pretrained import CONFIG_NAME, WEIGHTS_NAME, load_weights, save_weights
from .trainutil import CheckpointFormatError, atomic_write_json, saved_config
from .atomic import atomic_file

FORMAT_VERSION = 1
TOKENIZER_DIR = "tokenizer"
# TimeSformer was trained on ImageNet-normalised frames (transformers' TimesformerVideoProcessor).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VIDEO_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(image_size=32, patch_size=8, num_frames=4, hidden_size=64, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=128),
    "base": dict(image_size=224, patch_size=16, num_frames=8, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072),
}
# Chinese-RoBERTa-wwm-ext is a BERT architecture (BertModel), hence "bert" for the presets.
TEXT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(model_type="bert", hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=66),
    "base": dict(model_type="bert", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512),
}


@dataclass
class V2LCConfig:
    video_encoder: str = "tiny"
    text_encoder: str = "tiny"
    embed_dim: int = 256
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100)
    max_comments: int = 5
    text_max_length: int = 32
    text_pooling: str = "cls"  # "cls" or "mean"
    freeze_video: bool = False
    freeze_text: bool = False
    gradient_checkpointing: bool = False
    video_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"num_frames": 8}
    # The training clips' length (s) and frames, recorded by train_v2lc: the frame rate the video
    # tower learnt, which extract_features samples utterances at (None: a checkpoint from before)
    train_segment_s: float | None = None
    train_frames: int | None = None
    text_overrides: dict[str, Any] = field(default_factory=dict)
    # Filled in by build(): the encoders' full transformers configs (for offline rebuilding).
    video_config: dict[str, Any] | None = None
    text_config: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "V2LCConfig":
        return saved_config(cls, data, "V2LC")

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "v2lc", "format_version": FORMAT_VERSION, **asdict(self)}


class V2LCOutput(NamedTuple):
    video_embeds: torch.Tensor  # (B, D), L2-normalised
    comment_embeds: torch.Tensor  # (B*K, D), L2-normalised; zero rows where comment_segment == -1
    comment_segment: torch.Tensor  # (B*K,) index of each comment's segment in the batch, -1 = padding
    logit_scale: torch.Tensor  # scalar, exp(clamped logit_scale)


class V2LCModel(nn.Module):
    def __init__(self, config: V2LCConfig, video_encoder: nn.Module, text_encoder: nn.Module, tokenizer=None):
        super().__init__()
        if config.text_pooling not in ("cls", "mean"):
            raise ValueError(f"text_pooling must be 'cls' or 'mean', not {config.text_pooling!r}")
        self.config = config
        self.video = video_encoder
        self.text = text_encoder
        self.tokenizer = tokenizer
        vh, th = video_encoder.config.hidden_size, text_encoder.config.hidden_size
        self.video_proj = nn.Linear(vh, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(th, config.embed_dim, bias=False)
        nn.init.normal_(self.video_proj.weight, std=vh**-0.5)
        nn.init.normal_(self.text_proj.weight, std=th**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)
        self.set_gradient_checkpointing(config.gradient_checkpointing)
        self.set_freeze(video=config.freeze_video, text=config.freeze_text)

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, config: V2LCConfig, tokenizer=None) -> "V2LCModel":
        """New model from presets or pretrained encoders (which may download from the hub).

        A preset comment encoder needs ``tokenizer`` (e.g. ``build_char_tokenizer``); its vocabulary
        size sets the embedding table.
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer, TimesformerConfig, TimesformerModel

        if config.video_encoder in VIDEO_PRESETS:
            vcfg = TimesformerConfig(**{**VIDEO_PRESETS[config.video_encoder], **config.video_overrides})
            video = TimesformerModel(vcfg)
        else:
            video = TimesformerModel.from_pretrained(config.video_encoder, **config.video_overrides)
        if config.text_encoder in TEXT_PRESETS:
            if tokenizer is None:
                raise ValueError(f"text_encoder={config.text_encoder!r} is a preset: pass a tokenizer "
                                 "(lcaffect_ml.tokenizer.build_char_tokenizer)")
            preset = {**TEXT_PRESETS[config.text_encoder], **config.text_overrides}
            preset.setdefault("max_position_embeddings", config.text_max_length + 2)
            tcfg = AutoConfig.for_model(preset.pop("model_type"), vocab_size=len(tokenizer),
                                        pad_token_id=tokenizer.pad_token_id, **preset)
            text = _text_from_config(tcfg)
        else:
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(config.text_encoder)
            try:
                text = AutoModel.from_pretrained(config.text_encoder, add_pooling_layer=False,
                                                 **config.text_overrides)
            except TypeError:  # an architecture without a pooler argument
                text = AutoModel.from_pretrained(config.text_encoder, **config.text_overrides)
        config.video_config = video.config.to_dict()
        config.text_config = text.config.to_dict()
        return cls(config, video, text, tokenizer)

    @classmethod
    def from_config(cls, config: V2LCConfig, tokenizer=None) -> "V2LCModel":
        """Rebuild the architecture from the stored encoder configs (no hub access); random weights."""
        from transformers import AutoConfig, TimesformerConfig, TimesformerModel

        if config.video_config is None or config.text_config is None:
            raise CheckpointFormatError("config.json lacks video_config/text_config")
        video = TimesformerModel(TimesformerConfig.from_dict(dict(config.video_config)))
        tdict = dict(config.text_config)
        text = _text_from_config(AutoConfig.for_model(tdict.pop("model_type"), **tdict))
        return cls(config, video, text, tokenizer)

    # --------------------------------------------------------------------- freezing

    def set_freeze(self, video: bool, text: bool) -> None:
        """A frozen tower gets no gradients, runs in eval mode (no dropout) and under no_grad."""
        self.config.freeze_video, self.config.freeze_text = bool(video), bool(text)
        self.video.requires_grad_(not video)
        self.text.requires_grad_(not text)
        self.train(self.training)

    def train(self, mode: bool = True) -> "V2LCModel":
        super().train(mode)
        if self.config.freeze_video:
            self.video.eval()
        if self.config.freeze_text:
            self.text.eval()
        return self

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each encoder layer's activations in the backward pass instead of keeping them
        (training mode only; both towers). Non-reentrant checkpointing: it works under DDP without
        ``static_graph`` and needs no input that requires grad, where the reentrant form needs both."""
        for enc in (self.video, self.text):
            if not enabled:
                (getattr(enc, "activation_checkpointing_disable", None) or enc.gradient_checkpointing_disable)()
                continue
            if not getattr(enc, "supports_gradient_checkpointing", False):
                raise ValueError(f"gradient_checkpointing: {type(enc).__name__} does not support it")
            # transformers 5 renamed the method (the old name warns); 4.x has only the old one
            (getattr(enc, "activation_checkpointing_enable", None) or enc.gradient_checkpointing_enable)(
                {"use_reentrant": False})
        self.config.gradient_checkpointing = bool(enabled)

    # ----------------------------------------------------------------------- encoders

    @property
    def num_frames(self) -> int:
        return int(self.video.config.num_frames)

    @property
    def image_size(self) -> int:
        size = self.video.config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def preprocess_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, T, H, W, 3) → normalised float (B, num_frames, 3, S, S) for TimeSformer.

        Frames are picked uniformly in time when T differs from the model's ``num_frames`` and
        resized (bilinear, antialiased) when H, W differ from its ``image_size``. Runs on the
        frames' device, so the loader ships compact uint8 to the GPU.
        """
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (B, T, H, W, 3), got {tuple(frames.shape)}")
        x = frames.float()
        if frames.dtype == torch.uint8:
            x = x / 255.0
        b, t, h, w, _ = x.shape
        n, s = self.num_frames, self.image_size
        if t != n:
            idx = torch.linspace(0, t - 1, n, device=x.device).round().long()
            x = x.index_select(1, idx)
        x = x.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        if (h, w) != (s, s):
            x = F.interpolate(x.flatten(0, 1), size=(s, s), mode="bilinear", antialias=True,
                              align_corners=False).view(b, n, 3, s, s)
        return ((x - self.pixel_mean) / self.pixel_std).contiguous()

    def video_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Pooled TimeSformer feature ([CLS] after the final layer norm), before projection."""
        pixels = self.preprocess_frames(frames)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_video):
            return self.video(pixel_values=pixels).last_hidden_state[:, 0]

    def encode_video(self, frames: torch.Tensor, projected: bool = True, normalize: bool = True) -> torch.Tensor:
        """Video embeddings: projected to ``embed_dim`` (the V2LC space) or the raw pooled feature."""
        feats = self.video_features(frames)
        if projected:
            feats = self.video_proj(feats)
        return F.normalize(feats, dim=-1) if normalize else feats

    def comment_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_text):
            hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.text_pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, projected: bool = True,
                    normalize: bool = True) -> torch.Tensor:
        feats = self.comment_features(input_ids, attention_mask)
        if projected:
            feats = self.text_proj(feats)
        return F.normalize(feats, dim=-1) if normalize else feats

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at ``max_logit_scale`` (CLIP: at most 100)."""
        return self.logit_scale.clamp(0.0, self.config.max_logit_scale).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the parameter itself after each optimiser step, as CLIP does."""
        self.logit_scale.clamp_(0.0, self.config.max_logit_scale)

    def forward(self, frames: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                comment_mask: torch.Tensor) -> V2LCOutput:
        """Embed B segments and their up-to-K comments (``input_ids``: (B, K, L)).

        Only real comments (``comment_mask``) go through the comment encoder; padded rows come
        back as zeros with ``comment_segment == -1`` so that every rank returns the same shapes
        for the cross-rank gather in the loss.
        """
        b, k, length = input_ids.shape
        video = self.encode_video(frames)
        flat_mask = comment_mask.reshape(-1)
        rows = flat_mask.nonzero(as_tuple=True)[0]
        real = self.encode_text(input_ids.reshape(b * k, length)[rows],
                                attention_mask.reshape(b * k, length)[rows])
        comments = real.new_zeros(b * k, real.shape[-1]).index_copy(0, rows, real)
        segment = torch.arange(b, device=input_ids.device).repeat_interleave(k)
        segment = torch.where(flat_mask, segment, torch.full_like(segment, -1))
        return V2LCOutput(video, comments, segment, self.scale())

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors``, ``config.json`` and ``tokenizer/``, each file atomically."""
        directory = Path(directory)
        weights = save_weights(self, directory)
        if self.tokenizer is not None:
            # in a subfolder: AutoTokenizer reads a config.json beside it and would take ours for its own.
            # Tokenizers write several files by name: stage them, then move each into place atomically.
            tok_dir = directory / TOKENIZER_DIR
            tok_dir.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(dir=directory, prefix=".tok-") as staging:
                self.tokenizer.save_pretrained(staging)
                for name in sorted(os.listdir(staging)):
                    with atomic_file(tok_dir / name) as tmp:
                        shutil.copyfile(Path(staging) / name, tmp)
        atomic_write_json(directory / CONFIG_NAME, self.config.to_dict())
        return weights

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "V2LCModel":
        """Load a folder written by ``save_pretrained``; only safetensors weights are accepted."""
        directory = Path(directory)
        cfg_path, weights = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not weights.is_file():
            pickled = [p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
            reason = f"pickled weights {pickled} are refused" if pickled else "file is missing"
            raise CheckpointFormatError(f"{weights}: {reason}; V2LC loads safetensors only")
        if not cfg_path.is_file():
            raise CheckpointFormatError(f"{cfg_path}: missing")
        try:
            config = V2LCConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise CheckpointFormatError(f"{cfg_path}: {exc}") from exc
        tokenizer = None
        if (directory / TOKENIZER_DIR).is_dir():
            from .tokenizer import load_tokenizer

            tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
        model = cls.from_config(config, tokenizer)
        load_weights(model, weights, cfg_path, map_location)
        return model.to(map_location)


def _text_from_config(config):
    from transformers import AutoModel

    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)
