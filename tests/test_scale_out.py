"""Scale-out configuration loads: the Postgres instance file, the k8s executor variant, s3:// lakes.

Nothing here talks to a database or a cluster (none is available to the tests): the instance
file is checked against Dagster's instance schema and its Postgres block resolved to a URL;
the k8s variant is loaded in a fresh process and its run config validated.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from conftest import ROOT

from lcaffect_pipeline import versions

POSTGRES_YAML = ROOT / "configs" / "instance" / "dagster.postgres.yaml"
PG_ENV = {"DAGSTER_PG_USERNAME": "lcaffect", "DAGSTER_PG_PASSWORD": "p@ss word", "DAGSTER_PG_HOST": "pg.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster"}
needs = {m: importlib.util.find_spec(m) is None for m in ("dagster_postgres", "dagster_k8s")}


def instance_config(tmp_path: Path, text: str) -> dict:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text(text)
    config, _ = dagster_instance_config(str(tmp_path))
    return dict(config)


def test_postgres_instance_file_matches_the_instance_schema(tmp_path: Path, monkeypatch) -> None:
    from dagster._core.instance.config import validate_concurrency_config

    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    config = instance_config(tmp_path, POSTGRES_YAML.read_text())
    validate_concurrency_config(config)
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1  # the same pools policy as ./dagster.yaml
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"] == local["concurrency"]["pools"]
    assert config["run_retries"] == local["run_retries"]
    gpu_limit = [t for t in config["concurrency"]["runs"]["tag_concurrency_limits"] if t["key"] == "lcaffect/gpu"]
    assert gpu_limit and gpu_limit[0]["limit"] >= 1


def test_the_run_coordinator_class_resolves() -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._serdes.config_class import ConfigurableClassData

    block = yaml.safe_load(POSTGRES_YAML.read_text())["run_coordinator"]
    coordinator = ConfigurableClassData(block["module"], block["class"], yaml.safe_dump(block.get("config") or {})).rehydrate(as_type=QueuedRunCoordinator)
    assert isinstance(coordinator, QueuedRunCoordinator)


def test_gpu_jobs_carry_the_tag_the_queue_limits() -> None:
    from lcaffect_pipeline.definitions import defs

    limit = yaml.safe_load(POSTGRES_YAML.read_text())["concurrency"]["runs"]["tag_concurrency_limits"][0]
    for job in ("pretrain_job", "downstream_job", "full_pipeline"):
        assert defs.resolve_job_def(job).tags.get(limit["key"]) == limit["value"]
    assert "lcaffect/gpu" not in defs.resolve_job_def("corpus_job").tags  # CPU work is not held back
    assert defs.resolve_sensor_def("retrain_on_new_data").run_tags.get(limit["key"]) == limit["value"]


def test_a_misspelt_storage_key_is_rejected(tmp_path: Path) -> None:
    """The schema check above can fail: an unknown key in the storage block is rejected."""
    bad = yaml.safe_load(POSTGRES_YAML.read_text())
    bad["storage"]["postgres"]["postgres_db"]["hostnme"] = "typo"
    with pytest.raises(dg.DagsterInvalidConfigError, match="hostnme"):
        instance_config(tmp_path, yaml.safe_dump(bad))


@pytest.mark.skipif(needs["dagster_postgres"], reason="dagster-postgres not installed (pip install .[scale])")
def test_postgres_block_resolves_from_the_environment(monkeypatch) -> None:
    from dagster._config import process_config
    from dagster_postgres import DagsterPostgresStorage
    from dagster_postgres.utils import pg_url_from_config

    block = yaml.safe_load(POSTGRES_YAML.read_text())["storage"]["postgres"]
    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    result = process_config(DagsterPostgresStorage.config_type(), block)
    assert result.success, result.errors
    url = pg_url_from_config(result.value)
    assert url == "postgresql+psycopg2://lcaffect:p%40ss%20word@pg.internal:5432/dagster"  # secrets come from the env, escaped
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    assert not process_config(DagsterPostgresStorage.config_type(), block).success  # a missing secret is an error


K8S_PROBE = """
import json, yaml, dagster as dg
from lcaffect_pipeline.definitions import defs
job = defs.resolve_job_def("full_pipeline")
merged = {**yaml.safe_load(open("configs/demo.yaml")), "execution": yaml.safe_load(open("configs/k8s.example.yaml"))["execution"]}
dg.validate_run_config(job, merged)
k8s_resources = yaml.safe_load(open("configs/k8s.example.yaml"))["resources"]
dg.validate_run_config(job, {"resources": k8s_resources})
print(json.dumps({j: defs.resolve_job_def(j).executor_def.name for j in ("full_pipeline", "corpus_job", "pretrain_job")}))
"""


def load_with_executor(kind: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LCAFFECT_EXECUTOR": kind, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", K8S_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(needs["dagster_k8s"], reason="dagster-k8s not installed (pip install .[scale])")
def test_k8s_executor_variant_loads_and_its_run_config_validates() -> None:
    proc = load_with_executor("k8s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(json.loads(proc.stdout.strip().splitlines()[-1]).values()) == {"k8s"}


def test_unknown_executor_is_a_clear_error() -> None:
    from lcaffect_pipeline.defs.definitions import build_executor

    with pytest.raises(ValueError, match="LCAFFECT_EXECUTOR='kubernetes'"):
        build_executor("kubernetes")
    assert build_executor("") is build_executor("multiprocess") is not None
    assert build_executor("in_process") is dg.in_process_executor


def test_lake_root_accepts_an_fsspec_url() -> None:
    """A URL root goes through universal-pathlib; memory:// stands in for a bucket, written atomically."""
    from lcaffect_pipeline import lake
    from lcaffect_pipeline.defs.resources import LakeResource

    path = LakeResource(root="memory://lcaffect-test/prod").path(versions.MANIFESTS, "x.json")
    lake.atomic_write_bytes(path, b"{}")
    assert path.read_bytes() == b"{}" and str(path) == f"memory://lcaffect-test/prod/{versions.MANIFESTS}/x.json"


