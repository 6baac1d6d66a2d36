"""The V2LC encoder: the training program launched through Dagster Pipes in the ``gpu`` pool."""

import hashlib
import json
import sys
from pathlib import Path

import dagster as dg
import yaml

from lcaffect_ml.contracts.hashing import sha256_file

from ..lake import atomic_write_bytes, local_path
from .automation import ON_NEW_DATA
from .resources import LakeResource, V2LCTrainingResource

GROUP = "model"
CHECK = "retrieval_above_chance"
METRIC_KEYS = ("v2c_r1", "v2c_r5", "v2c_r10", "v2c_medr", "c2v_r1", "c2v_r5", "c2v_r10", "c2v_medr", "chance_r1", "steps", "clips_per_s", "peak_memory_mb")


def training_config(training: V2LCTrainingResource, shards_index: str, output_dir: Path) -> dict:
    cfg = {k: v for k, v in training.model_dump().items() if k not in V2LCTrainingResource.LAUNCH_FIELDS and v is not None}
    cfg.update(json.loads(cfg.pop("extra_json") or "{}"))
    cfg.update({"shards": shards_index, "output_dir": str(output_dir), "pipes_asset_key": "v2lc_encoder"})
    return cfg


def run_folder(lake: LakeResource, shards_version: str, cfg: dict):
    """One folder per (shard data, training config): a retry or re-run resumes there."""
    key = hashlib.sha256(json.dumps({"shards": shards_version, **{k: v for k, v in cfg.items() if k != "output_dir"}}, sort_keys=True).encode()).hexdigest()[:16]
    return local_path(lake.path("models", "v2lc", key), "V2LC training")


def launch_command(training: V2LCTrainingResource, config_path: Path) -> list[str]:
    if training.command:
        return [*training.command, "--config", str(config_path)]
    if training.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={training.gpus}", "-m", "lcaffect_ml.train_v2lc", "--config", str(config_path)]
    return [sys.executable, "-m", "lcaffect_ml.train_v2lc", "--config", str(config_path)]


def k8s_pod_spec(gpus: int) -> dict:
    """Pod spec fragment for the Kubernetes launcher: the GPUs as limits, shared memory for loaders."""
    return {
        "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(max(1, gpus))}}, "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }


def latest_checkpoint(out: Path) -> Path:
    steps = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else out


def finished_result(out: Path) -> dg.MaterializeResult | None:
    """The result of a training run that already finished in ``out`` (a re-run is a no-op)."""
    metrics_path, weights = out / "metrics.json", out / "model.safetensors"
    if not (metrics_path.exists() and weights.exists()):
        return None
    metrics = json.loads(metrics_path.read_text())
    passed = float(metrics.get("v2c_r1", 0)) > float(metrics.get("chance_r1", 1))
    return dg.MaterializeResult(
        metadata={**{k: float(metrics[k]) for k in METRIC_KEYS if k in metrics}, "checkpoint": dg.MetadataValue.path(str(latest_checkpoint(out))), "reused": True},
        data_version=dg.DataVersion(sha256_file(weights)),  # as the program reports it through Pipes
        check_results=[dg.AssetCheckResult(check_name=CHECK, passed=passed, metadata={"v2c_r1": float(metrics.get("v2c_r1", 0)), "chance_r1": float(metrics.get("chance_r1", 0))})],
    )


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"pytorch", "safetensors"},
    owners=["team:lcaffect-ml"],
    pool="gpu",
    ins={"shards": dg.AssetIn("training_shards")},
    check_specs=[dg.AssetCheckSpec(CHECK, asset="v2lc_encoder", description="Held-out video→comment R@1 is above the chance level of its candidate pool")],
    retry_policy=dg.RetryPolicy(max_retries=1),
    automation_condition=ON_NEW_DATA,  # retrain only when the shards' data version changed
    description="The V2LC encoder (TimeSformer video tower + comment tower, symmetric multi-positive InfoNCE), trained by `python -m lcaffect_ml.train_v2lc` through Dagster Pipes; resumes from its last checkpoint on retry.",
)
def v2lc_encoder(context: dg.AssetExecutionContext, lake: LakeResource, v2lc_training: V2LCTrainingResource, pipes_subprocess_client: dg.PipesSubprocessClient, shards: dict):
    if not shards.get("samples"):
        raise dg.Failure("no training samples: the segments stage produced no shards")
    cfg = training_config(v2lc_training, shards["index"], Path("."))
    out = run_folder(lake, shards["data_version"], cfg)
    cfg["output_dir"] = str(out)
    if (done := finished_result(out)) is not None:
        context.log.info(f"training already finished in {out}: reusing it")
        mark_latest(lake, out)
        return done
    config_path = out / "train_config.yaml"
    atomic_write_bytes(config_path, yaml.safe_dump(cfg, sort_keys=True).encode())
    if context.retry_number:
        context.log.info(f"retry {context.retry_number}: the program resumes from its last checkpoint in {out}")
    if v2lc_training.launcher == "k8s":
        from dagster_k8s import PipesK8sClient  # optional: pip install dagster-k8s

        results = PipesK8sClient().run(
            context=context, image=v2lc_training.k8s_image, command=launch_command(v2lc_training, config_path),
            namespace=v2lc_training.k8s_namespace, base_pod_spec=k8s_pod_spec(v2lc_training.gpus),
        ).get_results()
    else:
        results = pipes_subprocess_client.run(
            command=launch_command(v2lc_training, config_path), context=context, env={"PYTHONUNBUFFERED": "1"},
        ).get_results()
    mark_latest(lake, out)
    return results


def mark_latest(lake: LakeResource, out: Path) -> None:
    """Point downstream feature extraction at this finished encoder (written only after success)."""
    atomic_write_bytes(local_path(lake.path("models", "v2lc", "latest.json"), "V2LC training"), json.dumps({"output_dir": str(out)}).encode())


ASSETS = [v2lc_encoder]
