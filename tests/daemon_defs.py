"""A tiny code location for tests/test_daemon_postgres.py: cheap assets and jobs that exercise
the scale-out instance (configs/instance/dagster.postgres.yaml) through a real dagster-daemon.

The pool, tags and automation condition are the project's own (pool "gpu", GPU_RUN_TAGS,
ON_NEW_DATA); only the work is replaced by short sleeps. The test drives it through files
in $LCAFFECT_DAEMON_TEST_DIR (a sensor reads a request file; a step writes its pid).
"""

import os
import time
from pathlib import Path

import dagster as dg

from lcaffect_pipeline.defs.automation import ON_NEW_DATA
from lcaffect_pipeline.defs.jobs import GPU_RUN_TAGS

STATE = Path(os.environ.get("LCAFFECT_DAEMON_TEST_DIR", "."))
GPU_STEP_SECONDS = 8.0


@dg.asset(code_version="1")
def queued_probe() -> None:
    """Does nothing: its run only has to go through the queue."""


@dg.asset(code_version="1", pool="gpu")
def gpu_step(context: dg.AssetExecutionContext) -> None:
    """Holds the `gpu` pool for a few seconds (a stand-in for training)."""
    time.sleep(GPU_STEP_SECONDS)


@dg.asset(code_version="1")
def crash_step(context: dg.AssetExecutionContext) -> None:
    """First attempt: tells the test its process id and waits to be killed. Retry: finishes."""
    if context.run.tags.get("dagster/parent_run_id"):
        return
    (STATE / "crash.pid").write_text(str(os.getpid()))
    time.sleep(600)


@dg.asset(code_version="1")
def upstream_data() -> dg.Output[None]:
    """Materialised by the test itself with the data version it writes to upstream.version."""
    return dg.Output(None, data_version=dg.DataVersion((STATE / "upstream.version").read_text()))


@dg.asset(code_version="1", deps=[upstream_data], automation_condition=ON_NEW_DATA)
def downstream_model() -> None:
    """Re-made by the automation sensor when upstream_data's data version changes."""


in_process = dg.in_process_executor
queued_job = dg.define_asset_job("queued_job", selection=[queued_probe], executor_def=in_process)
gpu_job = dg.define_asset_job("gpu_job", selection=[gpu_step], tags=GPU_RUN_TAGS, executor_def=in_process)
crash_job = dg.define_asset_job("crash_job", selection=[crash_step], executor_def=in_process)
tick_job = dg.define_asset_job("tick_job", selection=[queued_probe], executor_def=in_process)


@dg.sensor(job=gpu_job, minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING)
def two_gpu_runs(context: dg.SensorEvaluationContext):
    """Requests two gpu_job runs in one tick, once per new request file content."""
    request = STATE / "gpu.request"
    token = request.read_text() if request.is_file() else None
    if token is None or token == context.cursor:
        return dg.SkipReason("no new request")
    context.update_cursor(token)
    return [dg.RunRequest(run_key=f"{token}-{i}", tags={"test/gpu_pair": token}) for i in range(2)]


@dg.schedule(job=tick_job, cron_schedule="* * * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
def every_minute(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=context.scheduled_execution_time.isoformat())


automation = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.assets(downstream_model),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    run_tags={"test/trigger": "automation"},
)

defs = dg.Definitions(
    assets=[queued_probe, gpu_step, crash_step, upstream_data, downstream_model],
    jobs=[queued_job, gpu_job, crash_job, tick_job],
    sensors=[two_gpu_runs, automation],
    schedules=[every_minute],
)
