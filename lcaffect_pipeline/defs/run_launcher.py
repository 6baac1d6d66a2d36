"""A run launcher for one machine that lets Dagster's run monitoring see a dead run worker.

Dagster's ``DefaultRunLauncher`` starts each run as a process but cannot tell the daemon that
the process died, so a run killed with its process (``kill -9``, the OOM killer, a reboot)
stays STARTED for ever and the run-retry policy never sees it fail. This launcher answers the
daemon's health check from the process id the run itself recorded when it began executing
(the executor's engine event, also written by ``dagster job execute``): gone means FAILED, and
monitoring then marks the run failed, which the retry policy retries.

It is the launcher of ``./dagster.yaml`` (one machine: the daemon and the runs share a process
table). Several machines use Postgres and the Kubernetes launcher, whose pods carry their own
health (``configs/instance/dagster.postgres.yaml``).
"""

from __future__ import annotations

from dagster import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

from lcaffect_ml.atomic import process_alive


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` plus a worker health check by process id (same machine)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        pid = run_worker_pid(self._instance, run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run has not recorded its process yet")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive", run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker pid {pid} is gone (killed or crashed)", run_worker_id=str(pid))


def run_worker_pid(instance, run_id: str) -> int | None:
    """The process that orchestrates the run: the last run-level engine event carrying a pid."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records
    for record in reversed(records):
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is not None:
            continue
        pid = (getattr(event.event_specific_data, "metadata", None) or {}).get("pid")
        if pid is not None:
            return int(pid.value)
    return None
