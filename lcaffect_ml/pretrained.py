"""A ``save_pretrained`` folder's weights (V2LC, fusion): ``model.safetensors`` beside
``config.json``, written byte-stable and atomically, read strictly and safetensors only."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import atomic_file
from .trainutil import CheckpointFormatError

WEIGHTS_NAME = "model.safetensors"  # a save_pretrained folder (V2LC, fusion): its weights and config
CONFIG_NAME = "config.json"


def save_weights(model: torch.nn.Module, directory: str | os.PathLike) -> Path:
    """``model``'s state as ``directory/WEIGHTS_NAME``, atomically; returns its path. One metadata
    key only: safetensors writes its metadata map in hash order, and the file's sha256 is the
    model's data version, so identical weights must give identical bytes."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    with atomic_file(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return directory / WEIGHTS_NAME


def load_weights(model: torch.nn.Module, weights: Path, cfg_path: Path, map_location) -> None:
    """``weights`` (safetensors only) into ``model``, strictly; every failure a CheckpointFormatError
    naming the file (a pickle or a truncated file, keys or shapes that do not match ``cfg_path``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(weights), device=str(map_location)), strict=True)
    except SafetensorError as exc:
        raise CheckpointFormatError(f"{weights}: not a safetensors file ({exc})") from exc
    except RuntimeError as exc:  # missing/unexpected keys, shape mismatch
        raise CheckpointFormatError(f"{weights}: does not match {cfg_path}: {exc}") from exc
