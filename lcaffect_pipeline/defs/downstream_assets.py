"""Downstream: per task (CH-SIMS v2, MELD, MUStARD) utterances → features → fusion with/without LC; the ablation.

One family of assets per task from one factory (partitions would split the one-command run
into three); their names are listed in full in ``downstream.runs.TASK_ASSETS``, and the run
folders, reuse decisions, comment bank and ablation are plain functions there. A task whose dataset root is not configured is reported as not available and
every asset of its family materialises as such, without failing the other tasks.
"""

import contextlib
import hashlib
import json
import sys
from pathlib import Path

import dagster as dg
import yaml

from ..downstream import runs
from ..downstream.runs import TASK_ASSETS, TASKS
from .. import lake as lake_mod
from ..lake import atomic_write_bytes, local_tree, workspace
from .automation import ON_NEW_DATA
from .model_assets import pipes_outputs
from .resources import DownstreamResource, LakeResource

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
    from ..downstream.demo import upload_demo_downstream

    upload_demo_downstream(demo_root)
    key = f"demo_downstream-{task}-{hashlib.sha256(str(demo_root).encode()).hexdigest()[:16]}"
    return stack.enter_context(local_tree(demo_root / task, "the demo datasets", key=key))


def _not_available(reason: str) -> dg.Output:
    return dg.Output({"available": False, "reason": reason}, metadata={"available": False, "reason": reason})


def _pipes_run(context, client: dg.PipesSubprocessClient, module: str, cfg: dict, folder: Path, value: dict):
    """Run ``module`` through Pipes with ``cfg``; its materialisation carries ``value`` for the IO manager."""
    config_path = folder / f"{module.rsplit('.', 1)[-1]}_config.yaml"
    atomic_write_bytes(config_path, yaml.safe_dump(cfg, sort_keys=True, allow_unicode=True).encode())
    cmd = [sys.executable, "-m", module, "--config", str(config_path)]
    results = client.run(command=cmd, context=context, env={"PYTHONUNBUFFERED": "1"}).get_results()
    yield from pipes_outputs(results, value)


