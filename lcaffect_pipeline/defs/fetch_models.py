"""Fetch every pretrained model a run config names into the Hugging Face cache, for an offline node.

    python -m lcaffect_pipeline.defs.fetch_models -c configs/paper.example.yaml [-c more.yaml] [-j full_pipeline]
    python -m lcaffect_pipeline.defs.fetch_models -c configs/paper.example.yaml --check    # offline: present/missing

The config files are merged and validated as ``dagster job execute -j JOB -c a -c b`` does (the
job's run-config schema, resource defaults filled in); the models are those the job's assets load
(``defs.launch_checks.run_plan``: the same list a run checks at launch). Each hub name is
downloaded with ``huggingface_hub.snapshot_download`` into ``HF_HUB_CACHE`` (default
``$HF_HOME/hub``): config and tokenizer files and the weights (safetensors, else PyTorch .bin).
Local folders are only checked. Exit status: 0 every model present; 1 some missing or failed; 2
a bad config.

This command reads Dagster run configs, so it needs Dagster (it is on the code location's side).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from lcaffect_ml.hub import META_PATTERNS, WEIGHT_PATTERNS, ModelRef, hub_cache_dir, is_local, locate


def load_run_config(paths: Sequence[str | Path]) -> dict:
    """Merge YAML run configs as ``dagster job execute -c a -c b`` does (deep merge, later wins)."""
    import yaml
    from dagster._utils.merger import deep_merge_dicts

    merged: dict = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read the run config: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a run config is a mapping, not {type(data).__name__}")
        merged = deep_merge_dicts(merged, data)
    return merged


def job_resources(job: str, run_config: dict) -> dict:
    """The job's resources built from ``run_config`` as a run would build them: validated against
    the job's schema (unknown fields refused, defaults filled in), then constructed."""
    import dagster as dg

    from .definitions import defs

    job_def = defs.resolve_job_def(job)
    resolved = dg.validate_run_config(job_def, run_config)
    built = {}
    for key, value in defs.resources.items():
        if isinstance(value, dg.ConfigurableResource) and key in resolved.get("resources", {}):
            built[key] = type(value)(**(resolved["resources"][key].get("config") or {}))
    return built


def job_assets(job: str) -> set[str]:
    from .definitions import defs

    return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}


def planned_models(job: str, run_config: dict) -> list[ModelRef]:
    """The models a run of ``job`` with ``run_config`` loads."""
    from .launch_checks import run_plan

    resources = job_resources(job, run_config)
    refs, _ = run_plan(job_assets(job), resources.get("v2lc_training"), resources.get("downstream"))
    return refs


def fetch(ref: ModelRef) -> Path:
    """Download one hub model into the cache: its config/tokenizer files and weights (safetensors
    where the repository has them, else .bin, never both)."""
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    folder = Path(snapshot_download(ref.name, cache_dir=cache, allow_patterns=[*META_PATTERNS, WEIGHT_PATTERNS[0]]))
    if ref.weights and not any(folder.glob(WEIGHT_PATTERNS[0])):
        folder = Path(snapshot_download(ref.name, cache_dir=cache, allow_patterns=[*META_PATTERNS, *WEIGHT_PATTERNS[1:]]))
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lcaffect_pipeline.defs.fetch_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", action="append", required=True, help="run config YAML (repeatable, merged in order)")
    parser.add_argument("-j", "--job", default="full_pipeline", help="the job the configs are for (default: full_pipeline)")
    parser.add_argument("--check", action="store_true", help="download nothing: say which models are present or missing")
    args = parser.parse_args(argv)
    try:
        refs = planned_models(args.job, load_run_config(args.config))
    except Exception as exc:  # a bad file, an unknown job, a config the job's schema refuses
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len({r.name for r in refs})} model(s) for {args.job}; hub cache {hub_cache_dir()}")
    failed = 0
    for name in dict.fromkeys(r.name for r in refs):
        ref = next((r for r in refs if r.name == name and r.weights), next(r for r in refs if r.name == name))
        users = ", ".join(r.used_by for r in refs if r.name == name)
        folder, why = locate(ref)
        if folder is None and not args.check and not is_local(name):
            try:
                fetch(ref)
            except Exception as exc:  # network, authentication, a name the hub does not have
                why = f"download failed: {exc}"
            else:
                folder, why = locate(ref)
        failed += folder is None
        print(f"{'present' if folder else 'MISSING'}  {name}  ({users}){'' if folder else ': ' + why}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
