"""The V2LC training program end to end on tiny generated shards: outputs, Pipes reporting, exact
resume after a kill, the NaN stop; slow: learnability, DDP under torchrun, Dagster's Pipes client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lcaffect_ml.synthetic import write_synthetic_shards
from lcaffect_ml.trainutil import EXIT_NON_FINITE
from lcaffect_ml.v2lc import V2LCModel
from faults import command as faults_command
from faults import inject

from conftest import ROOT, pipes_env, spawn_gloo_ranks


pytestmark = pytest.mark.usefixtures("one_torch_thread")


RETRIEVAL_KEYS = ("v2c_r1", "v2c_r5", "v2c_r10", "v2c_medr", "c2v_r1", "c2v_r5", "c2v_r10", "c2v_medr", "chance_r1")
# grad_accum 3 x checkpoint_every 3 = 9 micro-batches at the resumed checkpoint: with 2 loader workers the
# resumed loader must start from worker 1's stream (the data-position rotation is exercised)
BASE = dict(batch_size=8, grad_accum=3, max_steps=10, checkpoint_every=3, eval_every=5, warmup_steps=2, lr=2e-3,
            num_workers=2, embed_dim=32, eval_fraction=0.25, log_every=5, progress=False, eval_batch_size=16)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("lake"), n_videos=12, segments_per_video=8, seed=0)


def _config(path: Path, **options) -> Path:
    text = json.dumps(options) if path.suffix == ".json" else yaml.safe_dump(options)
    path.write_text(text, encoding="utf-8")
    return path


def _train(config: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 300, **faults):
    # one intra-op thread: tiny models, and a 2-core machine shared with other test runs (OpenMP
    # threads spinning at barriers against other processes make steps 30x slower)
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    program = faults_command("lcaffect_ml.train_v2lc", **faults) if faults else [sys.executable, "-m", "lcaffect_ml.train_v2lc"]
    return subprocess.run([*program, "--config", str(config), *args],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def _run_group(cmd: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run in a new session; on timeout kill the whole group (torchrun's workers too)."""
    import signal

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} timed out after {timeout}s: {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _messages(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def reference(index, tmp_path_factory):
    """One uninterrupted run, launched the way Dagster Pipes launches it."""
    folder = tmp_path_factory.mktemp("reference")
    cfg = _config(folder / "v2lc.yaml", shards=str(index), output_dir=str(folder / "out"), **BASE)
    env, messages = pipes_env(folder, "v2lc_encoder", job_name="pretrain", retry=0)
    proc = _train(cfg, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "out", messages, proc


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def test_training_writes_every_output(reference):
    out, _, proc = reference
    metrics = json.loads((out / "metrics.json").read_text())
    for key in RETRIEVAL_KEYS + ("steps", "clips_per_s", "peak_memory_mb", "final_loss", "train_videos", "test_videos"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["steps"] == 10 and metrics["train_videos"] == 9 and metrics["test_videos"] == 3
    assert metrics["chance_r1"] == pytest.approx(1 / metrics["eval_segments"])
    assert metrics["clips_per_s"] > 0 and metrics["peak_memory_mb"] > 0
    assert json.loads(proc.stdout.strip().splitlines()[-1])["steps"] == 10
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-10", "step-9"]  # newest two kept
    state = json.loads((out / "checkpoints" / "step-10" / "trainer_state.json").read_text())
    assert state["step"] == 10 and state["micro_batches"] == 30 and len(state["loss_history"]) == 10
    assert [e["step"] for e in state["eval_history"]] == [5]
    final, ckpt = _weights(out), _weights(out / "checkpoints" / "step-10")
    assert final.keys() == ckpt.keys() and all(torch.equal(final[k], ckpt[k]) for k in final)
    model = V2LCModel.from_pretrained(out)
    assert model.config.embed_dim == 32 and model.tokenizer is not None
    # the training clips' timing, which extract_features samples utterances at (synthetic: 8 s)
    assert model.config.train_segment_s == 8.0 and model.config.train_frames == model.num_frames
    assert not [p for p in out.rglob(".*")]  # no temporary files or folders left


def test_pipes_reports_materialization_check_and_logs(reference):
    out, messages, _ = reference
    msgs = _messages(messages)
    methods = [m["method"] for m in msgs]
    assert methods[0] == "opened" and methods[-1] == "closed" and "exception" not in msgs[-1]["params"]
    (mat,) = [m["params"] for m in msgs if m["method"] == "report_asset_materialization"]
    import hashlib

    assert mat["data_version"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    metrics = json.loads((out / "metrics.json").read_text())
    assert mat["metadata"]["v2c_r1"] == {"raw_value": metrics["v2c_r1"], "type": "float"}
    assert mat["metadata"]["steps"] == {"raw_value": 10, "type": "int"}
    assert mat["metadata"]["checkpoint"]["raw_value"].endswith("checkpoints/step-10")
    (check,) = [m["params"] for m in msgs if m["method"] == "report_asset_check"]
    assert check["check_name"] == "retrieval_above_chance" and check["asset_key"] == "v2lc_encoder"
    assert check["passed"] is (metrics["v2c_r1"] > metrics["chance_r1"])
    logs = [m["params"]["message"] for m in msgs if m["method"] == "log"]
    assert any("checkpoint" in line and "step-3" in line for line in logs)
    assert any("held-out" in line for line in logs)


def test_killed_run_resumes_to_identical_weights(index, reference, tmp_path):
    ref_out = reference[0]
    out = tmp_path / "out"
    cfg = _config(tmp_path / "v2lc.yaml", shards=str(index), output_dir=str(out), **BASE)
    killed = _train(cfg, kill_after_step=5)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: no clean-up ran
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3"]
    assert not (out / "metrics.json").exists()
    (out / "checkpoints" / ".tmp-step-6-deadbeef").mkdir()  # as if killed while writing a checkpoint
    env, messages = pipes_env(tmp_path, "v2lc_encoder", job_name="pretrain", retry=1)
    resumed = _train(cfg, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref, got = _weights(ref_out), _weights(out)
    assert ref.keys() == got.keys()
    unequal = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not unequal, f"{len(unequal)} tensors differ after resume, e.g. {unequal[:3]}"
    assert (out / "model.safetensors").read_bytes() == (ref_out / "model.safetensors").read_bytes()
    ref_metrics, metrics = (json.loads((o / "metrics.json").read_text()) for o in (ref_out, out))
    assert metrics["resumed_from_step"] == 3
    assert {k: metrics[k] for k in RETRIEVAL_KEYS + ("final_loss",)} == \
        {k: ref_metrics[k] for k in RETRIEVAL_KEYS + ("final_loss",)}
    assert not (out / "checkpoints" / ".tmp-step-6-deadbeef").exists()
    logs = " ".join(m["params"]["message"] for m in _messages(messages) if m["method"] == "log")
    assert "Dagster retry 1" in logs and "resuming from" in logs and "step-3" in logs


def test_nan_loss_stops_before_any_poisoned_checkpoint(index, tmp_path, capsys, monkeypatch):
    from lcaffect_ml.train_v2lc import main

    out = tmp_path / "out"
    options = {**BASE, "grad_accum": 1, "max_steps": 8, "checkpoint_every": 2, "eval_every": 0}
    cfg = _config(tmp_path / "v2lc.json", shards=str(index), output_dir=str(out), **options)
    inject(monkeypatch, nan_at_step=5)
    assert main(["--config", str(cfg)]) == EXIT_NON_FINITE
    assert "non-finite loss (nan) at step 5" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()
    weights = _weights(out / "checkpoints" / "step-4")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_bad_config_is_refused_with_exit_2(tmp_path, capsys):
    from lcaffect_ml.train_v2lc import main

    cfg = _config(tmp_path / "bad.yaml", shards="x", output_dir=str(tmp_path), batchsize=4)
    assert main(["--config", str(cfg)]) == 2
    assert "unknown option(s) ['batchsize']" in capsys.readouterr().err


def test_every_option_is_documented_and_overridable(tmp_path):
    import lcaffect_ml.train_v2lc as program
    from conftest import undocumented
    from lcaffect_ml.program import program_config

    assert undocumented(program.TrainConfig) == []
    cfg = _config(tmp_path / "c.yaml", shards="s", output_dir="o", lr=1e-3)
    parsed = program_config(["--config", str(cfg), "--set", "lr=0.5", "--set", "betas=[0.8, 0.9]",
                             "--set", "freeze_text=true"], "lcaffect_ml.train_v2lc", "V2LC pretraining", program.TrainConfig)
    assert parsed.lr == 0.5 and parsed.betas == [0.8, 0.9] and parsed.freeze_text is True


# ------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_tiny_model_learns_colour_classes_above_chance(tmp_path):
    index = write_synthetic_shards(tmp_path / "lake", n_videos=24, segments_per_video=8, n_classes=6, seed=5)
    cfg = _config(tmp_path / "v2lc.yaml", shards=str(index), output_dir=str(tmp_path / "out"),
                  **{**BASE, "grad_accum": 1, "batch_size": 24, "max_steps": 150, "warmup_steps": 10,
                     "checkpoint_every": 0, "eval_every": 0, "embed_dim": 64, "lr": 2e-3})
    proc = _train(cfg, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # a segment's own comments are told apart only by class, so the ceiling is about 6x chance
    assert m["v2c_r1"] >= 2.5 * m["chance_r1"], m
    assert m["c2v_r1"] >= 2.5 * m["chance_r1"], m
    assert m["v2c_medr"] < m["eval_segments"] * 3 / 2 / 2, m  # median rank well inside the pool


@pytest.mark.slow
def test_ddp_under_torchrun_on_two_cpu_ranks(index, tmp_path):
    out = tmp_path / "out"
    # with gradient checkpointing, as the example pretraining config has it
    cfg = _config(tmp_path / "v2lc.yaml", shards=str(index), output_dir=str(out),
                  **{**BASE, "max_steps": 4, "checkpoint_every": 2, "eval_every": 0, "gradient_checkpointing": True})
    torchrun = Path(sys.executable).with_name("torchrun")
    # --standalone: a local rendezvous on a free port
    proc = _run_group([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "lcaffect_ml.train_v2lc",
                       "--config", str(cfg)], env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["clips_seen"] == 4 * 3 * 8 * 2
    rng = json.loads((out / "checkpoints" / "step-4" / "rng.json").read_text())
    assert len(rng["__dict__"][0][1]) == 2  # both ranks' RNG streams saved


def _gather_worker(rank: int, world: int) -> None:
    from lcaffect_ml.losses import v2lc_loss

    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1).requires_grad_()
    c = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=-1).requires_grad_()
    seg = torch.tensor([0, 0, -1, 1, -1, -1, 0, 1, 1, 0, -1, -1])  # per rank: 2 segments x K=3
    vl = v.detach()[rank * 2:(rank + 1) * 2].clone().requires_grad_()
    cl = c.detach()[rank * 6:(rank + 1) * 6].clone().requires_grad_()
    loss = v2lc_loss(vl, cl, seg[rank * 6:(rank + 1) * 6], torch.tensor(10.0)).loss
    loss.backward()
    global_seg = torch.cat([seg[:6], torch.where(seg[6:] >= 0, seg[6:] + 2, seg[6:])])
    ref = v2lc_loss(v, c, global_seg, torch.tensor(10.0), gather=False).loss
    ref.backward()
    assert torch.allclose(loss, ref)
    # every rank computes the global loss; DDP's averaging of W identical losses restores 1x
    assert torch.allclose(vl.grad / world, v.grad[rank * 2:(rank + 1) * 2], atol=1e-6)
    assert torch.allclose(cl.grad / world, c.grad[rank * 6:(rank + 1) * 6], atol=1e-6)


@pytest.mark.slow
def test_cross_rank_gather_keeps_gradients():
    spawn_gloo_ranks(_gather_worker)


def test_dagster_pipes_subprocess_client_sees_materialization_and_check(index, tmp_path):
    import dagster as dg

    out = tmp_path / "out"
    cfg = _config(tmp_path / "v2lc.yaml", shards=str(index), output_dir=str(out),
                  **{**BASE, "max_steps": 3, "checkpoint_every": 0, "eval_every": 0})

    # no annotations: this module uses postponed (string) annotations, which Dagster cannot resolve locally
    @dg.asset(check_specs=[dg.AssetCheckSpec("retrieval_above_chance", asset="v2lc_encoder")],
              required_resource_keys={"pipes"})
    def v2lc_encoder(context):
        return context.resources.pipes.run(command=[sys.executable, "-m", "lcaffect_ml.train_v2lc", "--config", str(cfg)],
                         context=context, cwd=str(ROOT),
                                           env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}).get_results()

    result = dg.materialize([v2lc_encoder], resources={"pipes": dg.PipesSubprocessClient()})
    assert result.success
    (mat,) = result.asset_materializations_for_node("v2lc_encoder")
    metrics = json.loads((out / "metrics.json").read_text())
    assert mat.metadata["v2c_r1"].value == pytest.approx(metrics["v2c_r1"])
    assert mat.tags["dagster/data_version"] == __import__("hashlib").sha256(
        (out / "model.safetensors").read_bytes()).hexdigest()
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "retrieval_above_chance"
    assert check.passed is (metrics["v2c_r1"] > metrics["chance_r1"])


# ------------------------------------------------------------------ cross-platform evaluation


def _index_with_platforms(index: Path, held: int = 4) -> Path:
    """The synthetic index with each video's platform and language named: the last ``held``
    videos are Niconico (Japanese), the others Bilibili (Chinese)."""
    entries = json.loads(index.read_text())
    videos = sorted({e["video_id"] for e in entries})
    nico = set(videos[-held:])
    for e in entries:
        e["platform"], e["language"] = ("niconico", "ja") if e["video_id"] in nico else ("bilibili", "zh")
    out = index.with_name("index.platforms.json")
    out.write_text(json.dumps(entries))
    return out


def test_a_whole_platform_can_be_held_out_and_metrics_are_reported_per_platform(index, tmp_path):
    annotated = _index_with_platforms(index)
    cfg = _config(tmp_path / "c.yaml", shards=str(annotated), output_dir=str(tmp_path / "out"),
                  **{**BASE, "max_steps": 3, "eval_every": 0, "checkpoint_every": 0, "grad_accum": 1},
                  eval_platforms=["NicoNico"])
    proc = _train(cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["train_videos"] == 8 and m["test_videos"] == 4  # exactly the Niconico videos are held out
    assert set(m["by_platform"]) == {"niconico"} and set(m["by_language"]) == {"ja"}
    nico = m["by_platform"]["niconico"]
    assert nico["eval_segments"] == m["eval_segments"] and nico["chance_r1"] == pytest.approx(m["chance_r1"])


def test_holding_out_a_platform_the_index_does_not_name_is_a_config_error(index, tmp_path):
    for shards, message in ((str(index), "needs each shard's platform"),
                            (str(_index_with_platforms(index)), "has no video of those platforms")):
        cfg = _config(tmp_path / "c.yaml", shards=shards, output_dir=str(tmp_path / "out"),
                      **{**BASE, "max_steps": 1}, eval_platforms=["youtube"])
        proc = _train(cfg)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


# ------------------------------------------------------------------ grouped held-out split


def _index_with_series(index: Path, column: str) -> Path:
    """The synthetic index with each video's catalogue ``column`` naming its series: four series
    of three episodes (the variant index carries catalogue columns under ``catalogue``)."""
    entries = json.loads(index.read_text())
    videos = sorted({e["video_id"] for e in entries})
    for e in entries:
        e["catalogue"] = {column: f"series-{videos.index(e['video_id']) // 3}", "genre": "anime"}
    out = index.with_name(f"index.{column}.json")
    out.write_text(json.dumps(entries))
    return out


@pytest.mark.parametrize("column, split_group", [("series", "series"), ("group", "auto")])
def test_a_series_never_straddles_the_held_out_split_and_the_metrics_name_it(index, tmp_path, column, split_group):
    cfg = _config(tmp_path / "c.yaml", shards=str(_index_with_series(index, column)), output_dir=str(tmp_path / "out"),
                  **{**BASE, "max_steps": 2, "eval_every": 0, "checkpoint_every": 0, "grad_accum": 1,
                     "eval_fraction": 0.3}, split_group=split_group)
    proc = _train(cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    split = json.loads((tmp_path / "out" / "split.json").read_text())  # the split the run actually used
    train_series, test_series = set(split["train"].values()), set(split["test"].values())
    assert test_series and train_series and train_series.isdisjoint(test_series)
    assert len(split["test"]) == 3 * len(test_series)  # every episode of a held-out series is held out
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["split_group"] == split["split_group"] == column and m["test_videos"] == len(split["test"])


def test_the_default_split_is_by_video_without_a_group_and_an_unknown_column_is_refused(index, tmp_path):
    annotated = _index_with_series(index, "series")  # a series but no declared group: auto splits by video
    cfg = _config(tmp_path / "c.yaml", shards=str(annotated), output_dir=str(tmp_path / "out"),
                  **{**BASE, "max_steps": 1, "eval_every": 0, "checkpoint_every": 0, "grad_accum": 1})
    assert _train(cfg).returncode == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["split_group"] == "video"
    bad = _config(tmp_path / "bad.yaml", shards=str(annotated), output_dir=str(tmp_path / "bad"),
                  **{**BASE, "max_steps": 1}, split_group="uploader")
    proc = _train(bad)
    assert proc.returncode == 2 and "split_group 'uploader'" in proc.stderr, proc.stderr[-2000:]
