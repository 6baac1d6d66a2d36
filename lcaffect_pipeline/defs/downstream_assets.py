"""Downstream: per task (CH-SIMS v2, MELD, MUStARD) utterances → features → fusion with/without LC; the ablation.

One family of assets per task from one factory (partitions would split the one-command run
into three); their names are listed in full in ``downstream.runs.TASK_ASSETS``, and the run
folders, reuse decisions, comment bank and ablation are plain functions there. A task whose
dataset root is not configured is reported as not available and every asset of its family
materialises as such, without failing the other tasks. A task evaluated with several V2LC
variants extracts LC features and trains the with-LC fusion once per variant (its LC arms,
``downstream.arms``); each such step reports one materialisation covering every arm.
"""

import contextlib
import hashlib
import json
import sys
from pathlib import Path

import dagster as dg
import yaml

from lcaffect_ml.contracts.hashing import sha256_bytes
from lcaffect_ml.contracts.runs import RunFolderError

from ..downstream import runs
from ..downstream.arms import ArmError, base_arm, encoder_arms, features_folder, seed_base_features
from ..downstream.runs import TASK_ASSETS, TASKS
from .. import lake as lake_mod
from .. import tables, versions
from ..lake import atomic_write_bytes, local_tree, workspace
from .automation import ON_NEW_DATA
from .launch_checks import check_run
from .pipes_channels import lake_pipes_client
from .resources import DownstreamResource, LakeResource, V2LCTrainingResource

GROUP = "downstream"
OWNERS = ["team:lcaffect-ml"]


def task_dir(lake: LakeResource, task: str):
    return runs.task_dir(lake.path(), task)


def _dataset_root(stack: contextlib.ExitStack, lake: LakeResource, downstream: DownstreamResource, task: str):
    """The task's dataset folder as a local one. The demo datasets of a lake on an object store
    are rendered and uploaded once, and each task reads a copy of its folder (at the same local
    path every time: the utterance table records the media paths)."""
    demo_root = lake.path("demo_downstream")
    if lake_mod.is_local(demo_root) or not downstream.demo or getattr(downstream, f"{task}_root"):
        return downstream.root_for(task, demo_root)
    from ..downstream.demo_datasets import upload_demo_downstream

    upload_demo_downstream(demo_root, world=downstream.demo_world)
    key = f"demo_downstream-{task}-{hashlib.sha256(str(demo_root).encode()).hexdigest()[:16]}"
    return stack.enter_context(local_tree(demo_root / task, "the demo datasets", key=key))


def _not_available(reason: str) -> dg.Output:
    return dg.Output({"available": False, "reason": reason}, metadata={"available": False, "reason": reason})


def _pipes_run(context, client: dg.PipesSubprocessClient, root, prefix: list[str], module: str, cfg: dict,
               folder) -> tuple[dict, str | None]:
    """Run ``module`` (through the command ``prefix``) with ``cfg``, written into ``folder`` in the
    lake, over Pipes (the context in the environment, the messages through the lake ``root``): the
    (metadata, data version) it reported."""
    config_path = folder / f"{module.rsplit('.', 1)[-1]}_config.yaml"
    atomic_write_bytes(config_path, yaml.safe_dump(cfg, sort_keys=True, allow_unicode=True).encode())
    cmd = [*prefix, sys.executable, "-m", module, "--config", str(config_path)]
    results = lake_pipes_client(client, root).run(command=cmd, context=context, env={"PYTHONUNBUFFERED": "1"}).get_results()
    mat = next((r for r in results if isinstance(r, dg.MaterializeResult)), None)
    if mat is None:
        raise dg.Failure(f"{module} reported no materialisation through Pipes")
    return dict(mat.metadata or {}), mat.data_version.value if mat.data_version else None


def _arms_output(arms: dict[str, tuple[dict, str | None]], value: dict, root, asset: str) -> dg.Output:
    """One ``Output`` for a step that ran once per LC arm: the primary arm's metadata, every arm's
    numbers under ``lc_arms``, a data version over all arms, and the lineage behind the value."""
    primary = next(iter(arms))
    metadata, version = arms[primary]
    metadata = {**metadata, "lineage": dg.MetadataValue.md(versions.lineage_markdown(root, value, asset))}
    if len(arms) > 1:
        arm_versions = {name: v for name, (_, v) in arms.items()}
        version = sha256_bytes(json.dumps(arm_versions, sort_keys=True).encode())[:32]
        metadata = {**metadata, "lc_arms": dg.MetadataValue.json({
            name: {k: getattr(v, "value", v) for k, v in meta.items() if isinstance(getattr(v, "value", v), (int, float, str))}
            for name, (meta, _) in arms.items()})}
    return dg.Output(value, metadata=metadata, data_version=dg.DataVersion(version) if version else None)


