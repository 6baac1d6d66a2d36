"""The V2LC encoder: the training program launched through Dagster Pipes in the ``gpu`` pool, once
per configured variant (``V2LCTrainingResource.variants_json``).

Variants, their shard selection, run folders, reuse and the launch command are plain functions in
``lcaffect_pipeline.v2lc_runs``."""

import json
from pathlib import Path

import dagster as dg
import yaml

from lcaffect_ml.contracts.hashing import sha256_bytes
from lcaffect_ml.contracts.runs import RunFolderError

from .. import v2lc_runs, versions
from ..corpus import load_catalogue_from_lake
from ..lake import as_path, atomic_write_bytes
from ..downstream.ablation import SHUFFLED_ARM
from ..v2lc_runs import k8s_pod_spec, latest_checkpoint
from ..shards import content_name
from .automation import ON_NEW_DATA
from .launch_checks import check_run
from .pipes_channels import lake_pipes_client
from .resources import ClipsResource, LakeResource, V2LCTrainingResource

GROUP = "model"
CHECK = "retrieval_above_chance"


def training_config(training: V2LCTrainingResource, shards_index: str, output_dir: Path) -> dict:
    return v2lc_runs.training_config(training.model_dump(), V2LCTrainingResource.LAUNCH_FIELDS, shards_index, output_dir)


def launch_command(training: V2LCTrainingResource, config_path: Path, device: str = "auto") -> list[str]:
    return v2lc_runs.launch_command(config_path, command=training.command, gpus=training.gpus, device=device)


def train_variant(context, root, training: V2LCTrainingResource, client: dg.PipesSubprocessClient,
                  shards: dict, entries: list[dict], catalogue: list[dict], variant: v2lc_runs.Variant,
                  segment_s: float) -> tuple[Path, tuple[dict, str], bool]:
    """Train (or reuse) one variant: its shard index (from the full index's ``entries``), its run
    folder, the program through Pipes. Returns (run folder, (metrics, weights version), reused)."""
    shards_index = as_path(shards["index"])
    try:
        selected = v2lc_runs.variant_index(entries, catalogue, variant, segment_s)
    except v2lc_runs.VariantError as exc:
        raise dg.Failure(str(exc)) from exc
    if not selected:
        raise dg.Failure(f"V2LC variant {variant.name!r} selects no shard ({variant.describe()}; the catalogue's "
                         "values are compared lower-cased)")
    payload = json.dumps(selected, ensure_ascii=False, indent=1).encode()
    # Content-addressed beside the main index (relative URLs hold): a later materialisation adds
    # its own, and the config of every earlier run still names an index that exists.
    index = shards_index.with_name(content_name(payload, f"index.v2lc-{variant.name}"))
    if not index.exists():
        atomic_write_bytes(index, payload)
    cfg = {**training_config(training, str(index), Path(".")), **variant.options}
    out = v2lc_runs.run_dir(root, f"{shards['data_version']}:{sha256_bytes(payload)[:16]}", cfg)
    try:
        done = v2lc_runs.finished_run(out)
    except RunFolderError as exc:
        raise dg.Failure(str(exc)) from exc
    if done is not None:
        context.log.info(f"V2LC variant {variant.name}: training already finished in {out}: reusing it")
        return out, done, True
    # The program reads its config and shards from the lake and writes its run folder there itself
    # (checkpoints as they are made, the finished files last): it needs nothing of this machine.
    reported = _train(context, training, root, client, {**cfg, "output_dir": str(out)}, out)
    return out, reported, False


