"""Models present before the first long step, and the device that was asked for.

The Hugging Face cache is built in each test (the hub layout models--org--name/snapshots/<rev>/
+ refs/main in a tmp HF_HOME); nothing is downloaded: the fetch test replaces snapshot_download,
the network boundary, with a writer of that layout.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT

from lcaffect_ml import devices, hub, trainutil
from lcaffect_ml.hub import ModelRef
from lcaffect_pipeline import preflight
from lcaffect_pipeline.defs import fetch_models

REV = "0123456789abcdef0123456789abcdef01234567"


def cache_model(home: Path, name: str, files: dict[str, str]) -> Path:
    """A model in the hub cache layout under ``home`` (HF_HOME), as snapshot_download leaves it."""
    repo = home / "hub" / f"models--{name.replace('/', '--')}"
    snapshot = repo / "snapshots" / REV
    for rel, text in files.items():
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).write_text(text)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    return snapshot


FULL = {"config.json": "{}", "model.safetensors": "w", "tokenizer_config.json": "{}"}


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "hf"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv(hub.ALLOW_DOWNLOAD_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # set by whatever ran before (bench/gpu_check.py does)
    return home


def test_a_cached_model_resolves_and_an_absent_or_incomplete_one_does_not(hf_home: Path, tmp_path: Path) -> None:
    snapshot = cache_model(hf_home, "acme/present", FULL)
    cache_model(hf_home, "acme/no-weights", {"config.json": "{}"})
    cache_model(hf_home, "acme/tokenizer-only", {"tokenizer_config.json": "{}"})
    local = tmp_path / "mine"
    local.mkdir()
    (local / "config.json").write_text("{}")
    (local / "pytorch_model.bin").write_text("w")
    assert hub.locate(ModelRef("acme/present", "x")) == (snapshot, "")
    assert hub.locate(ModelRef(str(local), "x")) == (local, "")
    assert hub.locate(ModelRef("acme/tokenizer-only", "x", weights=False))[0] is not None
    absent = hub.missing([ModelRef("acme/present", "a"), ModelRef("acme/absent", "b"), ModelRef("acme/absent", "c"),
                          ModelRef("acme/no-weights", "d"), ModelRef("acme/tokenizer-only", "e"),
                          ModelRef(str(tmp_path / "nowhere"), "f")])
    assert set(absent) == {"acme/absent", "acme/no-weights", "acme/tokenizer-only", str(tmp_path / "nowhere")}
    assert absent["acme/absent"][0] == ["b", "c"] and "not in the Hugging Face cache" in absent["acme/absent"][1]
    assert "no weights file" in absent["acme/no-weights"][1]
    assert "no such folder" in absent[str(tmp_path / "nowhere")][1]


def test_require_names_every_missing_model_the_cache_and_the_fetch_command(hf_home: Path, monkeypatch) -> None:
    cache_model(hf_home, "acme/present", FULL)
    refs = [ModelRef("acme/present", "v2lc_training[default].video_encoder"),
            ModelRef("acme/absent-one", "meld features.text_model"), ModelRef("acme/absent-two", "meld features.audio_model")]
    with pytest.raises(hub.ModelsMissingError) as err:
        hub.require(refs)
    message = str(err.value)
    assert "2 model(s)" in message and "acme/absent-one" in message and "acme/absent-two" in message
    assert "acme/present" not in message and str(hf_home) in message
    assert "python -m lcaffect_pipeline.defs.fetch_models" in message and hub.ALLOW_DOWNLOAD_ENV in message
    monkeypatch.setenv(hub.ALLOW_DOWNLOAD_ENV, "1")
    hub.require(refs)  # downloads allowed: logged, not raised
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.ModelsMissingError):
        hub.require(refs)  # ... unless the hub is offline


def test_fetch_downloads_what_a_config_names_into_hf_home_then_check_finds_it(hf_home: Path, tmp_path: Path,
                                                                              monkeypatch, capsys) -> None:
    """The command's whole path with only the download replaced: the fake writes what the real one
    would (the patterns asked for) into the cache; a repository without safetensors gets its .bin."""
    import fnmatch

    import huggingface_hub

    repos = {"acme/video": {"config.json": "{}", "model.safetensors": "w", "pytorch_model.bin": "w", "tf_model.h5": "w"},
             "acme/text": {"config.json": "{}", "pytorch_model.bin": "w", "vocab.txt": "a"}}
    calls = []

    def fake_snapshot_download(repo_id, *, cache_dir, allow_patterns, **_):
        calls.append((repo_id, tuple(allow_patterns)))
        assert Path(cache_dir) == hf_home / "hub"
        wanted = {f: t for f, t in repos[repo_id].items() if any(fnmatch.fnmatch(f, p) for p in allow_patterns)}
        return str(cache_model(hf_home, repo_id, wanted))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"resources": {"v2lc_training": {"config": {"video_encoder": "acme/video",
                                                                              "text_encoder": "acme/text"}}}}))
    args = ["-j", "pretrain_job", "-c", str(cfg)]
    assert fetch_models.main([*args, "--check"]) == 1
    assert "MISSING  acme/video" in capsys.readouterr().out and not calls
    assert fetch_models.main(args) == 0
    assert [c[0] for c in calls] == ["acme/video", "acme/text", "acme/text"]  # .bin only where no safetensors
    video = hf_home / "hub" / "models--acme--video" / "snapshots" / REV
    assert (video / "model.safetensors").exists() and not (video / "pytorch_model.bin").exists()
    assert not (video / "tf_model.h5").exists()
    capsys.readouterr()
    assert fetch_models.main([*args, "--check"]) == 0
    assert "present  acme/text" in capsys.readouterr().out


def test_a_config_the_job_refuses_is_a_clear_error(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"resources": {"v2lc_training": {"config": {"video_encodr": "x"}}}}))
    assert fetch_models.main(["-j", "pretrain_job", "-c", str(cfg)]) == 2
    assert "video_encodr" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- devices


def test_cuda_asked_for_without_cuda_fails_naming_the_build(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(devices.CudaUnavailableError) as err:
        devices.resolve_device("cuda")
    message = str(err.value)
    assert "CUDA is not available" in message and f"torch {torch.__version__}" in message
    assert f"torch.version.cuda={torch.version.cuda}" in message and "device(s) found" in message
    assert "gpus: 0 / device: cpu" in message


def test_auto_says_which_device_and_precision_it_chose(monkeypatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="lcaffect_ml"):
        device = devices.resolve_device("auto")
        precision = trainutil.resolve_precision("auto", device)
    assert (device.type, precision) == ("cpu", "fp32")
    assert "device auto -> cpu: CUDA not available (torch" in caplog.text
    assert "precision auto -> fp32 on cpu" in caplog.text
    info = devices.runtime_info(device, precision)
    assert set(info) <= set(devices.RUNTIME_KEYS)
    assert info == {"device": "cpu", "precision": "fp32", "dtype": "float32", "torch_version": torch.__version__,
                    "cuda_version": torch.version.cuda or "none"}


def test_gpu_requests_of_a_run() -> None:
    local = {"gpus": 2, "launcher": "subprocess", "command": [], "extra_json": "{}", "variants_json": "{}"}
    tasks = {"meld": {"device": "cuda"}, "mustard": {"device": "auto"}}
    assert preflight.gpu_requests(local, tasks, {"device": "cuda:0"}) == [
        "v2lc_training.gpus=2", "meld features device=cuda", "fusion_extra_json device=cuda:0"]
    on_cpu = {**local, "gpus": 0, "extra_json": '{"device": "cuda"}'}
    assert preflight.gpu_requests(on_cpu, {}, None) == ["v2lc_training[default] device=cuda"]
    # a pod or an srun of its own checks its device there, not on this machine
    assert preflight.gpu_requests({**local, "launcher": "k8s"}, {}, None) == []
    assert preflight.gpu_requests({**local, "command": ["srun", "python"]}, {}, None) == []


def test_the_extraction_program_checks_its_models_and_device_first(hf_home: Path, tmp_path: Path, capsys,
                                                                    monkeypatch) -> None:
    from lcaffect_ml import extract_features

    cfg = tmp_path / "features.yaml"
    cfg.write_text(yaml.safe_dump({"utterances": str(tmp_path / "none.parquet"), "output_dir": str(tmp_path / "out"),
                                   "v2lc_checkpoint": str(tmp_path / "none"), "text_model": "acme/absent",
                                   "released_features": {"audio": str(tmp_path / "a.p")},
                                   "audio_model": "acme/replaced-by-released"}))
    assert extract_features.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "acme/absent" in err and "acme/replaced-by-released" not in err and not (tmp_path / "out").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert extract_features.main(["--config", str(cfg), "--set", "device=cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_the_training_program_refuses_cuda_it_cannot_use(tmp_path: Path, capsys, monkeypatch) -> None:
    from lcaffect_ml import train_v2lc

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"shards": str(tmp_path / "none"), "output_dir": str(tmp_path / "out")}))
    assert train_v2lc.main(["--config", str(cfg), "--set", "device=cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_programs_list_the_models_their_options_load() -> None:
    from lcaffect_ml.extract_features import hub_models as features_models
    from lcaffect_ml.train_v2lc_config import hub_models as v2lc_models

    assert v2lc_models({"video_encoder": "tiny", "text_encoder": "base"}) == []  # presets built in code
    assert [r.name for r in v2lc_models({"video_encoder": "base", "text_encoder": "xlm-roberta-base",
                                         "tokenizer": "acme/tok"})] == ["xlm-roberta-base", "acme/tok"]
    assert [r.name for r in features_models({"text_model": "roberta-base", "audio_model": "tiny",
                                             "vision_model": "openai/clip-vit-base-patch32",
                                             "released_features": {"visual": "/x.p"}})] == ["roberta-base"]


# ------------------------------------------------------------------------- whole runs (done-when)


def _dagster(tmp_path: Path, job: str, config: dict, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    cfg = tmp_path / f"{job}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "LCAFFECT_LAKE": str(tmp_path / "lake"), **(env or {})}
    env.pop(hub.ALLOW_DOWNLOAD_ENV, None)
    dagster = Path(sys.executable).with_name("dagster")
    start = time.monotonic()
    proc = subprocess.run([str(dagster), "job", "execute", "-m", "lcaffect_pipeline.definitions", "-j", job, "-c", str(cfg)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc, time.monotonic() - start


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the point is a machine without CUDA")
def test_a_run_asking_for_a_gpu_on_a_cpu_only_machine_fails_within_a_minute(tmp_path: Path) -> None:
    from lcaffect_pipeline import versions

    lake = tmp_path / "lake"
    # the step's input exists (a shards manifest), so what stops the run is the GPU alone
    versions.write_manifest(lake, "training_shards", {"samples": 8, "index": str(lake / "shards" / "index.json"),
                                                      "data_version": "0" * 32})
    proc, took = _dagster(tmp_path, "pretrain_job", {"resources": {"v2lc_training": {"config": {"gpus": 1}}}})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and took < 60, out[-3000:]
    assert "CUDA is not available" in out and "v2lc_training.gpus=1" in out
    assert not (lake / "models").exists()  # nothing was trained


@pytest.mark.slow
def test_a_model_missing_from_the_cache_fails_before_the_first_heavy_step(tmp_path: Path) -> None:
    home = tmp_path / "hf"
    cache_model(home, "acme/cached-video", FULL)
    config = {"resources": {"catalogue": {"config": {"demo": True, "demo_videos": 2}},
                            "lake": {"config": {"author_salt": "test"}},
                            "v2lc_training": {"config": {"video_encoder": "acme/cached-video",
                                                         "text_encoder": "acme/not-fetched"}}}}
    proc, took = _dagster(tmp_path, "full_pipeline", config, {"HF_HOME": str(home)})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "acme/not-fetched" in out and "lcaffect_pipeline.defs.fetch_models" in out and str(home) in out
    assert "acme/cached-video (" not in out  # the one in the cache is not reported
    lake = tmp_path / "lake"
    assert not (lake / "demo_world").exists() and not (lake / "models").exists()  # failed before the crawl


def test_a_downstream_run_fails_at_its_first_step_naming_a_model_its_features_need(hf_home: Path, tmp_path: Path) -> None:
    """In process: ``meld_utterances`` (the first step) checks the run's ``meld_features`` too, so
    the run stops before the demo datasets are even generated."""
    import dagster as dg

    from conftest import demo_resources
    from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS
    from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS
    from lcaffect_pipeline.defs.downstream_assets import ASSETS as DOWNSTREAM
    from lcaffect_pipeline.defs.model_assets import ASSETS as MODEL
    from lcaffect_pipeline.defs.resources import DownstreamResource

    root = tmp_path / "lake"
    res = demo_resources(root, downstream=DownstreamResource(demo=True, frames=2, size=16, text_model="acme/absent-text"))
    assets = [*CORPUS, *CLIPS, *MODEL, *DOWNSTREAM]
    failed = dg.materialize(assets, resources=res, selection=["meld_utterances", "meld_features"], raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    assert failure.step_key == "meld_utterances"
    message = failure.step_failure_data.error.message
    assert "acme/absent-text (used by meld features.text_model)" in message and "fetch_models" in message
    assert not (root / "demo_downstream").exists()