def build_task_assets(task: str) -> list[dg.AssetsDefinition]:
    """utterances, features, fusion_with_lc, fusion_without_lc for one task."""
    names = TASK_ASSETS[task]

    @dg.asset(name=names["utterances"], group_name=GROUP, owners=OWNERS, code_version="1", kinds={"parquet"},
              description=f"{task}: the dataset in its official layout as one utterance table, with prepared frames and 16 kHz audio per utterance.")
    def utterances(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource,
                   v2lc_training: V2LCTrainingResource) -> dg.Output:
        from ..downstream import check_media, load_dataset, prepare_media

        check_run(context, v2lc_training, downstream)  # a first step of the downstream runs
        with contextlib.ExitStack() as stack:
            root = _dataset_root(stack, lake, downstream, task)
            if root is None:
                return dg.Output({"available": False, "reason": f"no root configured for {task}"},
                                 metadata={"available": False}, data_version=dg.DataVersion("not-available"))
            table = load_dataset(task, root, downstream.follow_symlinks)
            table, media_report = check_media(table, policy=downstream.media_policy)
            media = stack.enter_context(workspace(task_dir(lake, task) / "media", "media preparation"))
            table, prep_report = prepare_media(table, media, frames=downstream.frames,
                                               size=downstream.size, backend=downstream.frame_backend)
        table = runs.relative_media(table, media, "media")  # resolved against the table's folder: the lake can move
        # A Delta table in the task's folder, one content-addressed file per version (tables.py)
        digest = tables.write(lake.path(), names["utterances"], table)
        version = tables.commit(lake.path(), names["utterances"], {None: digest}, operation="utterances",
                                info={"dagster_run": context.run.run_id})
        path = tables.data_file(lake.path(), names["utterances"], None, digest)
        splits = table.group_by("split").aggregate([("utterance_id", "count")]).to_pylist()
        return dg.Output(
            {"available": True, "path": str(path), "rows": table.num_rows, "data_version": digest,
             "table_version": {names["utterances"]: version}},
            data_version=dg.DataVersion(digest),
            metadata={"available": True, "rows": table.num_rows, "root": dg.MetadataValue.path(str(root)),
                      "table_version": version,
                      "per_split": {s["split"]: s["utterance_id_count"] for s in splits},
                      "media": dg.MetadataValue.json(_jsonable(media_report)), "prepared": dg.MetadataValue.json(_jsonable(prep_report))},
        )

    @dg.asset(name=names["features"], group_name=GROUP, owners=OWNERS, code_version="1", kinds={"pytorch", "safetensors"}, pool="gpu",
              ins={"utts": dg.AssetIn(names["utterances"]), "encoder": dg.AssetIn("v2lc_encoder")},
              automation_condition=ON_NEW_DATA,
              description=f"{task}: text, acoustic, visual and synthetic live-comment features (V2LC video encoder), via `python -m lcaffect_ml.extract_features` through Pipes, with the task's own encoders (`task_features_json`, recorded in the metadata as text_model, audio_model, visual_model) or the benchmark's released features; a new V2LC checkpoint re-extracts only the live-comment features.")
    def features(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource,
                 pipes_subprocess_client: dg.PipesSubprocessClient, utts: dict, encoder: dict):
        if not utts.get("available"):
            yield _not_available(utts.get("reason", "dataset not available"))
            return
        check_run(context, None, downstream, only={names["features"]})  # the encoders and the GPU, before extraction
        try:
            arms = encoder_arms(encoder, downstream.lc_variants(task))
        except ArmError as exc:
            raise dg.Failure(f"{task}: {exc}") from exc
        options = downstream.features_options(task)
        folders = {name: task_dir(lake, task) / features_folder(name, encoder) / runs.config_key(
            {"utterances": utts.get("data_version"), "encoder": ckpt, "options": options}) for name, ckpt in arms}
        previous = (versions.latest(lake.path(), names["features"]) or {}).get("variants") or {}
        reported = {}
        for i, (name, checkpoint_dir) in enumerate(arms):
            # A new version's folder starts from the base features of the last one (or of the arm
            # extracted first): extraction then computes only what changed, e.g. the LC features.
            seed = folders[arms[0][0]] if i else (previous.get(name) or {}).get("dir")
            if seed and str(seed) != str(folders[name]):
                seed_base_features(seed, folders[name])
            reported[name] = _extract(context, lake, downstream, pipes_subprocess_client, task, utts, checkpoint_dir, folders[name])
        variants = {name: {"dir": str(folders[name]), "v2lc_encoder": ckpt} for name, ckpt in arms}
        value = {"available": True, **variants[arms[0][0]], "variant": arms[0][0], "variants": variants,
                 "reads": versions.reads({names["utterances"]: utts, "v2lc_encoder": encoder})}
        yield _arms_output(reported, value, lake.path(), names["features"])

    def fusion(use_lc: bool):
        name = runs.fusion_name(task, use_lc)

        @dg.asset(name=name, group_name=GROUP, owners=OWNERS, code_version="1", kinds={"pytorch", "safetensors"}, pool="gpu",
                  ins={"utts": dg.AssetIn(names["utterances"]), "feats": dg.AssetIn(names["features"])},
                  automation_condition=ON_NEW_DATA,
                  description=f"{task}: the fusion encoder {'with' if use_lc else 'without'} the synthetic live-comment tokens, trained over several seeds by `python -m lcaffect_ml.train_fusion`.")
        def fusion_asset(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource,
                         pipes_subprocess_client: dg.PipesSubprocessClient, utts: dict, feats: dict):
            if not (utts.get("available") and feats.get("available")):
                yield _not_available(utts.get("reason") or feats.get("reason") or "dataset not available")
                return
            if use_lc and "lc" not in downstream.modalities:
                yield _not_available(f"lc is not among downstream.modalities {downstream.modalities}")
                return
            arms = feats.get("variants") or {feats.get("variant") or "default": {"dir": feats["dir"]}}
            primary = feats.get("variant") or next(iter(arms))
            if use_lc:
                names = [primary, *sorted(n for n in arms if n != primary)]
            else:  # every arm has the same base features: one run, on the arm whose folder stays put
                primary = base_arm({n: a["dir"] for n, a in arms.items()})
                names = [primary]
            reported, variants = {}, {}
            for name in names:
                out, reported[name] = _fusion_run(context, lake, downstream, pipes_subprocess_client, task, use_lc,
                                                  utts, arms[name]["dir"])
                variants[name] = {"output_dir": str(out), "features_dir": arms[name]["dir"]}
            value = {"available": True, **variants[primary], "variant": primary, "variants": variants,
                     "reads": versions.reads({TASK_ASSETS[task]["utterances"]: utts, TASK_ASSETS[task]["features"]: feats})}
            yield _arms_output(reported, value, lake.path(), runs.fusion_name(task, use_lc))

        return fusion_asset

    return [utterances, features, fusion(True), fusion(False)]