def encoder_outputs(trained: dict[str, tuple[Path, tuple[dict, str], bool]], root=None, shards: dict | None = None):
    """One ``Output`` for every variant trained (the first is the one downstream reads by default)
    and the check: every variant's held-out R@1 above its chance level (the control ``SHUFFLED_ARM`` aside). ``shards``: the
    training_shards value the variants read, recorded (``reads``) for lineage."""
    values = {name: v2lc_runs.encoder_value(out, *done) for name, (out, done, _) in trained.items()}
    reads = versions.reads({"training_shards": shards})
    first = next(iter(values))
    weights = {name: v["data_version"] for name, v in values.items()}
    version = weights[first] if len(weights) == 1 else sha256_bytes(json.dumps(weights, sort_keys=True).encode())[:32]
    out_first = trained[first][0]
    metadata = {**values[first]["metrics"], **values[first]["runtime"], "variant": first, "reused": all(r for _, _, r in trained.values()),
                "split_group": str(values[first]["split_group"]),  # what the held-out retrieval split kept together
                "checkpoint": dg.MetadataValue.path(str(latest_checkpoint(out_first))),
                "variants": dg.MetadataValue.json({n: {**v["metrics"], **v["groups"], "split_group": v["split_group"],
                                                       "output_dir": v["output_dir"]}
                                                   for n, v in values.items()})}
    value = {**values[first], "variant": first, "variants": values, "reads": reads}
    if root is not None:
        metadata["lineage"] = dg.MetadataValue.md(versions.lineage_markdown(root, value, "v2lc_encoder"))
    yield dg.Output(value, metadata=metadata, data_version=dg.DataVersion(version))
    # the shuffled-comment control is meant to stay at chance: it is reported, not checked
    passed = {name: v2lc_runs.above_chance(done[0]) for name, (_, done, _) in trained.items() if name != SHUFFLED_ARM}
    yield dg.AssetCheckResult(check_name=CHECK, passed=all(passed.values()), metadata={
        **{f"{n}_v2c_r1": float(v["metrics"].get("v2c_r1", 0)) for n, v in values.items()},
        **{f"{n}_chance_r1": float(v["metrics"].get("chance_r1", 0)) for n, v in values.items()},
        "v2c_r1": float(values[first]["metrics"].get("v2c_r1", 0)),
        "chance_r1": float(values[first]["metrics"].get("chance_r1", 0))})


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
def v2lc_encoder(context: dg.AssetExecutionContext, lake: LakeResource, v2lc_training: V2LCTrainingResource,
                 clips: ClipsResource, pipes_subprocess_client: dg.PipesSubprocessClient, shards: dict):
    check_run(context, v2lc_training, None, only={"v2lc_encoder"})  # the towers and the GPUs, before training
    if not shards.get("samples"):
        raise dg.Failure("no training samples: the segments stage produced no shards")
    try:
        variants = v2lc_runs.parse_variants(v2lc_training.variants_json)
    except v2lc_runs.VariantError as exc:
        raise dg.Failure(str(exc)) from exc
    catalogue = load_catalogue_from_lake(lake.path())
    entries = json.loads(as_path(shards["index"]).read_text())  # read once for every variant
    trained = {v.name: train_variant(context, lake.path(), v2lc_training, pipes_subprocess_client, shards, entries,
                                     catalogue, v, clips.segment_s)  # a variant's hours count these segments
               for v in variants}
    yield from encoder_outputs(trained, lake.path(), shards)


def _train(context, v2lc_training: V2LCTrainingResource, root, pipes_subprocess_client, cfg: dict,
           out) -> tuple[dict, str]:
    """Launch the program on ``out`` (a lake folder) through Pipes; its report's (metrics, data version)."""
    config_path = out / "train_config.yaml"
    atomic_write_bytes(config_path, yaml.safe_dump(cfg, sort_keys=True, allow_unicode=True).encode())
    if context.retry_number:
        context.log.info(f"retry {context.retry_number}: the program resumes from its last checkpoint in {out}")
    command = launch_command(v2lc_training, config_path, cfg.get("device", "auto"))
    if v2lc_training.launcher == "k8s":
        from dagster_k8s import PipesK8sClient  # optional: pip install dagster-k8s

        # context in the pod's environment, messages in its log: the Kubernetes client's defaults
        invocation = PipesK8sClient().run(
            context=context, image=v2lc_training.k8s_image, command=command,
            namespace=v2lc_training.k8s_namespace, base_pod_spec=k8s_pod_spec(v2lc_training.gpus, v2lc_training.k8s_secret))
    else:
        invocation = lake_pipes_client(pipes_subprocess_client, root).run(
            command=command, context=context, env={"PYTHONUNBUFFERED": "1"})
    return v2lc_runs.reported_run(invocation.get_materialize_result(), out)


ASSETS = [v2lc_encoder]
