"""Downstream: per task (CH-SIMS v2, MELD, MUStARD) utterances → features → fusion with/without LC; the ablation.

One family of assets per task from one factory (partitions would split the one-command run
into three). A task whose dataset root is not configured is reported as not available and
every asset of its family materialises as such, without failing the other tasks.
"""

import hashlib
import json
import sys
from pathlib import Path

import dagster as dg
import yaml

from lcaffect_ml.contracts.hashing import sha256_file

from ..lake import atomic_write_bytes, local_path
from .automation import ON_NEW_DATA
from .resources import DownstreamResource, LakeResource

GROUP = "downstream"
OWNERS = ["team:lcaffect-ml"]
TASKS = ("chsims2", "meld", "mustard")


def task_dir(lake: LakeResource, task: str) -> Path:
    return local_path(lake.path("downstream", task), "the downstream tasks")


def _config_key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _not_available(reason: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"available": False, "reason": reason})


def _pipes_run(context, client: dg.PipesSubprocessClient, module: str, cfg: dict, folder: Path):
    config_path = folder / f"{module.rsplit('.', 1)[-1]}_config.yaml"
    atomic_write_bytes(config_path, yaml.safe_dump(cfg, sort_keys=True, allow_unicode=True).encode())
    cmd = [sys.executable, "-m", module, "--config", str(config_path)]
    return client.run(command=cmd, context=context, env={"PYTHONUNBUFFERED": "1"}).get_results()


def build_task_assets(task: str) -> list[dg.AssetsDefinition]:
    """utterances, features, fusion_with_lc, fusion_without_lc for one task."""

    @dg.asset(name=f"{task}_utterances", group_name=GROUP, owners=OWNERS, code_version="1", kinds={"parquet"},
              description=f"{task}: the dataset in its official layout as one utterance table, with prepared frames and 16 kHz audio per utterance.")
    def utterances(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource) -> dg.Output:
        from ..downstream import check_media, load_dataset, prepare_media
        from ..lake import write_parquet

        root = downstream.root_for(task, lake.path("demo_downstream"))
        if root is None:
            return dg.Output({"available": False, "reason": f"no root configured for {task}"},
                             metadata={"available": False}, data_version=dg.DataVersion("not-available"))
        table = load_dataset(task, root)
        table, media_report = check_media(table, policy=downstream.media_policy)
        table, prep_report = prepare_media(table, task_dir(lake, task) / "media", frames=downstream.frames,
                                           size=downstream.size, backend=downstream.frame_backend)
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

    @dg.asset(name=f"{task}_features", group_name=GROUP, owners=OWNERS, code_version="1", kinds={"pytorch", "safetensors"}, pool="gpu",
              ins={"utts": dg.AssetIn(f"{task}_utterances")}, deps=["v2lc_encoder"],
              automation_condition=ON_NEW_DATA,
              description=f"{task}: text, acoustic, visual and synthetic live-comment features (V2LC video encoder), via `python -m lcaffect_ml.extract_features` through Pipes; a new V2LC checkpoint re-extracts only the live-comment features.")
    def features(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource,
                 pipes_subprocess_client: dg.PipesSubprocessClient, utts: dict):
        if not utts.get("available"):
            return _not_available(utts.get("reason", "dataset not available"))
        out = task_dir(lake, task) / "features"
        cfg = {"utterances": utts["path"], "output_dir": str(out), "v2lc_checkpoint": _latest_v2lc(lake),
               "text_model": downstream.text_model, "audio_model": downstream.audio_model, "vision_model": downstream.vision_model,
               "pipes_asset_key": f"{task}_features", "progress": False, "comment_bank": _comment_bank(lake)}
        out.mkdir(parents=True, exist_ok=True)
        return _pipes_run(context, pipes_subprocess_client, "lcaffect_ml.extract_features", {k: v for k, v in cfg.items() if v is not None}, out)

    def fusion(use_lc: bool):
        name = f"{task}_fusion_{'with' if use_lc else 'without'}_lc"

        @dg.asset(name=name, group_name=GROUP, owners=OWNERS, code_version="1", kinds={"pytorch", "safetensors"}, pool="gpu",
                  ins={"utts": dg.AssetIn(f"{task}_utterances")}, deps=[f"{task}_features"],
                  automation_condition=ON_NEW_DATA,
                  description=f"{task}: the fusion encoder {'with' if use_lc else 'without'} the synthetic live-comment tokens, trained over several seeds by `python -m lcaffect_ml.train_fusion`.")
        def fusion_asset(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource,
                         pipes_subprocess_client: dg.PipesSubprocessClient, utts: dict):
            if not utts.get("available"):
                return _not_available(utts.get("reason", "dataset not available"))
            feats = task_dir(lake, task) / "features"
            meta = json.loads((feats / "features.json").read_text())
            cfg = {"task": task, "utterances": utts["path"], "features_dir": str(feats), "use_lc": use_lc,
                   "seeds": list(downstream.seeds), "pipes_asset_key": name, **json.loads(downstream.fusion_extra_json or "{}")}
            if task == "mustard":
                cfg["protocol"] = downstream.mustard_protocol
            key = _config_key({**cfg, "base": meta.get("base_version"), "lc": meta.get("lc_version"), "utt": utts.get("data_version")})
            out = task_dir(lake, task) / name / key
            cfg["output_dir"] = str(out)
            if (out / "metrics.json").exists():
                result = _reuse_fusion(out)
            else:
                out.mkdir(parents=True, exist_ok=True)
                result = _pipes_run(context, pipes_subprocess_client, "lcaffect_ml.train_fusion", cfg, out)
            # only a finished run becomes the one the ablation reads: a failure above keeps the last good one
            atomic_write_bytes(task_dir(lake, task) / name / "latest.json", json.dumps({"output_dir": str(out)}).encode())
            return result

        return fusion_asset

    return [utterances, features, fusion(True), fusion(False)]


