"""The V2LC encoder's runs, without Dagster: the training configuration, the run folder, the
launch command, reuse of a finished run and the asset's value.

``lcaffect_pipeline.defs.model_assets`` wraps these in the ``v2lc_encoder`` asset. Folders:

    models/v2lc/{run key}/        one run per (shard data version, training configuration)
    shards/index.v2lc-{variant}.json   each variant's shards: its corpus selection, with each
                                  entry's platform, language and other catalogue columns

Variants are named encoders trained side by side in one lake (say ``zh`` on Chinese Bilibili
comments with a Chinese RoBERTa comment tower, ``bilingual`` on everything with XLM-R): each
selects its corpus by any catalogue column (language, platform, genre …), may subsample it to a
fixed size, and overrides training options. Without any, one
variant named ``default`` trains on every shard.

Which run is *the* encoder is the asset's value (``encoder_value``), stored by the IO manager in
``_manifests/v2lc_encoder.json`` and passed to feature extraction as an input: a failed run
writes no value, so downstream keeps reading the last good encoder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lcaffect_ml.contracts import lakepaths
from lcaffect_ml.contracts.shards import DEFAULT_SEGMENT_S
from lcaffect_ml.contracts.hashing import sha256_bytes
from lcaffect_ml.contracts import runs
from lcaffect_ml.contracts.runs import V2LC_FINISHED

from .json_options import json_object

from . import lake, schema


METRIC_KEYS = ("v2c_r1", "v2c_r5", "v2c_r10", "v2c_medr", "c2v_r1", "c2v_r5", "c2v_r10", "c2v_medr", "chance_r1",
               "steps", "clips_per_s", "peak_memory_mb", "train_segments")
TRAIN_MODULE = "lcaffect_ml.train_v2lc"


DEFAULT_VARIANT = "default"
VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class VariantError(ValueError):
    """``variants_json`` is not a mapping of valid variant names to valid selections."""


# Catalogue columns an index entry carries under "catalogue" (what the held-out split can group by);
# platform and language are entry fields of their own; the paths (source, video) and the title are not groupings.
INDEX_COLUMNS = tuple(n for n in schema.CATALOGUE_SCHEMA.names if n not in ("video_id", "platform", "language", "source", "video", "title"))
VARIANT_KEYS = ("languages", "platforms", "genres", "where", "segments", "hours", "sample_seed", "options")


@dataclass(frozen=True)
class Variant:
    """One named V2LC encoder: the corpus it trains on and the training options it overrides.

    ``where`` keeps the videos whose catalogue column holds one of the values (compared lower-cased;
    ``languages``, ``platforms`` and ``genres`` are its shorthands); ``segments`` or ``hours``
    then subsample the selection to that size, whole videos in an order seeded by ``sample_seed``,
    so a narrow and a diverse corpus of equal size can be compared."""

    name: str
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (catalogue column, values kept); empty: all
    segments: int | None = None
    hours: float | None = None
    sample_seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def selects(self, row: Mapping[str, Any]) -> bool:
        return all(str(row.get(column) or "").lower() in values for column, values in self.where)

    def describe(self) -> str:
        return ", ".join(f"{column} in {list(values)}" for column, values in self.where) or "every video"


def parse_variants(text: str | None) -> list[Variant]:
    """The variants of ``variants_json`` in their order (the first is the one downstream reads by
    default); ``[Variant("default")]`` when none are configured."""
    raw = json_object(text, "variants_json (name -> variant)", VariantError)
    return [_variant(name, spec or {}) for name, spec in raw.items()] or [Variant(DEFAULT_VARIANT)]


def _variant(name: str, spec: Any) -> Variant:
    if not VARIANT_NAME.fullmatch(name):
        raise VariantError(f"variant name {name!r}: use 1-32 of a-z, 0-9, _ and - (it names files in the lake)")
    unknown = sorted(set(spec) - set(VARIANT_KEYS)) if isinstance(spec, dict) else ["(not an object)"]
    if unknown:
        raise VariantError(f"variant {name!r}: unknown key(s) {unknown}; known: {', '.join(VARIANT_KEYS)}")
    where = dict(spec.get("where") or {})
    for key, column in (("languages", "language"), ("platforms", "platform"), ("genres", "genre")):
        if spec.get(key):
            where[column] = spec[key]
    if bad := sorted(set(where) - set(schema.CATALOGUE_SCHEMA.names)):
        raise VariantError(f"variant {name!r}: where names {bad}, not catalogue columns ({', '.join(schema.CATALOGUE_SCHEMA.names)})")
    if spec.get("segments") is not None and spec.get("hours") is not None:
        raise VariantError(f"variant {name!r}: give segments or hours, not both")
    segments, hours = spec.get("segments"), spec.get("hours")
    if any(v is not None and not (isinstance(v, (int, float)) and v > 0) for v in (segments, hours)):
        raise VariantError(f"variant {name!r}: segments and hours must be positive numbers")
    return Variant(name, tuple(sorted((c, tuple(str(v).lower() for v in _as_list(vals))) for c, vals in where.items())),
                   int(segments) if segments is not None else None, float(hours) if hours is not None else None,
                   int(spec.get("sample_seed") or 0), dict(spec.get("options") or {}))


def _as_list(values: Any) -> list:
    return list(values) if isinstance(values, (list, tuple)) else [values]


def variant_index(entries: Sequence[Mapping[str, Any]], catalogue: Sequence[Mapping[str, Any]],
                  variant: Variant, segment_s: float = DEFAULT_SEGMENT_S) -> list[dict[str, Any]]:
    """The shard index entries ``variant`` trains on, each with its video's platform, language and
    (under ``catalogue``) other catalogue columns (which the training program uses to report, hold
    out or group the held-out split by), subsampled to the variant's size (``subsample``)."""
    rows = {row["video_id"]: row for row in catalogue}
    out = []
    for entry in entries:
        row = rows.get(entry["video_id"], {})
        if variant.selects(row):
            about = {k: row[k] for k in INDEX_COLUMNS if row.get(k) is not None}
            out.append({**entry, "platform": row.get("platform"), "language": row.get("language"),
                        **({"catalogue": about} if about else {})})
    return subsample(out, variant, segment_s)


