#!/usr/bin/env bash
# Install everything on a fresh Debian/Ubuntu machine: ffmpeg and PostgreSQL from Debian, a
# virtualenv in .venv, and the project with its test extras (which bring the `weed` S3
# server). Safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# PostgreSQL for the scale-out tests (scripts/postgres_server.sh starts a throw-away server).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch is pinned to 2.13.0 in pyproject: pip takes the CPU wheel on this machine.
  "$VENV/bin/python" -m pip install -q -e ".[test,realtext]"
  # The scale-out integrations, so their definitions are tested. dagster-k8s/-postgres
  # 0.29.27 (the newest on the index) pin dagster==1.13.27; resolving them normally would
  # downgrade dagster and protobuf, so they go in without their pins and their own needs
  # are installed explicitly. See docs/OPERATIONS.md.
  "$VENV/bin/python" -m pip install -q --no-deps "dagster-k8s==0.29.27" "dagster-postgres==0.29.27"
  "$VENV/bin/python" -m pip install -q "kubernetes>=30,<37" "psycopg2-binary>=2.9" "google-auth>=2"
  touch "$stamp"
fi
