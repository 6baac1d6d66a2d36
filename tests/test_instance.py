"""dagster.yaml, workspace.yaml and pyproject agree, and the instance is what the README says."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from conftest import ROOT


def test_workspace_and_pyproject_name_the_same_module() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["dagster"]["module_name"] == module == "lcaffect_pipeline.definitions"


def test_instance_from_dagster_yaml(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    code = (
        "from dagster import DagsterInstance\n"
        "i = DagsterInstance.get()\n"
        "print(i._run_storage._conn_string)\n"
        "print(i.run_retries_enabled, i.run_retries_max_retries)\n"
        "print(i.get_settings('concurrency')['pools']['default_limit'])\n"
        "print(i.get_settings('telemetry'))\n"
        "print(i.run_monitoring_enabled, i.run_monitoring_max_runtime_seconds > 0, i.run_monitoring_start_timeout_seconds)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith(f"sqlite:///{tmp_path}")  # SQLite under DAGSTER_HOME
    assert out[1] == "True 2"
    assert out[2] == "1"  # the gpu pool (and any other) runs one step at a time by default
    assert "False" in out[3]
    # a killed run does not stay STARTED for ever: the daemon's run monitoring ends it
    assert out[4] == "True True 180"


def test_definitions_validate_without_dagster_home() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "definitions", "validate", "-m", "lcaffect_pipeline.definitions"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