def subsample(entries: list[dict[str, Any]], variant: Variant, segment_s: float) -> list[dict[str, Any]]:
    """Whole videos of ``entries`` in an order seeded by ``variant.sample_seed``, each kept while the
    total stays within ``variant.segments`` (or ``hours`` of ``segment_s`` segments); all of them
    without a size. A selection smaller than the size is refused: equal sizes are the point."""
    target = variant.segments or (round(variant.hours * 3600 / segment_s) if variant.hours else None)
    if target is None:
        return entries
    per_video: dict[str, int] = {}
    for e in entries:
        per_video[e["video_id"]] = per_video.get(e["video_id"], 0) + int(e.get("samples") or 0)
    if (available := sum(per_video.values())) < target:
        raise VariantError(f"variant {variant.name!r} asks for {target} segments but its selection "
                           f"({variant.describe()}) has only {available}")
    order = sorted(per_video, key=lambda v: sha256_bytes(f"{variant.sample_seed}:{v}".encode()))
    kept, total = set(), 0
    for video in order:
        if total + per_video[video] <= target:
            kept.add(video)
            total += per_video[video]
    return [e for e in entries if e["video_id"] in kept]


def training_config(settings: dict[str, Any], launch_fields: Sequence[str], shards_index: str, output_dir: Path) -> dict:
    """The ``train_v2lc`` configuration from the resource's settings (without its launch fields)."""
    cfg = {k: v for k, v in settings.items() if k not in launch_fields and v is not None}
    cfg.update(json.loads(cfg.pop("extra_json") or "{}"))
    cfg.update({"shards": shards_index, "output_dir": str(output_dir), "pipes_asset_key": "v2lc_encoder"})
    return cfg


