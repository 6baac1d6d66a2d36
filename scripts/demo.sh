#!/usr/bin/env bash
# Install, then run the main job on the built-in offline demo world (no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/dagster_home}
export LCAFFECT_LAKE=${LCAFFECT_LAKE:-$PWD/lake}
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
.venv/bin/dagster job execute -m lcaffect_pipeline.definitions -j full_pipeline -c configs/demo.yaml
.venv/bin/python -m lcaffect_pipeline.report "$LCAFFECT_LAKE"
