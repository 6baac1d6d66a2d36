"""The lake's retention as a job (``retention_job``) and a weekly schedule, over
``lcaffect_pipeline.retention``: versions past a count and an age that nothing kept was built from."""

from typing import Optional

import dagster as dg
from pydantic import Field

from .. import retention
from .resources import LakeResource


class RetentionConfig(dg.Config):
    keep_last: Optional[int] = Field(default=10, ge=retention.KEEP_LAST_MIN, description="Keep each table's newest versions (the current one always)")
    max_age_days: Optional[float] = Field(default=None, gt=0, description="Keep versions younger than this too (a version goes when past both limits)")
    dry_run: bool = Field(default=False, description="Report what would be freed, delete nothing")


def _report_markdown(report: dict) -> str:
    lines = ["| table | freed versions | kept | kept: built from | files | bytes |", "|---|---|---|---|---:|---:|"]
    for table, t in report["tables"].items():
        lines.append(f"| {table} | {t['versions'] or '-'} | {t['kept']} | {t['referenced'] or '-'} | {t['files']} | {t['bytes']} |")
    return "\n".join(lines)


@dg.op(description="Free table versions past the configured count and age, except those a kept model, feature set or report was built from")
def lake_retention(context: dg.OpExecutionContext, config: RetentionConfig, lake: LakeResource) -> dict:
    report = retention.run(lake.path(), keep_last=config.keep_last, max_age_days=config.max_age_days,
                           dry_run=config.dry_run)
    verb = "would free" if config.dry_run else "freed"
    context.log.info(f"retention {verb} {report['files']} files and {report['shard_folders']} shard folders, "
                     f"{report['bytes']} bytes")
    context.add_output_metadata({"bytes_freed": report["bytes"], "files_freed": report["files"],
                                 "shard_folders_freed": report["shard_folders"], "dry_run": config.dry_run,
                                 "tables": dg.MetadataValue.md(_report_markdown(report))})
    return report


@dg.job(description="Free old versions of the lake's tables (and the shard folders only they named) that nothing kept was built from.")
def retention_job():
    lake_retention()


@dg.schedule(job=retention_job, cron_schedule="0 5 * * 0", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_retention(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Once a week, after the Sunday refresh: keep each table's last 10 versions and 30 days."""
    return dg.RunRequest(run_key=context.scheduled_execution_time.strftime("retention-%Y-%m-%d"),
                         run_config={"ops": {"lake_retention": {"config": {"keep_last": 10, "max_age_days": 30}}}})