def _extract(context, lake: LakeResource, downstream: DownstreamResource, client, task: str, utts: dict,
             checkpoint_dir: str, out) -> tuple[dict, str | None]:
    """One arm's feature extraction: the program reads its inputs (the table with its media, the
    V2LC run, the comment bank) from the lake and writes the features folder, its cache, there itself
    (features.json last)."""
    cfg = {"utterances": str(utts["path"]), "output_dir": str(out), "v2lc_checkpoint": str(checkpoint_dir),
           "pipes_asset_key": TASK_ASSETS[task]["features"], "progress": False, "comment_bank": _comment_bank(lake),
           # the task's encoders (and any other extract_features option): defaults, then its own overrides
           **downstream.features_options(task)}
    return _pipes_run(context, client, lake.path(), downstream.launch_prefix, "lcaffect_ml.extract_features",
                      {k: v for k, v in cfg.items() if v is not None}, out)


def _fusion_run(context, lake: LakeResource, downstream: DownstreamResource, client, task: str, use_lc: bool,
                utts: dict, features_dir: str) -> tuple[Path, tuple[dict, str | None]]:
    """One arm's fusion runs over the seeds, or the finished run of the same inputs (reused)."""
    cfg = runs.fusion_config(task, use_lc, utts["path"], features_dir, downstream.seeds,
                             downstream.fusion_options(), downstream.mustard_protocol)
    out = runs.fusion_run_dir(lake.path(), task, cfg, utts.get("data_version"))
    try:
        done = runs.finished_fusion(out)
    except RunFolderError as exc:
        raise dg.Failure(str(exc)) from exc
    if done is not None:
        values, version = done
        return out, ({**values, "output_dir": dg.MetadataValue.path(str(out)), "reused": True}, version)
    # The program reads its inputs from the lake and writes its run folder there itself.
    return out, _pipes_run(context, client, lake.path(), downstream.launch_prefix, "lcaffect_ml.train_fusion",
                           {**cfg, "output_dir": str(out)}, out)


