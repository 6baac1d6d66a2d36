#!/usr/bin/env bash
# The scale-out path for real, on one machine: PostgreSQL and an S3 object store on 127.0.0.1
# (scripts/postgres_server.sh, scripts/s3_server.sh), a Dagster instance with Postgres storage and
# the run queue (configs/instance/dagster.postgres.yaml), `dagster-daemon run`, and `full_pipeline`
# on the demo world submitted as a queued run with the lake at s3://$LCAFFECT_S3_BUCKET/lake.
#   scripts/scaleout_demo.sh [RUN_CONFIG]        (default configs/scaleout_small.yaml)
# Waits for the run, prints its status and where the results are (the report), and stops
# everything it started (servers, daemon, their data) on exit, Ctrl-C or failure. Exit status 0
# when the run succeeded. Optional environment:
#   SCALEOUT_TIMEOUT_S   how long to wait for the run (default 1800)
#   SCALEOUT_RESULTS     a folder that receives ablation.json, the encoder's metrics.json and the
#                        lake's object listing (lake_objects.txt) before the store is stopped
#   LCAFFECT_SCRATCH     the local scratch folder of the run (default: inside this script's folder)
set -euo pipefail
umask 077  # the servers' logs, the Dagster home and the scratch are this user's alone
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=$(realpath "${1:-$ROOT/configs/scaleout_small.yaml}")
PY=${PYTHON:-$ROOT/.venv/bin/python}
BIN=$(dirname "$PY")
TIMEOUT=${SCALEOUT_TIMEOUT_S:-1800}
WORK=$(mktemp -d -t lcaffect-scaleout.XXXXXX)
chmod 711 "$WORK"  # PostgreSQL runs as its own user (when this runs as root) and must reach its folder
PIDS=()
declare -A PID_OF

say() { echo "scaleout_demo: $*" >&2; }

# Stop what was started, newest first: each runs in its own process group (setsid), so its
# children (the daemon's code server and run workers, the servers) go with it.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM -- "-${PIDS[i]}" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "${PIDS[i]}" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {  # start NAME COMMAND...: in its own session, output to $WORK/NAME.log
  local name=$1
  shift
  setsid "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  PID_OF[$name]=$!
}

wait_for_file() {  # wait_for_file FILE NAME: the service writes FILE when ready
  for _ in $(seq 1 600); do
    [ -f "$1" ] && return 0
    kill -0 "${PID_OF[$2]}" 2>/dev/null || { say "$2 failed to start:"; tail -n 30 "$WORK/$2.log" >&2; exit 1; }
    sleep 0.2
  done
  say "$2 not ready after 120 s"; tail -n 30 "$WORK/$2.log" >&2; exit 1
}

start postgres bash "$ROOT/scripts/postgres_server.sh" "$WORK/pg"
start s3 bash "$ROOT/scripts/s3_server.sh" "$WORK/s3"
wait_for_file "$WORK/pg/env.sh" postgres
wait_for_file "$WORK/s3/env.sh" s3
set -a
. "$WORK/pg/env.sh"
. "$WORK/s3/env.sh"
set +a
export DAGSTER_HOME=$WORK/dagster_home
export LCAFFECT_LAKE=s3://$LCAFFECT_S3_BUCKET/lake
export LCAFFECT_SCRATCH=${LCAFFECT_SCRATCH:-$WORK/scratch}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$DAGSTER_HOME"
cp "$ROOT/configs/instance/dagster.postgres.yaml" "$DAGSTER_HOME/dagster.yaml"
say "PostgreSQL on $DAGSTER_PG_HOST:$DAGSTER_PG_PORT, object store on $LCAFFECT_S3_ENDPOINT, lake $LCAFFECT_LAKE"

cd "$ROOT"
"$BIN/dagster" instance migrate >"$WORK/migrate.log" 2>&1 || { tail -n 30 "$WORK/migrate.log" >&2; exit 1; }
start daemon "$BIN/dagster-daemon" run -m lcaffect_pipeline.definitions

RUN_ID=$("$PY" -c 'import uuid; print(uuid.uuid4())')
"$BIN/dagster" job launch -m lcaffect_pipeline.definitions -j full_pipeline -c "$CONFIG" --run-id "$RUN_ID" \
  >"$WORK/launch.log" 2>&1 || { tail -n 30 "$WORK/launch.log" >&2; exit 1; }
say "run $RUN_ID of full_pipeline queued; waiting (at most $TIMEOUT s)"

STATUS=$("$PY" - "$RUN_ID" "$TIMEOUT" <<'PYEOF'
import sys, time
from dagster import DagsterInstance, DagsterRunStatus

run_id, timeout = sys.argv[1], float(sys.argv[2])
done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
seen = set()
with DagsterInstance.get() as instance:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = instance.get_run_by_id(run_id).status
        if status not in seen:
            seen.add(status)
            print(f"scaleout_demo: run status {status.value}", file=sys.stderr)
        if status in done:
            break
        time.sleep(2)
    if status != DagsterRunStatus.SUCCESS:  # say why: each failed step and its error
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event is not None and event.is_step_failure:
                error = event.step_failure_data.error
                print(f"scaleout_demo: step {event.step_key} failed: {error.to_string()[-1500:] if error else '?'}", file=sys.stderr)
    print(status.value)
PYEOF
)
echo "Run $RUN_ID of full_pipeline: $STATUS (Dagster instance on PostgreSQL, queued run, dagster-daemon)"
"$PY" -m lcaffect_pipeline.report "$LCAFFECT_LAKE" || true
echo "Lineage of the ablation (python -m lcaffect_pipeline.versions_cli lineage ablation_report):"
"$PY" -m lcaffect_pipeline.versions_cli --lake "$LCAFFECT_LAKE" lineage ablation_report | tail -n 1 || true
if [ -n "${SCALEOUT_RESULTS:-}" ]; then
  mkdir -p "$SCALEOUT_RESULTS"
  "$PY" - "$SCALEOUT_RESULTS" <<'PYEOF' || say "could not copy the results"
import json, os, sys
from upath import UPath

out, lake = sys.argv[1], UPath(os.environ["LCAFFECT_LAKE"])
keys = sorted(p.path[len(lake.path.rstrip("/")) + 1:] for p in lake.rglob("*") if p.is_file())
open(os.path.join(out, "lake_objects.txt"), "w").write("\n".join(keys) + "\n")
(lake / "ablation.json").fs.get_file((lake / "ablation.json").path, os.path.join(out, "ablation.json"))
from lcaffect_pipeline import versions

encoder = versions.latest(os.environ["LCAFFECT_LAKE"], "v2lc_encoder")  # its lake paths resolved in the lake
metrics = UPath(encoder["output_dir"]) / "metrics.json"
metrics.fs.get_file(metrics.path, os.path.join(out, "v2lc_metrics.json"))
PYEOF
fi
echo "The lake was $LCAFFECT_LAKE (endpoint $LCAFFECT_S3_ENDPOINT); the servers and their data are removed now."
[ "$STATUS" = SUCCESS ]
