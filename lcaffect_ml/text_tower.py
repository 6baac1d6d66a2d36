"""The top layers of a pretrained text encoder, fine-tuned inside the fusion model.

On a few hundred labelled utterances (MUStARD's folds hold 552) a head over frozen sentence
embeddings does no better than an RBF SVM on the same embeddings (bench/README.md, "Real text,
real labels"); tuning the encoder itself is what the paper's towers do. Tuning all of it on two
CPU cores costs minutes per fold, so the frozen bottom runs once, in feature extraction
(``ExtractConfig.text_layers_below_top`` k: the hidden states k layers below the top), and the
fusion model holds the top k layers, initialised from the same checkpoint and trained with its own
learning rate (``FusionTrainConfig.text_tune_layers`` / ``text_tune_lr``). k equal to the
encoder's depth tunes every layer above the embeddings.

The layers are rebuilt from the encoder's config (saved in the fusion model's ``config.json``), so
loading a trained fusion model needs no hub access; only training loads the pretrained weights.
Their output is mean-pooled over the valid tokens (the sentence encoders' pooling) and
layer-normalised, giving the fusion model one text token.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch
from torch import nn


def encoder_config(name: str) -> dict[str, Any]:
    """The hub/local encoder's config as a plain dict (what ``TextTower`` is rebuilt from)."""
    from transformers import AutoConfig

    return json.loads(AutoConfig.from_pretrained(name).to_json_string(use_diff=False))


@functools.lru_cache(maxsize=2)
def _pretrained_top(name: str, first: int) -> tuple[dict[str, torch.Tensor], ...]:
    """The state of the encoder's layers from ``first`` up, read once per process (a MUStARD run
    trains a model per seed and fold); ``load_state_dict`` copies, so sharing them is safe."""
    from transformers import AutoModel

    return tuple(layer.state_dict() for layer in AutoModel.from_pretrained(name).encoder.layer[first:])


class TextTower(nn.Module):
    def __init__(self, config: dict[str, Any], layers: int):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        depth = int(config["num_hidden_layers"])
        if not 1 <= layers <= depth:
            raise ValueError(f"text_tune_layers must be in [1, {depth}] for this encoder, not {layers}")
        self.first = depth - layers
        # Only the k layers are built: an encoder of depth k with a vocabulary of one token past the
        # padding id (its embeddings, a few KB, are dropped), not the whole pretrained encoder.
        small = AutoConfig.for_model(**{**config, "num_hidden_layers": layers,
                                        "vocab_size": int(config.get("pad_token_id") or 0) + 1})
        self.layers = nn.ModuleList(AutoModel.from_config(small).encoder.layer)
        self.norm = nn.LayerNorm(int(small.hidden_size))

    def load_pretrained(self, name: str) -> None:
        """Copy the pretrained weights of the encoder's top layers (a hub name or local folder)."""
        for own, state in zip(self.layers, _pretrained_top(name, self.first)):
            own.load_state_dict(state)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, D) hidden states and their lengths -> (B, 1, D): one pooled token per utterance."""
        pad = torch.arange(hidden.shape[1], device=hidden.device)[None, :] >= lengths[:, None]
        mask = torch.zeros(pad.shape, dtype=hidden.dtype, device=hidden.device)
        mask = mask.masked_fill(pad, torch.finfo(hidden.dtype).min)[:, None, None, :]  # additive, per key
        for layer in self.layers:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        valid = (~pad)[..., None].to(hidden.dtype)
        pooled = (hidden * valid).sum(1) / valid.sum(1).clamp(min=1)
        return self.norm(pooled)[:, None]
