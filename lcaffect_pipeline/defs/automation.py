"""Jobs, the daily corpus refresh, the sensor that notices a changed catalogue, and the
declarative automation of the expensive stages (retrain / re-extract only on new data)."""


import hashlib
from pathlib import Path

import dagster as dg

from .resources import CatalogueResource

AC = dg.AutomationCondition

# Runs that hold GPU steps carry this tag; configs/instance/dagster.postgres.yaml caps how many
# such runs the queue lets through at once (the `gpu` pool caps their steps).
GPU_RUN_TAGS = {"lcaffect/gpu": "true"}

# Why not ``AutomationCondition.eager()``: eager's ``any_deps_updated()`` is built on
# ``newly_updated()``, which is true for *every* new materialisation of a dependency, so the
# daily re-crawl (which re-materialises training_shards with the same content) would retrain
# the encoder every day. ``data_version_changed()`` is true only when a dependency's newest
# materialisation carries a data version different from the one before it; every asset here
# reports a content-derived data version, so "same bytes" means "no trigger".
# As in eager: ignore a dependency's update made by a run that also targeted this asset
# (``executed_with_root_target``), and follow a dependency requested on the same tick
# (``will_be_requested``) so one tick can chain shards → encoder → features → fusion.
ANY_DEP_DATA_CHANGED = AC.any_deps_match(
    (AC.data_version_changed() & ~AC.executed_with_root_target()) | AC.will_be_requested()
).with_label("any_dep_data_changed")

# Materialise when missing (once its dependencies exist) or when a dependency's data changed
# since this asset was last requested or updated (``since_last_handled``); never while a
# dependency is missing or in flight, or while this asset is already running.
ON_NEW_DATA = (
    (AC.newly_missing() | ANY_DEP_DATA_CHANGED).since_last_handled()
    & ~AC.any_deps_missing()
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
).with_label("on_new_data")

corpus_job = dg.define_asset_job(
    "corpus_job",
    selection=dg.AssetSelection.groups("corpus"),
    description="Crawl, parse and clean the live-comment corpus for the catalogue, and rebuild the DuckDB catalog.",
)

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Everything, from the catalogue to the latest stage (the README's main command).",
    tags=GPU_RUN_TAGS,
)

clips_job = dg.define_asset_job(
    "clips_job",
    selection=dg.AssetSelection.groups("clips"),
    description="Videos to training clips: download, probe, audio, segments and shards (needs the corpus).",
)

pretrain_job = dg.define_asset_job(
    "pretrain_job",
    selection=dg.AssetSelection.assets("v2lc_encoder"),
    description="Pretrain the V2LC encoder on the current training shards (a GPU step).",
    tags=GPU_RUN_TAGS,
)

downstream_job = dg.define_asset_job(
    "downstream_job",
    selection=dg.AssetSelection.groups("downstream"),
    description="Features and fusion with and without live-comment features for every configured task, and the ablation report.",
    tags=GPU_RUN_TAGS,
)

JOBS = [corpus_job, clips_job, pretrain_job, downstream_job, full_pipeline]


@dg.schedule(job=corpus_job, cron_schedule="0 4 * * *", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)
def daily_corpus_refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Re-crawl comments of every catalogued video once a day (comments keep arriving).

    One run per refresh; videos whose comments did not change keep their data version, so
    nothing downstream goes stale.
    """
    return dg.RunRequest(
        run_key=context.scheduled_execution_time.strftime("refresh-%Y-%m-%d"),
        run_config={"resources": {"scope": {"config": {"refresh": True}}}},
        tags={"lcaffect/trigger": "daily_refresh"},
    )


def _file_digest(path: str) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if path and p.is_file() else None


@dg.sensor(job=corpus_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def catalogue_changed(context: dg.SensorEvaluationContext, catalogue: CatalogueResource):
    """Request a corpus run when the catalogue file's content changes (new videos are picked up)."""
    digest = _file_digest(catalogue.path)
    if digest is None:
        return dg.SkipReason(f"no catalogue file at {catalogue.path!r} (set LCAFFECT_CATALOGUE)")
    if digest == context.cursor:
        return dg.SkipReason("catalogue unchanged")
    context.update_cursor(digest)
    return dg.RunRequest(run_key=f"catalogue-{digest}", tags={"lcaffect/trigger": "catalogue_changed"})


SCHEDULES = [daily_corpus_refresh]

# Evaluates every asset's automation condition (only the model and downstream assets carry
# one: ON_NEW_DATA). Targeting all assets means Dagster adds no default automation sensor of
# its own; this one ships stopped like the schedule (turn it on in the UI, with the daemon).
retrain_on_new_data = dg.AutomationConditionSensorDefinition(
    "retrain_on_new_data",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=300,
    run_tags={"lcaffect/trigger": "automation", **GPU_RUN_TAGS},  # it only requests GPU assets
    description="Retrain V2LC when the training shards' data version changes, and re-extract features / re-train fusion when their inputs' data change.",
)

SENSORS = [catalogue_changed, retrain_on_new_data]
