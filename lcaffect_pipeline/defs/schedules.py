"""The daily corpus refresh."""

import dagster as dg

from .jobs import corpus_job

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


SCHEDULES = [daily_corpus_refresh]
