"""The run's preflight in Dagster: the models and GPUs of the assets a run will materialise,
checked by its first steps (``video_catalogue``; each ``{task}_utterances``) and again by the
long steps themselves (``v2lc_encoder``, ``{task}_features``) before they launch a program.

The listing and the check are plain functions (``lcaffect_pipeline.preflight``); here they are
given the run's resources and its asset selection. ``python -m lcaffect_pipeline.defs.fetch_models``
uses ``run_plan`` with a job's assets, so it fetches exactly what a run checks.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import dagster as dg

from .. import preflight
from ..downstream.runs import TASK_ASSETS, TASKS
from .resources import DownstreamResource, V2LCTrainingResource


def planned_assets(context) -> set[str]:
    """The assets the current run materialises (its selection, else its job's assets)."""
    keys = context.run.asset_selection or context.job_def.asset_layer.executable_asset_keys
    return {key.to_user_string() for key in keys}


def run_plan(planned: Iterable[str], training: V2LCTrainingResource | None, downstream: DownstreamResource | None
             ) -> tuple[list, list[str]]:
    """(models, GPU requests) of the planned assets: the V2LC towers if ``v2lc_encoder`` is
    planned, each task's feature encoders if its features are planned and its dataset is configured
    (a task without one is "not available" and loads nothing), the fusion device if a fusion is."""
    planned = set(planned)
    settings = training.model_dump() if training is not None and "v2lc_encoder" in planned else None
    tasks, fusion = {}, None
    if downstream is not None:
        tasks = {t: downstream.features_options(t) for t in TASKS if TASK_ASSETS[t]["features"] in planned
                 and (getattr(downstream, f"{t}_root") or downstream.demo)}
        if planned & {TASK_ASSETS[t][w] for t in TASKS for w in ("with_lc", "without_lc")}:
            fusion = json.loads(downstream.fusion_extra_json or "{}")
    return preflight.run_models(settings, tasks), preflight.gpu_requests(settings, tasks, fusion)


def check_run(context, training: V2LCTrainingResource | None, downstream: DownstreamResource | None,
              only: set[str] | None = None) -> None:
    """Fail the step at once (no retry) when the run, or the ``only`` assets of this step, would
    fail later for want of a model or a GPU. Under the k8s executor every step is a pod of its own,
    so a first step checks the others' models but not their GPUs (each long step checks its own)."""
    planned = only if only is not None else planned_assets(context)
    models, gpus = run_plan(planned, training, downstream)
    if only is None and os.environ.get("LCAFFECT_EXECUTOR", "").strip().lower() == "k8s":
        gpus = []
    try:
        preflight.check(models, gpus)
    except preflight.PreflightError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    if models or gpus:
        context.log.info(f"preflight: {len(models)} model reference(s) resolve on this machine; GPU asked by "
                         f"{', '.join(gpus) or 'none'}")
