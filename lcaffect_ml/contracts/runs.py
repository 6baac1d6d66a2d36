"""What the training programs and the pipeline agree on about a run folder in the lake."""

from __future__ import annotations

import json
from typing import Any

METRICS = "metrics.json"  # a run's metrics, with ``model_sha256``: the weights' data version
# Uploaded last, in this order, by the V2LC program: a run folder holding both is a finished run
# (the pipeline reuses it), whatever the program's host.
V2LC_FINISHED = (METRICS, "model.safetensors")
# The fusion program's: metrics.json (what the pipeline looks for) at the very end.
FUSION_FINISHED = ("model.safetensors", METRICS)


class RunFolderError(ValueError):
    """A run folder in the lake that this version cannot reuse (its reason names the file)."""


def finished_run(out, files: tuple[str, ...]) -> tuple[dict[str, Any], str] | None:
    """(metrics, data version) of a run that finished in ``out`` (a local path or a lake path):
    every one of ``files`` present; its metrics.json, read once, holds the weights' SHA-256 (the
    data version the program reported through Pipes), so nothing is hashed again. Else None."""
    if not all((out / name).exists() for name in files):
        return None
    metrics = json.loads((out / METRICS).read_text())
    if "model_sha256" not in metrics:
        raise RunFolderError(f"{out / METRICS}: no model_sha256 (written by an older program): "
                             f"remove {out} to train it again")
    return metrics, metrics["model_sha256"]