def _jsonable(report) -> dict:
    return report.to_dict() if hasattr(report, "to_dict") else json.loads(json.dumps(report, default=str))


def _comment_bank(lake: LakeResource) -> str | None:
    """The comment bank's place in the lake (``downstream/comment_bank.parquet``), written there;
    on an object store built in scratch and uploaded."""
    if lake_mod.is_local(lake.path()):
        return runs.comment_bank(lake.path())
    with lake_mod.scratch("the comment bank") as folder:
        if (built := runs.comment_bank(lake.path(), folder / runs.COMMENT_BANK)) is None:
            return None
        target = lake.path() / "downstream" / runs.COMMENT_BANK
        lake_mod.publish_copy(built, target)
        return str(target)


@dg.asset(group_name=GROUP, owners=OWNERS, code_version="2", kinds={"markdown", "json"},
          ins={f"{t}_{w}": dg.AssetIn(TASK_ASSETS[t][w]) for t in TASKS for w in ("with_lc", "without_lc")},
          automation_condition=ON_NEW_DATA,
          description="The ablation: every task's metrics with and without the synthetic live-comment features, per seed, mean ± std and the difference (ablation.json in the lake).")
def ablation_report(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource, **fusion_runs: dict) -> dg.Output:
    report = runs.write_ablation(lake.path(), runs.ablation_inputs(fusion_runs), demo=downstream.demo)
    table = report["table"]
    for warning in table["warnings"]:
        context.log.warning(warning)
    headline = {k: dg.MetadataValue.float(v) for k, v in report["headline"].items()}
    value = {"path": str(report["path"]), "version_path": str(report["version_path"]), "headline": report["headline"],
             "reads": versions.reads({TASK_ASSETS[t][w]: fusion_runs[f"{t}_{w}"]
                                      for t in TASKS for w in ("with_lc", "without_lc")})}
    return dg.Output(value,
                     metadata={**_ablation_views(table),
                               "lineage": dg.MetadataValue.md(versions.lineage_markdown(lake.path(), value, "ablation_report")),
                               "version_path": dg.MetadataValue.path(str(report["version_path"])),
                               "ablation": dg.MetadataValue.md(report["markdown"]), "path": dg.MetadataValue.path(str(report["path"])),
                               "tasks": len(table["tasks"]), "stand_in_warnings": len(table["warnings"]) - int(table["demo"]),
                               **headline},
                     data_version=dg.DataVersion(report["data_version"]))


def _ablation_views(table: dict) -> dict:
    """The ablation as a table (one row per task and metric) and a bar chart of the headline metrics."""
    from .. import plots
    from ..downstream.ablation import ROW_COLUMNS, ablation_rows

    rows = ablation_rows(table)
    if not rows:
        return {}
    kinds = {"task": "string", "lc_variant": "string", "metric": "string", "headline": "bool"}
    schema = dg.TableSchema(columns=[dg.TableColumn(c, kinds.get(c, "float")) for c in ROW_COLUMNS])
    return {"ablation_table": dg.MetadataValue.table([dg.TableRecord(r) for r in rows], schema=schema),
            "ablation_chart": dg.MetadataValue.md(plots.markdown_image(plots.ablation_png(rows), "ablation"))}


ASSETS = [*(a for t in TASKS for a in build_task_assets(t)), ablation_report]
