"""Downstream runs, without Dagster: the asset names of each task, the run folders and reuse
decisions of the fusion runs, the comment bank and the ablation report.

``lcaffect_pipeline.defs.downstream_assets`` wraps these in assets. Folders under the lake root:

    downstream/{task}/{hash}.parquet (the utterance table's versions, _delta_log/), media/, features/{version}/
    downstream/{task}/{task}_fusion_{with,without}_lc/{config key}/   one fusion run per configuration
    downstream/comment_bank.parquet                                    distinct clean comments (nearest-comment view)
    reports/ablation/{version}/ablation.{json,md}                   every report (never overwritten)
    ablation.json, ablation.md                                         the latest report

Which run each fusion asset stands for is that asset's value (``{"output_dir", "features_dir"}``,
kept by the IO manager under ``_manifests/``), and the ablation reads those values as inputs: a
failed run writes no value, so the ablation keeps the last good one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lcaffect_ml.contracts.hashing import sha256_bytes, short_hash
from lcaffect_ml.contracts.runs import FUSION_FINISHED, finished_run
from lcaffect_ml.contracts.tables import META_FILE

from .. import lake
from ..lake import atomic_write_bytes

TASKS = ("chsims2", "meld", "mustard")
# Every downstream asset, named in full so that a search for "meld_features" finds it.
TASK_ASSETS: dict[str, dict[str, str]] = {
    "chsims2": {"utterances": "chsims2_utterances", "features": "chsims2_features",
                "with_lc": "chsims2_fusion_with_lc", "without_lc": "chsims2_fusion_without_lc"},
    "meld": {"utterances": "meld_utterances", "features": "meld_features",
             "with_lc": "meld_fusion_with_lc", "without_lc": "meld_fusion_without_lc"},
    "mustard": {"utterances": "mustard_utterances", "features": "mustard_features",
                "with_lc": "mustard_fusion_with_lc", "without_lc": "mustard_fusion_without_lc"},
}
ABLATION_ASSET = "ablation_report"
COMMENT_BANK = "comment_bank.parquet"  # downstream/{this}: distinct clean comments


def relative_media(table, media_dir: Path, name: str = "media"):
    """The utterance table with each prepared npz under ``media_dir`` named ``{name}/{file}``:
    relative to the table's folder (``lcaffect_ml.feature_io`` resolves it there), so the table
    stays valid wherever the task folder is (another lake, a local copy of one on an object store)."""
    import pyarrow as pa

    i = table.schema.get_field_index("media_npz")
    base = str(media_dir).rstrip("/") + "/"
    values = [f"{name}/{v[len(base):]}" if v and v.startswith(base) else v for v in table.column(i).to_pylist()]
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def fusion_name(task: str, use_lc: bool) -> str:
    return TASK_ASSETS[task]["with_lc" if use_lc else "without_lc"]


def task_dir(root, task: str):
    """``{root}/downstream/{task}`` (a local path, or a universal_pathlib path on an object store)."""
    return lake.as_path(root) / "downstream" / task


def config_key(payload: dict[str, Any]) -> str:
    """16 hex digits naming one run configuration (a run folder)."""
    return sha256_bytes(json.dumps(payload, sort_keys=True, default=str).encode())[:16]


def fusion_config(task: str, use_lc: bool, utterances: str, features_dir: Path, seeds: list[int],
                  extra: dict[str, Any], mustard_protocol: str) -> dict[str, Any]:
    """The ``lcaffect_ml.train_fusion`` configuration of one fusion asset (without ``output_dir``)."""
    cfg = {"task": task, "utterances": utterances, "features_dir": str(features_dir), "use_lc": use_lc,
           "seeds": list(seeds), "pipes_asset_key": fusion_name(task, use_lc), **extra}
    if task == "mustard":
        cfg["protocol"] = mustard_protocol
    return cfg


def fusion_run_dir(root: Path, task: str, cfg: dict[str, Any], utterances_version: str | None) -> Path:
    """One folder per (configuration, feature versions, utterance table version): a re-run with
    nothing changed finds its finished run there."""
    feats = lake.as_path(cfg["features_dir"])
    meta = json.loads((feats / META_FILE).read_text())
    key = config_key({**cfg, "base": meta.get("base_version"), "lc": meta.get("lc_version"), "utt": utterances_version})
    return task_dir(root, task) / cfg["pipes_asset_key"] / key


def finished_fusion(out: Path) -> tuple[dict[str, float], str] | None:
    """(mean metrics, data version) of a fusion run that already finished in ``out``, else None
    (``contracts.runs.finished_run``: its metrics.json, uploaded last, records the data version)."""
    if (done := finished_run(out, FUSION_FINISHED)) is None:
        return None
    metrics, version = done
    return {k: float(v) for k, v in metrics.get("mean", {}).items()}, version


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def ablation_inputs(fusion_runs: dict[str, dict]) -> dict[str, dict]:
    """Per task, the metrics of the runs the fusion assets' values name (None where a task is not
    available or its run left no metrics) and the features' metadata, keyed as ``ablation_table``
    reads them: the primary LC arm under "with", every arm (V2LC variant) under "arms".

    ``fusion_runs`` maps ``{task}_with_lc``/``{task}_without_lc`` to the fusion assets' values."""
    def metrics(output_dir: str) -> dict | None:
        return _read_json(lake.as_path(output_dir) / "metrics.json")

    def meta(features_dir: str | None) -> dict | None:
        return _read_json(lake.as_path(features_dir) / META_FILE) if features_dir else None

    out = {}
    for task in TASKS:
        with_lc, without = (v if (v or {}).get("available") else None
                            for v in (fusion_runs.get(f"{task}_with_lc"), fusion_runs.get(f"{task}_without_lc")))
        feats = next((v["features_dir"] for v in (with_lc, without) if v), None)
        arms = (with_lc or {}).get("variants") or ({with_lc.get("variant") or "default": with_lc} if with_lc else {})
        out[task] = {"with": metrics(with_lc["output_dir"]) if with_lc else None,
                     "without": metrics(without["output_dir"]) if without else None,
                     "features": meta(feats), "lc_variant": (with_lc or {}).get("variant"),
                     "arms": {name: {"with": metrics(arm["output_dir"]), "features": meta(arm.get("features_dir"))}
                              for name, arm in arms.items()}}
    return out


