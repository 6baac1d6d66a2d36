"""The V2LC encoder's runs, without Dagster: the training configuration, the run folder, the
launch command, reuse of a finished run and the asset's value.

``lcaffect_pipeline.defs.model_assets`` wraps these in the ``v2lc_encoder`` asset. Folders:

    models/v2lc/{run key}/        one run per (shard data version, training configuration)

Which run is *the* encoder is the asset's value (``encoder_value``), stored by the IO manager in
``_manifests/v2lc_encoder.json`` and passed to feature extraction as an input: a failed run
writes no value, so downstream keeps reading the last good encoder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from lcaffect_ml.contracts.hashing import sha256_bytes, sha256_file


METRIC_KEYS = ("v2c_r1", "v2c_r5", "v2c_r10", "v2c_medr", "c2v_r1", "c2v_r5", "c2v_r10", "c2v_medr", "chance_r1",
               "steps", "clips_per_s", "peak_memory_mb")
TRAIN_MODULE = "lcaffect_ml.train_v2lc"


def training_config(settings: dict[str, Any], launch_fields: Sequence[str], shards_index: str, output_dir: Path) -> dict:
    """The ``train_v2lc`` configuration from the resource's settings (without its launch fields)."""
    cfg = {k: v for k, v in settings.items() if k not in launch_fields and v is not None}
    cfg.update(json.loads(cfg.pop("extra_json") or "{}"))
    cfg.update({"shards": shards_index, "output_dir": str(output_dir), "pipes_asset_key": "v2lc_encoder"})
    return cfg


def run_key(shards_version: str, cfg: dict[str, Any]) -> str:
    """16 hex digits naming one (shard data, training config): a retry or re-run resumes there.

    The shards' data version has a key of its own: ``cfg["shards"]`` is the index *path*, which
    stays the same when the shards change, and must not hide the version (it once did, so new
    shards reused the old run's weights)."""
    payload = {"shards_version": shards_version, **{k: v for k, v in cfg.items() if k != "output_dir"}}
    return sha256_bytes(json.dumps(payload, sort_keys=True).encode())[:16]


def run_dir(root: Path, shards_version: str, cfg: dict[str, Any]) -> Path:
    return Path(root) / "models" / "v2lc" / run_key(shards_version, cfg)


def launch_command(config_path: Path, *, command: Sequence[str] | None = None, gpus: int = 1) -> list[str]:
    """The training program's command line: a configured command, torchrun for several GPUs, else python -m."""
    if command:
        return [*command, "--config", str(config_path)]
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "-m", TRAIN_MODULE,
                "--config", str(config_path)]
    return [sys.executable, "-m", TRAIN_MODULE, "--config", str(config_path)]


def k8s_pod_spec(gpus: int) -> dict:
    """Pod spec fragment for the Kubernetes launcher: the GPUs as limits, shared memory for loaders."""
    return {
        "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(max(1, gpus))}}, "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }


def latest_checkpoint(out: Path) -> Path:
    steps = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else out


def finished_run(out: Path) -> tuple[dict[str, Any], str] | None:
    """(metrics, data version) of a training run that already finished in ``out`` (a re-run is a
    no-op), else None. The data version is the weights' SHA-256, as the program reports it through Pipes."""
    metrics_path, weights = out / "metrics.json", out / "model.safetensors"
    if not (metrics_path.exists() and weights.exists()):
        return None
    return json.loads(metrics_path.read_text()), sha256_file(weights)


def above_chance(metrics: dict[str, Any]) -> bool:
    """The asset check: held-out video→comment R@1 beats the chance level of its candidate pool."""
    return float(metrics.get("v2c_r1", 0)) > float(metrics.get("chance_r1", 1))


def encoder_value(out: Path, metrics: dict[str, Any], data_version: str | None) -> dict[str, Any]:
    """The ``v2lc_encoder`` asset's value: where the finished run is, its weights' version and its
    headline metrics (what feature extraction and ``lcaffect_pipeline.report`` read)."""
    return {"output_dir": str(out), "data_version": data_version,
            "metrics": {k: float(metrics[k]) for k in METRIC_KEYS if k in metrics}}
