"""The sensors: a changed catalogue file requests a corpus run; the automation sensor evaluates
the assets' automation conditions (``automation.ON_NEW_DATA``)."""

import os

import dagster as dg

from lcaffect_ml.contracts.hashing import sha256_file

from .jobs import GPU_RUN_TAGS, corpus_job
from .resources import CatalogueResource


def _file_digest(path: str) -> str | None:
    """The sensor's cursor: 16 hex digits of the catalogue file's SHA-256 (None: no file)."""
    return sha256_file(path)[:16] if path and os.path.isfile(path) else None


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
