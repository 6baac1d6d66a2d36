"""The fusion model: a transformer over text, acoustic, visual and synthetic live-comment tokens.

Each modality's padded feature sequence (from ``lcaffect_ml.features``) is standardised with the
training split's per-dimension mean/std (stored in the model as buffers, so inference applies the
same), projected to ``d_model``, and given a learned modality embedding plus a learned position
embedding (positions count within each modality). A [CLS] token is prepended and all tokens go
through a pre-norm ``nn.TransformerEncoder``; padded positions are excluded with a key padding
mask built from the lengths. The task head reads the [CLS] output: one value for CH-SIMS v2
regression (plain linear, or ``tanh`` to stay in [-1, 1]), ``num_classes`` logits otherwise.

``use_lc=False`` is the paper's ablation: the live-comment tokens are not in the sequence at all
(no projection, no modality embedding for them), not zeros that attention could still see.
``base_modalities`` is any non-empty subset of text, audio and visual (a text-only run, say, for
utterances whose media are missing); the same rule holds for a modality left out.

``save_pretrained`` writes ``model.safetensors`` + ``config.json``; ``from_pretrained`` reads only
those (no pickle), like ``V2LCModel``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .pretrained import CONFIG_NAME, WEIGHTS_NAME, load_weights, save_weights
from .trainutil import CheckpointFormatError, atomic_write_json, saved_config

FORMAT_VERSION = 1
MODEL_TYPE = "lcaffect_fusion"
BASE_MODALITIES = ("text", "audio", "visual")
LC_MODALITY = "lc"
MODALITIES = BASE_MODALITIES + (LC_MODALITY,)


def check_base_modalities(names: Any, what: str) -> list[str]:
    """``names`` as a list in ``BASE_MODALITIES`` order; ValueError unless a non-empty subset of them."""
    if isinstance(names, str) or not names or not set(names) <= set(BASE_MODALITIES) or len(set(names)) != len(names):
        raise ValueError(f"{what} must be a non-empty list of distinct modalities from {list(BASE_MODALITIES)}, "
                         f"got {names!r}")
    return [m for m in BASE_MODALITIES if m in names]


@dataclass
class FusionConfig:
    input_dims: dict[str, int] = field(default_factory=dict)  # feature width per modality (text, audio, visual, lc)
    num_outputs: int = 1  # 1 for regression, else the number of classes
    task: str = "chsims2"
    use_lc: bool = True
    base_modalities: list[str] = field(default_factory=lambda: list(BASE_MODALITIES))  # in BASE_MODALITIES order
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ff_dim: int = 256
    dropout: float = 0.1
    max_positions: int = 512  # longest sequence per modality
    regression_activation: str = "linear"  # "linear" (clipped when scored) or "tanh"
    # The text encoder's top layers, tuned here (lcaffect_ml.text_tower): {"model": hub name or path,
    # "layers": k, "encoder": its config}; empty: the text features are used as they are.
    text_tower: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.base_modalities) + ((LC_MODALITY,) if self.use_lc else ())

    @property
    def is_regression(self) -> bool:
        return self.num_outputs == 1

    def validate(self) -> None:
        check_base_modalities(self.base_modalities, "base_modalities")
        missing = [m for m in self.modalities if m not in self.input_dims]
        if missing:
            raise ValueError(f"input_dims lacks {missing} (has {sorted(self.input_dims)})")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.regression_activation not in ("linear", "tanh"):
            raise ValueError(f"regression_activation must be linear or tanh, not {self.regression_activation!r}")
        if self.num_outputs < 1 or self.max_positions < 1:
            raise ValueError("num_outputs and max_positions must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FusionConfig":
        return saved_config(cls, data, "fusion")

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, **asdict(self)}


class FusionModel(nn.Module):
    def __init__(self, config: FusionConfig):
        super().__init__()
        config.validate()
        self.config = config
        d = config.d_model
        self.proj = nn.ModuleDict({m: nn.Linear(int(config.input_dims[m]), d) for m in config.modalities})
        for m in config.modalities:  # feature standardisation, set from the training split
            dim = int(config.input_dims[m])
            self.register_buffer(f"{m}_mean", torch.zeros(dim))
            self.register_buffer(f"{m}_std", torch.ones(dim))
        self.modality_embed = nn.Parameter(torch.randn(len(config.modalities), d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(config.max_positions, d) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(d) * 0.02)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, config.ff_dim, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # nested tensors would drop padded positions in eval only: keep train and eval on one path
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(d, config.num_outputs)
        self.text_tower = None
        if config.text_tower:
            from .text_tower import TextTower

            self.text_tower = TextTower(config.text_tower["encoder"], int(config.text_tower["layers"]))

    @property
    def standardised(self) -> tuple[str, ...]:
        """The modalities whose features are standardised (the text tower normalises its own output)."""
        return tuple(m for m in self.config.modalities if not (m == "text" and self.text_tower is not None))

    # ------------------------------------------------------------------------ forward

    def set_feature_stats(self, stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Per-dimension (mean, std) of each standardised modality's valid training tokens; a std of 0
        counts as 1."""
        for m in self.standardised:
            mean, std = stats[m]
            std = torch.where(std > 1e-6, std, torch.ones_like(std))
            getattr(self, f"{m}_mean").copy_(mean)
            getattr(self, f"{m}_std").copy_(std)

    def build_sequence(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, 1 + sum of modality lengths, d_model) and the key padding mask (True = padding)."""
        tokens, masks = [], []
        for index, m in enumerate(self.config.modalities):
            x, lengths = inputs[m], inputs[f"{m}_len"]
            length = x.shape[1]
            if length > self.config.max_positions:
                raise ValueError(f"{m} sequence of {length} exceeds max_positions {self.config.max_positions}")
            if bool((lengths < 0).any()) or bool((lengths > length).any()):
                raise ValueError(f"{m}_len outside [0, {length}]")
            if m == "text" and self.text_tower is not None:  # the tuned top layers pool to one token
                x, lengths, length = self.text_tower(x.float(), lengths), (lengths > 0).long(), 1
            pad = torch.arange(length, device=x.device)[None, :] >= lengths[:, None]
            if m in self.standardised:
                x = (x.float() - getattr(self, f"{m}_mean")) / getattr(self, f"{m}_std")
            h = self.proj[m](x) + self.modality_embed[index] + self.pos_embed[:length]
            tokens.append(h.masked_fill(pad[..., None], 0.0))  # padding is never attended; zero it anyway
            masks.append(pad)
        batch = tokens[0].shape[0]
        cls = self.cls_token.expand(batch, 1, -1).to(tokens[0].dtype)
        no_pad = torch.zeros(batch, 1, dtype=torch.bool, device=cls.device)
        return torch.cat([cls, *tokens], dim=1), torch.cat([no_pad, *masks], dim=1)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, num_outputs): the regression value or the class logits."""
        tokens, pad = self.build_sequence(inputs)
        hidden = self.encoder(self.dropout(tokens), src_key_padding_mask=pad)
        out = self.head(hidden[:, 0])
        if self.config.is_regression and self.config.regression_activation == "tanh":
            out = torch.tanh(out)
        return out

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``config.json``, each atomically; identical weights, identical bytes."""
        weights = save_weights(self, directory)
        atomic_write_json(Path(directory) / CONFIG_NAME, self.config.to_dict())
        return weights

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "FusionModel":
        """Load a folder written by ``save_pretrained``; only safetensors weights are accepted."""
        directory = Path(directory)
        cfg_path, weights = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (weights, cfg_path):
            if not path.is_file():
                raise CheckpointFormatError(f"{path}: missing (the fusion model loads safetensors + config.json only)")
        try:
            data = json.loads(cfg_path.read_text(encoding="utf-8"))
            if data.get("model_type") != MODEL_TYPE:
                raise ValueError(f"model_type is {data.get('model_type')!r}, not {MODEL_TYPE!r}")
            model = cls(FusionConfig.from_dict(data))
        except (ValueError, TypeError) as exc:
            raise CheckpointFormatError(f"{cfg_path}: {exc}") from exc
        load_weights(model, weights, cfg_path, map_location)
        return model.to(map_location)
