"""The V2LC encoder: the training program launched through Dagster Pipes in the ``gpu`` pool.

Run folders, reuse and the launch command are plain functions in ``lcaffect_pipeline.models``."""

from pathlib import Path

import dagster as dg
import yaml

from .. import models
from ..lake import atomic_write_bytes, local_path
from ..models import METRIC_KEYS, k8s_pod_spec, latest_checkpoint  # noqa: F401  (imported from here too)
from .automation import ON_NEW_DATA
from .resources import LakeResource, V2LCTrainingResource

GROUP = "model"
CHECK = "retrieval_above_chance"


def training_config(training: V2LCTrainingResource, shards_index: str, output_dir: Path) -> dict:
    return models.training_config(training.model_dump(), V2LCTrainingResource.LAUNCH_FIELDS, shards_index, output_dir)


def launch_command(training: V2LCTrainingResource, config_path: Path) -> list[str]:
    return models.launch_command(config_path, command=training.command, gpus=training.gpus)


def reused_result(out: Path, done: tuple[dict, str]):
    """A training run that already finished in ``out``: a re-run is a no-op that re-states its value."""
    metrics, version = done
    yield dg.Output(models.encoder_value(out, metrics, version), data_version=dg.DataVersion(version),
                    metadata={**models.encoder_value(out, metrics, version)["metrics"], "reused": True,
                              "checkpoint": dg.MetadataValue.path(str(latest_checkpoint(out)))})
    yield dg.AssetCheckResult(check_name=CHECK, passed=models.above_chance(metrics),
                              metadata={"v2c_r1": float(metrics.get("v2c_r1", 0)), "chance_r1": float(metrics.get("chance_r1", 0))})


def pipes_outputs(results, value: dict):
    """The Pipes run's materialisation as an ``Output`` carrying ``value`` (so the IO manager stores
    it for the assets that read this one), and its check results."""
    for result in results:
        if isinstance(result, dg.MaterializeResult):
            yield dg.Output(value, metadata=dict(result.metadata or {}), data_version=result.data_version)
            yield from result.check_results or ()
        else:
            yield result


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
    out = models.run_dir(local_path(lake.path(), "V2LC training"), shards["data_version"], cfg)
    cfg["output_dir"] = str(out)
    if (done := models.finished_run(out)) is not None:
        context.log.info(f"training already finished in {out}: reusing it")
        yield from reused_result(out, done)
        return
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
    if (done := models.finished_run(out)) is None:
        raise dg.Failure(f"the training program exited without metrics.json and model.safetensors in {out}")
    yield from pipes_outputs(results, models.encoder_value(out, *done))


ASSETS = [v2lc_encoder]
