"""What a run will load and where it asks to run, checked in seconds before any long step.

From a run's resolved settings (the ``v2lc_training`` resource's fields, each downstream task's
extract_features options, the fusion options) this lists the pretrained models the run loads
(``run_models``: the same list ``python -m lcaffect_pipeline.defs.fetch_models`` downloads) and the
GPUs it asks for (``gpu_requests``), and ``check`` fails with one message naming every missing
model, the Hugging Face cache and the fetch command, and any GPU asked for where CUDA is not
usable. ``lcaffect_pipeline.defs.launch_checks`` calls it at launch and before the long steps.

Which options name a model is each program's own knowledge (``train_v2lc_config.hub_models``,
``extract_features.hub_models``); this module only gathers them per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from lcaffect_ml.options import ConfigError

from . import v2lc_runs


class PreflightError(ConfigError):
    """A run would fail later for want of a model or a GPU: everything found, in one message."""


def runs_elsewhere(training: Mapping[str, Any]) -> bool:
    """The training program runs in a pod of its own (k8s launcher) or under a custom command (e.g.
    srun): its device is checked there, by the program, not on this machine."""
    return training.get("launcher") == "k8s" or bool(training.get("command"))


def v2lc_options(training: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """variant name -> the train_v2lc options it runs with (the resource's fields, extra_json, then
    the variant's own options: the order ``defs.model_assets.train_variant`` applies)."""
    base = v2lc_runs.training_config(dict(training), (), "", Path("."))
    return {v.name: {**base, **v.options} for v in v2lc_runs.parse_variants(training.get("variants_json"))}


def run_models(training: Mapping[str, Any] | None, task_options: Mapping[str, Mapping[str, Any]]) -> list:
    """Every pretrained model (``lcaffect_ml.hub.ModelRef``) a run loads: the V2LC towers of each
    variant when ``training`` is given (the run trains V2LC; a k8s pod checks its own), and each
    task's feature encoders for the tasks in ``task_options`` (task -> extract_features options)."""
    from lcaffect_ml.extract_features import hub_models as features_models
    from lcaffect_ml.train_v2lc_config import hub_models as v2lc_models

    refs = []
    if training is not None and training.get("launcher") != "k8s":
        for name, options in v2lc_options(training).items():
            refs += v2lc_models(options, f"v2lc_training[{name}]")
    for task, options in task_options.items():
        refs += features_models(dict(options), f"{task} features")
    return refs


def _asks_cuda(options: Mapping[str, Any]) -> bool:
    return str(options.get("device", "auto")).startswith("cuda")


def gpu_requests(training: Mapping[str, Any] | None, task_options: Mapping[str, Mapping[str, Any]],
                 fusion_options: Mapping[str, Any] | None) -> list[str]:
    """Who asks for a GPU on this machine (``gpus`` >= 1, or ``device: cuda`` in any program's
    options), e.g. ``["v2lc_training.gpus=4", "meld features device=cuda"]``."""
    asks = []
    if training is not None and not runs_elsewhere(training):
        if int(training.get("gpus") or 0) >= 1:
            asks.append(f"v2lc_training.gpus={training['gpus']}")
        asks += [f"v2lc_training[{name}] device={o['device']}" for name, o in v2lc_options(training).items()
                 if _asks_cuda(o)]
    asks += [f"{task} features device={o['device']}" for task, o in task_options.items() if _asks_cuda(o)]
    if fusion_options is not None and _asks_cuda(fusion_options):
        asks.append(f"fusion_extra_json device={fusion_options['device']}")
    return asks


def check(refs: list, gpus: list[str]) -> None:
    """Raise ``PreflightError`` with every problem found: a GPU asked for where CUDA is not usable,
    models not on this machine. Imports torch only when a GPU is asked for."""
    from lcaffect_ml.hub import ModelsMissingError, require

    problems = []
    if gpus:
        from lcaffect_ml.devices import CudaUnavailableError, require_cuda

        try:
            require_cuda(", ".join(gpus))
        except CudaUnavailableError as exc:
            problems.append(str(exc))
    try:
        require(refs)
    except ModelsMissingError as exc:
        problems.append(str(exc))
    if problems:
        raise PreflightError("\n".join(problems))

