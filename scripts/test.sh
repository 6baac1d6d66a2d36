#!/usr/bin/env bash
# Install, then run the whole test suite (real ffmpeg, DuckDB, Parquet, yt-dlp and Dagster).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