def comment_bank(root, out: Path | None = None) -> str | None:
    """The clean corpus's distinct texts as one Parquet (for the nearest-comment view), if there is a
    corpus: ``out`` (a local file), by default ``{root}/downstream/comment_bank.parquet`` in a local lake.
    DuckDB reads the corpus from the lake, on an object store through its fsspec file system."""
    from .. import tables
    from ..corpus import connect

    files = sorted(tables.files(root, "clean_comments").values()) if tables.version(root, "clean_comments") is not None else []
    if not files:
        return None
    out = out or lake.local_path(root, "the comment bank") / "downstream" / COMMENT_BANK
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    # the file list is bound; COPY's target cannot be, so it is quoted as an SQL string (a lake root may hold ')
    target = "'" + str(tmp).replace("'", "''") + "'"
    con = connect(root)
    try:
        con.execute(f"COPY (SELECT DISTINCT text FROM read_parquet(?) ORDER BY text) TO {target} (FORMAT parquet)",
                    [[str(f) for f in files]])
    finally:
        con.close()
    tmp.replace(out)
    return str(out)


def write_ablation(root: Path, results: dict[str, dict], demo: bool) -> dict[str, Any]:
    """Every task's metrics with and without the LC features (``ablation_inputs``) into
    ``reports/ablation/{version}/ablation.json``/``.md`` under ``root`` (never overwritten), and
    as the latest report, ``ablation.json``/``.md`` at the root.

    Returns the table, its markdown, the paths, the headline gains per task and the data version
    (short hash of the JSON written)."""
    from .ablation import HEADLINE, ablation_table

    table, markdown = ablation_table(results, demo=demo)
    payload = json.dumps(table, indent=1, sort_keys=True).encode()
    version = short_hash(sha256_bytes(payload))
    kept = lake.as_path(root) / "reports" / "ablation" / version / "ablation.json"
    path = lake.as_path(root) / "ablation.json"
    for target in (kept, path):
        atomic_write_bytes(target.with_suffix(".md"), (markdown + "\n").encode())
        atomic_write_bytes(target, payload)
    headline = {f"{t}_{HEADLINE[t]}_gain": float(v["metrics"][HEADLINE[t]]["difference"])
                for t, v in table["tasks"].items() if HEADLINE[t] in v["metrics"]}
    return {"table": table, "markdown": markdown, "path": path, "version_path": kept, "headline": headline,
            "data_version": version}