def _jsonable(report) -> dict:
    return report.to_dict() if hasattr(report, "to_dict") else json.loads(json.dumps(report, default=str))


def _latest_v2lc(lake: LakeResource) -> str:
    pointer = local_path(lake.path("models", "v2lc", "latest.json"), "feature extraction")
    if not pointer.exists():
        raise dg.Failure("no V2LC encoder in this lake yet: materialise v2lc_encoder first")
    return json.loads(pointer.read_text())["output_dir"]


def _comment_bank(lake: LakeResource) -> str | None:
    """The clean corpus's texts as one Parquet (for the nearest-comment view), if there is a corpus."""
    import duckdb

    root = local_path(lake.path(), "the comment bank")
    files = sorted(root.glob("clean_comments/*/*.parquet"))
    if not files:
        return None
    out = root / "downstream" / "comment_bank.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    # the file list is bound; COPY's target cannot be, so it is quoted as an SQL string (a lake root may hold ')
    target = "'" + str(tmp).replace("'", "''") + "'"
    duckdb.execute(f"COPY (SELECT DISTINCT text FROM read_parquet(?) ORDER BY text) TO {target} (FORMAT parquet)",
                   [[str(f) for f in files]])
    tmp.replace(out)
    return str(out)


def _reuse_fusion(out: Path) -> dg.MaterializeResult:
    metrics = json.loads((out / "metrics.json").read_text())
    values = {f"{k}": float(v) for k, v in metrics.get("mean", {}).items()}
    return dg.MaterializeResult(metadata={**values, "output_dir": dg.MetadataValue.path(str(out)), "reused": True},
                                data_version=dg.DataVersion(sha256_file(out / "model.safetensors")))  # as through Pipes


def fusion_metrics(lake: LakeResource, task: str, use_lc: bool) -> dict | None:
    pointer = task_dir(lake, task) / f"{task}_fusion_{'with' if use_lc else 'without'}_lc" / "latest.json"
    if not pointer.exists():
        return None
    path = Path(json.loads(pointer.read_text())["output_dir"]) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def _features_meta(lake: LakeResource, task: str) -> dict | None:
    path = task_dir(lake, task) / "features" / "features.json"
    return json.loads(path.read_text()) if path.exists() else None


@dg.asset(group_name=GROUP, owners=OWNERS, code_version="2", kinds={"markdown", "json"},
          deps=[f"{t}_fusion_{w}_lc" for t in TASKS for w in ("with", "without")],
          automation_condition=ON_NEW_DATA,
          description="The ablation: every task's metrics with and without the synthetic live-comment features, per seed, mean ± std and the difference (ablation.json in the lake).")
def ablation_report(context: dg.AssetExecutionContext, lake: LakeResource, downstream: DownstreamResource) -> dg.MaterializeResult:
    from ..downstream.ablation import HEADLINE, ablation_table

    results = {t: {"with": fusion_metrics(lake, t, True), "without": fusion_metrics(lake, t, False),
                   "features": _features_meta(lake, t)} for t in TASKS}
    table, markdown = ablation_table(results, demo=downstream.demo)
    path = local_path(lake.path("ablation.json"), "the ablation report")
    payload = json.dumps(table, indent=1, sort_keys=True).encode()
    atomic_write_bytes(path, payload)
    atomic_write_bytes(path.with_suffix(".md"), (markdown + "\n").encode())
    headline = {f"{t}_{HEADLINE[t]}_gain": dg.MetadataValue.float(float(v["metrics"][HEADLINE[t]]["difference"]))
                for t, v in table["tasks"].items() if HEADLINE[t] in v["metrics"]}
    for warning in table["warnings"]:
        context.log.warning(warning)
    return dg.MaterializeResult(metadata={"ablation": dg.MetadataValue.md(markdown), "path": dg.MetadataValue.path(str(path)),
                                          "tasks": len(table["tasks"]), "stand_in_warnings": len(table["warnings"]) - int(table["demo"]),
                                          **headline},
                                data_version=dg.DataVersion(hashlib.sha256(payload).hexdigest()[:32]))


ASSETS = [*(a for t in TASKS for a in build_task_assets(t)), ablation_report]