def test_lake_root_accepts_an_s3_url() -> None:
    """s3:// resolves to an S3 path (no bucket is contacted)."""
    pytest.importorskip("s3fs", reason="s3fs not installed (pip install .[scale])")
    from lcaffect_pipeline.defs.resources import LakeResource

    path = LakeResource(root="s3://lcaffect-lake/prod").path("clean_comments", "v1.parquet")
    assert str(path) == "s3://lcaffect-lake/prod/clean_comments/v1.parquet"


@pytest.mark.skipif(needs["dagster_k8s"], reason="dagster-k8s not installed (pip install .[scale])")
def test_the_training_pod_spec_matches_the_kubernetes_schema() -> None:
    """No cluster here: the pod PipesK8sClient would create for the training program is built by
    dagster-k8s from our spec and checked against the Kubernetes client's models (a misspelt key fails)."""
    from dagster_k8s.pipes import build_pod_body

    from lcaffect_pipeline.v2lc_runs import k8s_pod_spec

    pod = build_pod_body("lcaffect-train", "lcaffect:latest", ["python", "-m", "lcaffect_ml.train_v2lc"], {}, None, k8s_pod_spec(2))
    assert pod.spec.containers[0].resources.limits == {"nvidia.com/gpu": "2"}
    assert pod.spec.volumes[0].empty_dir.medium == "Memory" and pod.spec.restart_policy == "Never"
    assert pod.spec.containers[0].env_from is None  # no secret configured: none named
    with_secret = build_pod_body("lcaffect-train", "lcaffect:latest", ["python"], {}, None, k8s_pod_spec(1, "lake-creds"))
    assert with_secret.spec.containers[0].env_from[0].secret_ref.name == "lake-creds"
    bad = k8s_pod_spec(2)
    bad["containers"][0]["resorces"] = bad["containers"][0].pop("resources")
    with pytest.raises(Exception, match="resorces"):
        build_pod_body("lcaffect-train", "lcaffect:latest", ["python"], {}, None, bad)


def test_a_lake_root_set_in_run_config_holds_the_manifests_too(tmp_path, monkeypatch) -> None:
    """resources.lake.config.root in a run config (as a bucket URL would be given) is where every
    file goes, the IO manager's manifests included: none land in ./lake."""
    from lcaffect_pipeline.definitions import defs

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "configured"
    config = {"resources": {"lake": {"config": {"root": str(root), "author_salt": "s"}},
                            "catalogue": {"config": {"demo": True, "demo_videos": 2, "demo_segments": 2}},
                            "crawler": {"config": {"min_interval_s": 0.0}}}}
    job = defs.resolve_job_def("corpus_job")
    result = job.execute_in_process(run_config=config, instance=dg.DagsterInstance.ephemeral(),
                                    asset_selection=[dg.AssetKey("video_catalogue")])
    assert result.success
    assert versions.latest(root, "video_catalogue")["videos"] == 2
    assert not (tmp_path / "lake").exists()
