"""bench/gpu_check.py: its CPU mode runs every path of the GPU check (loader at 224 px, FLOP count,
the training program with and without checkpointing, alone and under torchrun with DDP) and reports
them as JSON; an out-of-memory run is a result; the card's peak is looked up by name."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from lcaffect_ml.train_v2lc_config import TrainConfig

from conftest import ROOT


def _module():
    """The script as a module; it sets HF_HUB_OFFLINE for its own run, which must not leak into
    the tests that run after these."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    before = os.environ.get("HF_HUB_OFFLINE")
    try:
        spec.loader.exec_module(module)
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
    return module


def test_peak_is_looked_up_by_the_most_specific_card_name():
    gpu_check = _module()
    peak, lookup = gpu_check.PEAK_BF16_TFLOPS, gpu_check.peak_for_name
    assert lookup("NVIDIA H100 80GB HBM3") == peak["H100"] == 989.0
    assert lookup("NVIDIA H100 PCIe") == peak["H100 PCIe"] < peak["H100"]
    assert lookup("NVIDIA H200") == 989.0
    assert lookup("NVIDIA L40S") == peak["L40S"] and lookup("NVIDIA L4") == peak["L4"]
    assert lookup("Some Future GPU") is None


def test_paper_options_come_from_the_example_config():
    options = _module().paper_options()
    assert options["batch_size"] == 64 and options["gradient_checkpointing"] is True  # the latter from extra_json
    assert options["video_encoder"] == "facebook/timesformer-base-finetuned-k400"
    assert set(options) <= {f.name for f in dataclasses.fields(TrainConfig)}  # no launch fields (gpus, launcher)


def test_running_out_of_memory_is_a_result(monkeypatch, tmp_path):
    gpu_check = _module()

    def out_of_memory(cfg, dist=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(gpu_check, "train", out_of_memory)
    result = gpu_check.measure_training({"shards": str(tmp_path), "output_dir": str(tmp_path / "out"),
                                         "device": "cpu", "gradient_checkpointing": False})
    assert result["oom"] is True and result["error"] == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert result["gradient_checkpointing"] is False and result["ddp"] is False


def test_a_failed_measurement_is_recorded_and_the_others_go_on(capsys):
    gpu_check = _module()
    report = {"measurements": []}

    def broken():
        raise RuntimeError("NCCL error: unhandled system error")

    label = {"measurement": "train", "ddp": True, "gradient_checkpointing": True}
    record = gpu_check._attempt(report, label, broken)
    assert record == {**label, "error": "RuntimeError: NCCL error: unhandled system error"}
    ok = {"measurement": "loader", "clips_per_s": 10.0}
    assert gpu_check._attempt(report, {"measurement": "loader"}, lambda: ok) == ok
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == report["measurements"]


@pytest.mark.slow
def test_cpu_mode_runs_every_measurement(tmp_path):
    out = tmp_path / "check.json"
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(out), "--device", "cpu", "--tiny",
           "--workers", "1", "--steps", "3", "--loader-batches", "4", "--skip-resume"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines == report["measurements"]  # one JSON line per measurement
    assert "| torchrun DDP x1 | True |" in proc.stdout  # the summary table
    assert report["device"] == "cpu" and report["peak_bf16_tflops"] is None
    assert {e["used"] for e in report["encoders"].values()} == {"tiny"}
    kinds = lambda kind: [m for m in lines if m["measurement"] == kind]  # noqa: E731

    loaders = kinds("loader")
    assert sorted(m["num_workers"] for m in loaders) == sorted({1, _default_workers()})
    assert all(m["size"] == 224 and m["frames"] == 8 and m["clips_per_s"] > 0 for m in loaders)

    (flops,) = kinds("flops")
    assert flops["hardware_flops_per_step"] > flops["model_flops_per_step"] > 0  # the recompute is counted

    runs = kinds("train")
    assert {(r["ddp"], r["gradient_checkpointing"]) for r in runs} == {(True, True), (True, False),
                                                                        (False, True), (False, False)}
    for r in runs:
        assert r["oom"] is False and r["world_size"] == 1 and r["batch_size"] == 8, r
        assert r["clips_per_s"] > 0 and r["achieved_tflops"] > 0 and r["mfu"] is None, r
        assert r["loader_over_train"] > 0, r
        factor = flops["hardware_flops_per_step"] / flops["model_flops_per_step"] if r["gradient_checkpointing"] else 1
        assert r["hardware_tflops"] == pytest.approx(r["achieved_tflops"] * factor)
    # same seed and data: neither checkpointing nor the DDP wrapper changes what is learnt
    losses = [r["final_loss"] for r in runs]
    assert max(losses) - min(losses) < 1e-4, losses


def _default_workers() -> int:
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}["num_workers"]
