"""Jobs, the daily corpus refresh, and the sensor that notices a changed catalogue."""


import hashlib
from pathlib import Path

import dagster as dg

from .resources import CatalogueResource

corpus_job = dg.define_asset_job(
    "corpus_job",
    selection=dg.AssetSelection.groups("corpus"),
    description="Crawl, parse and clean the live-comment corpus for the catalogue, and rebuild the DuckDB catalog.",
)

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Everything, from the catalogue to the latest stage (the README's main command).",
)

JOBS = [corpus_job, full_pipeline]


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
SENSORS = [catalogue_changed]

clips_job = dg.define_asset_job(
    "clips_job",
    selection=dg.AssetSelection.groups("clips"),
    description="Videos to training clips: download, probe, audio, segments and shards (needs the corpus).",
)
JOBS.append(clips_job)

pretrain_job = dg.define_asset_job(
    "pretrain_job",
    selection=dg.AssetSelection.assets("v2lc_encoder"),
    description="Pretrain the V2LC encoder on the current training shards (a GPU step).",
)
JOBS.append(pretrain_job)

downstream_job = dg.define_asset_job(
    "downstream_job",
    selection=dg.AssetSelection.groups("downstream"),
    description="Features and fusion with and without live-comment features for every configured task, and the ablation report.",
)
JOBS.append(downstream_job)
