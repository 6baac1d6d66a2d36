#!/usr/bin/env bash
# Install, then run the whole test suite (real ffmpeg, DuckDB, Parquet, yt-dlp and Dagster).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
# The UI tests drive Debian's chromium (with Playwright, no browser download).
if ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