def run_key(shards_version: str, cfg: dict[str, Any], root=None) -> str:
    """16 hex digits naming one (shard data, training config): a retry or re-run resumes there.

    The shards' data version has a key of its own: ``cfg["shards"]`` is the index *path*, which
    stays the same when the shards change, and must not hide the version (it once did, so new
    shards reused the old run's weights). An index inside the lake ``root`` counts by its path
    relative to the lake, so a copied or moved lake finds its finished runs."""
    payload = {"shards_version": shards_version, **{k: v for k, v in cfg.items() if k != "output_dir"}}
    if root is not None and isinstance(payload.get("shards"), str):
        payload["shards"] = lakepaths.relative(root, payload["shards"]) or payload["shards"]
    return sha256_bytes(json.dumps(payload, sort_keys=True).encode())[:16]


def run_dir(root, shards_version: str, cfg: dict[str, Any]):
    """``{root}/models/v2lc/{run key}`` (a local path, or a universal_pathlib path on an object store)."""
    return lake.as_path(root) / "models" / "v2lc" / run_key(shards_version, cfg, root)


def launch_command(config_path: Path, *, command: Sequence[str] | None = None, gpus: int = 0,
                   device: str = "auto") -> list[str]:
    """The training program's command line: a configured command, torchrun for several GPUs, else
    python -m. With GPUs asked for and ``device: auto`` the program is told ``device=cuda``, so it
    fails at start where CUDA is not usable instead of training on the CPU (also where it runs
    elsewhere: a k8s pod, srun); the run's config, and so its run key, stay as they were."""
    pin = ["--set", "device=cuda"] if gpus >= 1 and device == "auto" else []
    if command:
        return [*command, "--config", str(config_path), *pin]
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "-m", TRAIN_MODULE,
                "--config", str(config_path), *pin]
    return [sys.executable, "-m", TRAIN_MODULE, "--config", str(config_path), *pin]


def k8s_pod_spec(gpus: int, secret: str | None = None) -> dict:
    """Pod spec fragment for the Kubernetes launcher: the GPUs as limits, shared memory for loaders,
    and the keys of ``secret`` (the lake's credentials) as environment variables: with the lake's
    URL in its configuration, that is all the program needs."""
    container = {"resources": {"limits": {"nvidia.com/gpu": str(max(1, gpus))}},
                 "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}
    if secret:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    return {"containers": [container], "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]}


def latest_checkpoint(out: Path) -> Path:
    steps = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else out


def finished_run(out) -> tuple[dict[str, Any], str] | None:
    """(metrics, data version) of a training run that already finished in ``out`` (a re-run is a
    no-op), else None (``contracts.runs.finished_run``)."""
    return runs.finished_run(out, V2LC_FINISHED)


def reported_run(result, out) -> tuple[dict[str, Any], str]:
    """(metrics, data version) from the program's Pipes report (``MaterializeResult``): the
    metrics as the program wrote them to ``out``/metrics.json, without reading or hashing it."""
    if result.data_version is None:
        raise runs.RunFolderError(f"the training program's report for {out} has no data version")
    metrics = {k: v.value for k, v in (result.metadata or {}).items() if k not in ("model_dir", "checkpoint")}
    return metrics, result.data_version.value


def above_chance(metrics: dict[str, Any]) -> bool:
    """The asset check: held-out video→comment R@1 beats the chance level of its candidate pool."""
    return float(metrics.get("v2c_r1", 0)) > float(metrics.get("chance_r1", 1))


def runtime_keys() -> tuple[str, ...]:
    """What metrics.json records about where the run ran (device, precision, torch/CUDA versions)."""
    from lcaffect_ml.devices import RUNTIME_KEYS  # torch: imported only when a value is built

    return RUNTIME_KEYS


def encoder_value(out: Path, metrics: dict[str, Any], data_version: str | None) -> dict[str, Any]:
    """The ``v2lc_encoder`` asset's value: where the finished run is, its weights' version and its
    headline metrics (what feature extraction and ``lcaffect_pipeline.report`` read)."""
    return {"output_dir": str(out), "data_version": data_version,
            "metrics": {k: float(metrics[k]) for k in METRIC_KEYS if k in metrics},
            "runtime": {k: str(metrics[k]) for k in runtime_keys() if k in metrics},
            "groups": {k: metrics[k] for k in ("by_platform", "by_language") if k in metrics},
            "split_group": metrics.get("split_group")}
