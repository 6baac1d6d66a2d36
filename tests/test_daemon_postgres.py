"""The scale-out instance for real: configs/instance/dagster.postgres.yaml on a PostgreSQL server
started by scripts/postgres_server.sh, with a real `dagster-daemon run` process (queue, sensors,
schedules, automation, run retries and monitoring) serving the cheap code location in
tests/daemon_defs.py. Skipped with the reason where PostgreSQL cannot start; a failure under CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from services import ROOT, require_module, running

pytestmark = pytest.mark.timeout(900)
INSTANCE_FILE = ROOT / "configs" / "instance" / "dagster.postgres.yaml"
BIN = Path(sys.executable).parent
CODE = ["-f", "tests/daemon_defs.py"]
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass
class Daemon:
    instance: DagsterInstance
    state: Path
    env: dict[str, str]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Daemon:
    require_module("dagster_postgres")
    with running("postgres_server.sh") as pg:
        home = tmp_path_factory.mktemp("dagster_home")
        shutil.copy(INSTANCE_FILE, home / "dagster.yaml")
        state = tmp_path_factory.mktemp("daemon_state")
        settings = {**pg, "DAGSTER_HOME": str(home), "LCAFFECT_DAEMON_TEST_DIR": str(state)}
        env = {**os.environ, **settings, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        saved = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)  # for the instance and the in-process materialisations below
        log = home / "daemon.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", *CODE], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        instance = DagsterInstance.from_config(str(home))
        try:
            yield Daemon(instance, state, env, log)
        finally:
            proc.send_signal(signal.SIGTERM)  # the daemon stops its threads and code server
            try:
                proc.wait(timeout=15)  # some threads take 30 s to notice; the data is thrown away
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # run workers still alive after a failed test
            except ProcessLookupError:
                pass
            proc.wait()
            instance.dispose()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def wait_for(what: str, check: Callable[[], object], daemon: Daemon, timeout_s: float = 240) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}; daemon log:\n{daemon.tail()}")


def finished_runs(daemon: Daemon, n: int, **filters) -> Callable[[], list]:
    def check():
        runs = daemon.instance.get_runs(RunsFilter(**filters))
        return runs if len(runs) >= n and all(r.status in FINISHED for r in runs) else None
    return check


def events(daemon: Daemon, run_id: str, *types: DagsterEventType) -> list:
    return [e for e in daemon.instance.all_logs(run_id) if e.dagster_event and e.dagster_event.event_type in types]


def launch(daemon: Daemon, job: str) -> None:
    """Submit a run the way a user does (`dagster job launch`): it goes into the queue."""
    out = subprocess.run([str(BIN / "dagster"), "job", "launch", *CODE, "-j", job], cwd=ROOT, env=daemon.env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_queued_run_is_dequeued_by_the_daemon_and_succeeds(daemon: Daemon) -> None:
    launch(daemon, "queued_job")
    [run] = wait_for("queued_job to finish", finished_runs(daemon, 1, job_name="queued_job"), daemon)
    assert run.status == DagsterRunStatus.SUCCESS, daemon.tail()
    # Enqueued by `dagster job launch`, then launched (STARTING) by the daemon's dequeuer.
    lifecycle = (DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS)
    assert [e.dagster_event.event_type for e in events(daemon, run.run_id, *lifecycle)] == list(lifecycle)


def test_two_runs_needing_the_gpu_pool_never_overlap_their_gpu_steps(daemon: Daemon) -> None:
    (daemon.state / "gpu.request").write_text("pair-1")  # the sensor submits two runs in one tick
    runs = wait_for("two gpu_job runs", finished_runs(daemon, 2, tags={"test/gpu_pair": "pair-1"}), daemon)
    assert len(runs) == 2 and all(r.status == DagsterRunStatus.SUCCESS for r in runs), daemon.tail()
    spans = []
    for run in runs:
        [start] = [e.timestamp for e in events(daemon, run.run_id, DagsterEventType.STEP_START) if e.step_key == "gpu_step"]
        [end] = [e.timestamp for e in events(daemon, run.run_id, DagsterEventType.STEP_SUCCESS) if e.step_key == "gpu_step"]
        [enqueued] = [e.timestamp for e in events(daemon, run.run_id, DagsterEventType.RUN_ENQUEUED)]
        spans.append((start, end, enqueued))
    (first_start, first_end, _), (second_start, second_end, _) = sorted(spans)
    assert first_end <= second_start, f"GPU steps overlapped: {spans}"
    # Both runs were waiting in the queue before the first GPU step ended, so they competed for
    # the pool (the queue holds a run whose pool has no free slot; the step would wait too).
    assert max(s[2] for s in spans) < first_end, f"the runs did not compete for the pool: {spans}"


def test_a_run_killed_with_sigkill_is_marked_failed_and_retried(daemon: Daemon) -> None:
    launch(daemon, "crash_job")
    pid_file = daemon.state / "crash.pid"
    wait_for("the crash_step to start", pid_file.is_file, daemon)
    [original] = daemon.instance.get_runs(RunsFilter(job_name="crash_job"))
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    wait_for("the killed run to be marked failed", lambda: daemon.instance.get_run_by_id(original.run_id).status == DagsterRunStatus.FAILURE, daemon)
    [retry] = wait_for("the retry to finish", finished_runs(daemon, 1, tags={"dagster/parent_run_id": original.run_id}), daemon)
    assert retry.status == DagsterRunStatus.SUCCESS, daemon.tail()
    assert retry.tags["dagster/retry_number"] == "1"
    messages = " ".join(e.message or "" for e in daemon.instance.all_logs(original.run_id))
    assert "signal 9" in messages or "SIGKILL" in messages, messages[-2000:]


def automation_sensor_ticks_after(daemon: Daemon, t: float) -> int:
    from dagster._core.definitions.run_request import InstigatorType

    [state] = [s for s in daemon.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.instigator_name == "automation"]
    return sum(1 for tick in daemon.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100) if tick.timestamp > t)


def materialize_upstream(daemon: Daemon, version: str) -> float:
    import daemon_defs

    (daemon.state / "upstream.version").write_text(version)
    assert dg.materialize([daemon_defs.upstream_data], instance=daemon.instance).success
    return time.time()


def test_the_automation_sensor_runs_only_when_a_dependency_data_version_changes(daemon: Daemon) -> None:
    automation = {"test/trigger": "automation"}
    materialize_upstream(daemon, "v1")
    [first] = wait_for("the first automation run", finished_runs(daemon, 1, tags=automation), daemon)
    assert first.status == DagsterRunStatus.SUCCESS, daemon.tail()
    assert first.asset_selection == {dg.AssetKey("downstream_model")}

    same = materialize_upstream(daemon, "v1")  # new materialisation, same data version
    wait_for("two sensor ticks", lambda: automation_sensor_ticks_after(daemon, same) >= 2, daemon)
    assert len(daemon.instance.get_runs(RunsFilter(tags=automation))) == 1

    materialize_upstream(daemon, "v2")
    runs = wait_for("the second automation run", finished_runs(daemon, 2, tags=automation), daemon)
    assert len(runs) == 2 and runs[0].status == DagsterRunStatus.SUCCESS, daemon.tail()


def test_a_schedule_ticks_and_its_run_completes(daemon: Daemon) -> None:
    runs = wait_for("a scheduled run", finished_runs(daemon, 1, tags={"dagster/schedule_name": "every_minute"}), daemon, timeout_s=200)
    assert runs[-1].status == DagsterRunStatus.SUCCESS, daemon.tail()
    assert runs[-1].job_name == "tick_job"