def build_task_assets(task: str) -> list[dg.AssetsDefinition]:
    """utterances, features, fusion_with_lc, fusion_without_lc for one task."""
    names = TASK_ASSETS[task]

    @dg.asset(name=names["utterances"], group_name=GROUP, owners=OWNERS, code_version="1", kinds={"parquet"},
              description=f"{task}: the dataset in its official layout as one utterance table, with prepared frames and 16 kHz audio per utterance.")
    def utterances(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource) -> dg.Output:
        from ..downstream import check_media, load_dataset, prepare_media
        from ..lake import write_parquet

        with contextlib.ExitStack() as stack:
            root = _dataset_root(stack, lake, downstream, task)
            if root is None:
                return dg.Output({"available": False, "reason": f"no root configured for {task}"},
                                 metadata={"available": False}, data_version=dg.DataVersion("not-available"))
            table = load_dataset(task, root)
            table, media_report = check_media(table, policy=downstream.media_policy)
            media = stack.enter_context(workspace(task_dir(lake, task) / "media", "media preparation"))
            table, prep_report = prepare_media(table, media, frames=downstream.frames,
                                               size=downstream.size, backend=downstream.frame_backend)
        table = runs.relative_media(table, media, "media")  # resolved against the table's folder: the lake can move
        path = task_dir(lake, task) / "utterances.parquet"
        digest = write_parquet(table, path)
        splits = table.group_by("split").aggregate([("utterance_id", "count")]).to_pylist()
        return dg.Output(
            {"available": True, "path": str(path), "rows": table.num_rows, "data_version": digest},
            data_version=dg.DataVersion(digest),
            metadata={"available": True, "rows": table.num_rows, "root": dg.MetadataValue.path(str(root)),
                      "per_split": {s["split"]: s["utterance_id_count"] for s in splits},
                      "media": dg.MetadataValue.json(_jsonable(media_report)), "prepared": dg.MetadataValue.json(_jsonable(prep_report))},
        )

    @dg.asset(name=names["features"], group_name=GROUP, owners=OWNERS, code_version="1", kinds={"pytorch", "safetensors"}, pool="gpu",
              ins={"utts": dg.AssetIn(names["utterances"]), "encoder": dg.AssetIn("v2lc_encoder")},
              automation_condition=ON_NEW_DATA,
              description=f"{task}: text, acoustic, visual and synthetic live-comment features (V2LC video encoder), via `python -m lcaffect_ml.extract_features` through Pipes; a new V2LC checkpoint re-extracts only the live-comment features.")
    def features(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource,
                 pipes_subprocess_client: dg.PipesSubprocessClient, utts: dict, encoder: dict):
        if not utts.get("available"):
            yield _not_available(utts.get("reason", "dataset not available"))
            return
        out = task_dir(lake, task) / "features"
        value = {"available": True, "dir": str(out), "v2lc_encoder": encoder["output_dir"]}
        # The program reads and writes local files: on an object store, copies of its inputs and of
        # the features folder (its cache), which is uploaded with features.json last.
        with local_tree(task_dir(lake, task), "feature extraction", only=("utterances.parquet", "media")) as inputs, \
                local_tree(encoder["output_dir"], "feature extraction", exclude=("checkpoints",)) as checkpoint, \
                workspace(out, "feature extraction", last=(runs.META_FILE,)) as local_out:
            cfg = {"utterances": str(inputs / "utterances.parquet"), "output_dir": str(local_out), "v2lc_checkpoint": str(checkpoint),
                   "text_model": downstream.text_model, "audio_model": downstream.audio_model, "vision_model": downstream.vision_model,
                   "pipes_asset_key": names["features"], "progress": False, "comment_bank": _comment_bank(lake, local_out),
                   **json.loads(downstream.features_extra_json or "{}")}
            results = list(_pipes_run(context, pipes_subprocess_client, "lcaffect_ml.extract_features",
                                      {k: v for k, v in cfg.items() if v is not None}, local_out, value))
        yield from results

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
            cfg = runs.fusion_config(task, use_lc, utts["path"], feats["dir"], downstream.seeds,
                                     json.loads(downstream.fusion_extra_json or "{}"), downstream.mustard_protocol)
            out = runs.fusion_run_dir(lake.path(), task, cfg, utts.get("data_version"))
            value = {"available": True, "output_dir": str(out), "features_dir": feats["dir"]}
            if (done := runs.finished_fusion(out)) is not None:
                values, version = done
                yield dg.Output(value, metadata={**values, "output_dir": dg.MetadataValue.path(str(out)), "reused": True},
                                data_version=dg.DataVersion(version))
                return
            # Local copies of the inputs and a scratch run folder on an object store (see features).
            with local_tree(task_dir(lake, task), "fusion training", only=("utterances.parquet", "features")) as inputs, \
                    workspace(out, "fusion training", last=runs.FINISHED_FILES) as local_out:
                local_cfg = {**cfg, "utterances": str(inputs / "utterances.parquet"),
                             "features_dir": str(inputs / "features"), "output_dir": str(local_out)}
                results = list(_pipes_run(context, pipes_subprocess_client, "lcaffect_ml.train_fusion", local_cfg, local_out, value))
            yield from results

        return fusion_asset

    return [utterances, features, fusion(True), fusion(False)]


def _jsonable(report) -> dict:
    return report.to_dict() if hasattr(report, "to_dict") else json.loads(json.dumps(report, default=str))


def _comment_bank(lake: LakeResource, local_dir: Path | None = None) -> str | None:
    """The comment bank, written into ``local_dir`` (the features folder's local copy) where the lake is remote."""
    if lake_mod.is_local(lake.path()) or local_dir is None:
        return runs.comment_bank(lake.path())
    return runs.comment_bank(lake.path(), local_dir / "comment_bank.parquet")


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
    return dg.Output({"path": str(report["path"]), "headline": report["headline"]},
                     metadata={"ablation": dg.MetadataValue.md(report["markdown"]), "path": dg.MetadataValue.path(str(report["path"])),
                               "tasks": len(table["tasks"]), "stand_in_warnings": len(table["warnings"]) - int(table["demo"]),
                               **headline},
                     data_version=dg.DataVersion(report["data_version"]))


ASSETS = [*(a for t in TASKS for a in build_task_assets(t)), ablation_report]
