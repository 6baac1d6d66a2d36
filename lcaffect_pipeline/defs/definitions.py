"""The one ``Definitions`` object: assets, checks, jobs, schedules, sensors, resources.

The executor is chosen by configuration, not code: ``LCAFFECT_EXECUTOR`` = ``multiprocess``
(the default: steps as local processes forked from a server that has already loaded this code
location, ``local_multiprocess``), ``in_process``, or ``k8s`` (every step, e.g. each
fan-out chunk or the training step, as its own Kubernetes Job; needs ``pip install .[scale]``
and a K8sRunLauncher instance, see docs/OPERATIONS.md).
"""

import os

import dagster as dg

from .jobs import JOBS
from .retention import retention_job, weekly_retention
from .schedules import SCHEDULES
from .sensors import SENSORS
from .checks import CHECKS
from .clips_assets import ASSETS as CLIPS_ASSETS
from .clips_assets import CHECKS as CLIPS_CHECKS
from .corpus_assets import ASSETS as CORPUS_ASSETS
from .downstream_assets import ASSETS as DOWNSTREAM_ASSETS
from .evaluation_assets import ASSETS as EVALUATION_ASSETS
from .model_assets import ASSETS as MODEL_ASSETS
from .resources import CatalogueResource, ClipsResource, DownstreamResource, CleaningResource, CrawlerResource, HumanEvalResource, LakeJsonIOManager, LakeResource, RunScope, V2LCTrainingResource


@dg.configured(dg.multi_or_in_process_executor, config_schema=dg.Field(dg.Selector({
    "multiprocess": dg.Field({
        "max_concurrent": dg.Field(int, is_required=False, description="Steps at once (default: the CPU count)"),
        "forkserver": dg.Field(bool, default_value=True,
                               description="Fork steps from a server that preloaded the code location (false: spawn)"),
    }, is_required=False),
    "in_process": dg.Field({}, is_required=False),
}), default_value={"multiprocess": {}}))
def local_multiprocess(config: dict) -> dict:
    """Dagster's default executor (``multiprocess`` or ``in_process`` by run config), with local
    steps forked from a forkserver that has imported the code location once: spawned, every step
    re-imports Dagster and the code location (about 3 s here), which at corpus scale cost more
    than the per-video work itself (bench/bench_scale.py: 200 videos 75 s -> 28 s, a no-op
    refresh 50 s -> 19 s)."""
    if "in_process" in config:
        return {"in_process": {}}
    mp = config.get("multiprocess") or {}
    start = ({"forkserver": {"preload_modules": ["lcaffect_pipeline.definitions"]}} if mp.get("forkserver", True)
             else {"spawn": {}})
    return {"multiprocess": {"start_method": start,
                             **({"max_concurrent": mp["max_concurrent"]} if "max_concurrent" in mp else {})}}


def build_executor(kind: str | None = None) -> dg.ExecutorDefinition | None:
    """The executor named by ``LCAFFECT_EXECUTOR`` (default ``multiprocess``)."""
    kind = (kind if kind is not None else os.environ.get("LCAFFECT_EXECUTOR", "")).strip().lower()
    if kind in ("", "default", "multiprocess"):
        return local_multiprocess
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor  # optional dependency: imported only when chosen

        return k8s_job_executor
    raise ValueError(f"LCAFFECT_EXECUTOR={kind!r}: expected multiprocess, in_process or k8s")


@dg.io_manager(required_resource_keys={"lake", "scope"})
def lake_io_manager(init_context) -> LakeJsonIOManager:
    """``LakeJsonIOManager`` on the run's configured ``lake`` resource, reading inputs as of the
    run's ``scope.as_of_json``. Bound with a lake of its own, the IO manager kept that one's root
    when a run set ``resources.lake.config.root``, and put the manifests into ./lake instead of the
    configured lake (a bucket, say)."""
    return LakeJsonIOManager(lake=init_context.resources.lake, as_of_json=init_context.resources.scope.as_of_json)


def build_resources() -> dict:
    return {
        "lake": LakeResource(),
        "scope": RunScope(),
        "catalogue": CatalogueResource(),
        "crawler": CrawlerResource(),
        "cleaning": CleaningResource(),
        "clips": ClipsResource(),
        "v2lc_training": V2LCTrainingResource(),
        "downstream": DownstreamResource(),
        "human_eval": HumanEvalResource(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "io_manager": lake_io_manager,
    }


defs = dg.Definitions(
    assets=[*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS, *DOWNSTREAM_ASSETS, *EVALUATION_ASSETS],
    asset_checks=[*CHECKS, *CLIPS_CHECKS],
    jobs=[*JOBS, retention_job],
    schedules=[*SCHEDULES, weekly_retention],
    sensors=SENSORS,
    resources=build_resources(),
    executor=build_executor(),
)
