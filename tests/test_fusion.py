"""The fusion model (sequence, masks, the use_lc ablation, save/load) and the fusion training program
end to end on generated feature folders laid out per the downstream contract, where the label is
carried only by the live-comment features: with them the model must beat the ablation clearly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import save_file

from lcaffect_ml.fusion import FusionConfig, FusionModel
from lcaffect_ml.train_fusion import permute_lc, train
from lcaffect_ml.fusion_data import FusionTrainConfig, load_data
from lcaffect_ml.trainutil import EXIT_NON_FINITE, CheckpointFormatError, NonFiniteLossError
from lcaffect_ml.contracts.tables import UTTERANCES_SCHEMA
from faults import command as faults_command
from faults import inject

from conftest import ROOT, pipes_env
DIMS = {"text": (6, 8), "audio": (5, 6), "visual": (4, 5), "lc": (3, 8)}  # (max length, width)
SHOWS = ("FRIENDS", "BBT", "GOLDENGIRLS", "SARCASMAHOLICS")
# checkpoints cost more than training steps here (fsync): only at each run's end unless a test asks
FAST = dict(d_model=32, num_layers=1, num_heads=2, ff_dim=64, dropout=0.1, batch_size=16, lr=3e-3,
            epochs=20, log_every=100, checkpoint_every=1000)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ generated datasets


def _labels(task: str, n: int, rng) -> np.ndarray:
    if task == "chsims2":  # CH-SIMS style: averages of five annotators, steps of 0.2, zeros included
        return np.round(np.tanh(rng.normal(size=n) * 1.2) * 5) / 5
    return rng.integers(0, 7 if task == "meld" else 2, size=n).astype(np.float64)


def _features(n: int, rng, labels: np.ndarray, task: str) -> dict[str, dict[str, torch.Tensor]]:
    """Noise everywhere; the label is readable only from the live-comment tokens."""
    out = {}
    for m, (length, width) in DIMS.items():
        lens = rng.integers(1, length + 1, size=n)
        x = rng.normal(size=(n, length, width)).astype(np.float32)
        if m == "lc":
            for i in range(n):
                if task == "chsims2":
                    x[i, :, 0] = 3.0 * labels[i] + 0.3 * x[i, :, 0]
                else:
                    x[i, :, int(labels[i])] += 3.0
        x[np.arange(length)[None, :] >= lens[:, None]] = 0.0  # padded, as the extractor writes it
        out[m] = {m: torch.from_numpy(x), f"{m}_len": torch.from_numpy(lens.astype(np.int64))}
    return out


def write_dataset(folder: Path, task: str, n: int = 120, seed: int = 0, missing_media: int = 0,
                  no_features: int = 0, bad_labels: int = 0) -> tuple[Path, Path]:
    """An utterance table (UTTERANCES_SCHEMA) and a features folder laid out per the contract."""
    rng = np.random.default_rng(seed)
    ids = [f"{task}-{i:04d}" for i in range(n)]
    labels = _labels(task, n, rng)
    rows = []
    for i, uid in enumerate(ids):
        split = "all" if task == "mustard" else ("train" if i < 0.6 * n else "valid" if i < 0.8 * n else "test")
        status = "missing" if i < missing_media else "ok"
        bad = max(missing_media, no_features) <= i < max(missing_media, no_features) + bad_labels
        label = float("nan") if bad else float(labels[i])
        rows.append(dict(dataset=task, utterance_id=uid, split=split, text=f"utterance {i}", label=label,
                         label_name=None, extra_labels=None, speaker=f"spk{i % 7}", show=SHOWS[i % 4].lower()
                         if i % 8 == 4 else SHOWS[i % 4], context=[], media_path=None, media_status=status,
                         media_npz=None if status != "ok" else f"/media/{uid}.npz"))
    table_path = folder / f"{task}_utterances.parquet"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=UTTERANCES_SCHEMA), table_path)
    features_dir = folder / f"{task}_features"
    features_dir.mkdir()
    feats = _features(n, rng, labels, task)
    keep = np.arange(no_features, n)  # the first rows have no features (extraction failed for them)
    base = {k: v[keep] for m in ("text", "audio", "visual") for k, v in feats[m].items()}
    versions = {"base_version": f"base-{task}-{seed}", "lc_version": f"lc-{task}-{seed}"}
    # each file names the version it was written for, as extract_features writes it (contracts.tables §3)
    save_file({k: v.contiguous() for k, v in base.items()}, str(features_dir / "base_features.safetensors"),
              metadata={"version": versions["base_version"]})
    save_file({k: v[keep].contiguous() for k, v in feats["lc"].items()},
              str(features_dir / "lc_features.safetensors"), metadata={"version": versions["lc_version"]})
    meta = {"utterance_ids": [ids[i] for i in keep], "dims": {m: d[1] for m, d in DIMS.items()}, **versions,
            "lc_source": "pre_projection", "models": {}}
    (features_dir / "features.json").write_text(json.dumps(meta), encoding="utf-8")
    return table_path, features_dir


def _config(task: str, table: Path, features: Path, out: Path, **options) -> FusionTrainConfig:
    return FusionTrainConfig.from_dict(dict(task=task, utterances=str(table), features_dir=str(features),
                                            output_dir=str(out), **{**FAST, **options}))


@pytest.fixture(scope="module")
def chsims(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("chsims2"), "chsims2", missing_media=3, no_features=8,
                         bad_labels=2)


@pytest.fixture(scope="module")
def chsims_runs(chsims, tmp_path_factory):
    table, features = chsims
    out = tmp_path_factory.mktemp("chsims_out")
    with_lc = train(_config("chsims2", table, features, out / "with_lc", use_lc=True, checkpoint_every=40))
    without = train(_config("chsims2", table, features, out / "without_lc", use_lc=False))
    return out, with_lc, without


# -------------------------------------------------------------------------- the model


def _model(use_lc: bool, **overrides) -> FusionModel:
    torch.manual_seed(0)
    cfg = FusionConfig(input_dims={m: d[1] for m, d in DIMS.items()}, num_outputs=overrides.pop("num_outputs", 1),
                       use_lc=use_lc, d_model=16, num_layers=2, num_heads=2, ff_dim=32, dropout=0.0,
                       max_positions=overrides.pop("max_positions", 16), **overrides)
    return FusionModel(cfg).eval()


def _inputs(batch: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    feats = _features(batch, rng, np.zeros(batch), "chsims2")
    return {k: v for group in feats.values() for k, v in group.items()}


def test_sequence_has_cls_and_every_token_and_no_lc_tokens_without_lc():
    inputs = _inputs()
    tokens, pad = _model(True).build_sequence(inputs)
    assert tokens.shape == (4, 1 + 6 + 5 + 4 + 3, 16) and pad.shape == (4, 19)
    assert not pad[:, 0].any()  # [CLS] is never padding
    assert pad.sum(1).tolist() == [sum(int(L) - int(inputs[f"{m}_len"][b]) for m, (L, _) in DIMS.items())
                                   for b in range(4)]
    tokens, pad = _model(False).build_sequence(inputs)
    assert tokens.shape == (4, 1 + 6 + 5 + 4, 16)


def test_lc_changes_the_output_only_when_used():
    inputs, other = _inputs(), _inputs()
    other["lc"] = other["lc"] + 5.0
    with_lc, without = _model(True), _model(False)
    base = {k: v for k, v in inputs.items() if not k.startswith("lc")}
    assert not torch.allclose(with_lc(inputs), with_lc({**inputs, "lc": other["lc"]}))
    assert torch.equal(without(inputs), without({**inputs, "lc": other["lc"]}))
    assert torch.equal(without(inputs), without(base))  # the ablation does not even read them
    assert not [n for n, _ in without.named_parameters() if "lc" in n]
    assert not [n for n in without.state_dict() if n.startswith("lc") or ".lc." in n]


def test_gradients_reach_the_lc_projection_only_when_used():
    inputs = _inputs()
    with_lc = _model(True).train()
    with_lc(inputs).sum().backward()
    assert with_lc.proj["lc"].weight.grad is not None and with_lc.proj["lc"].weight.grad.abs().sum() > 0
    without = _model(False).train()
    without(inputs).sum().backward()
    assert "lc" not in without.proj
    grads = {n for n, p in without.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"proj.text.weight", "proj.audio.weight", "proj.visual.weight", "head.weight"} <= grads


def test_padding_changes_nothing():
    model = _model(True, num_outputs=7)
    inputs = _inputs()
    reference = model(inputs)
    longer = dict(inputs)
    for m in DIMS:  # three more padded positions, full of garbage
        x = inputs[m]
        longer[m] = torch.cat([x, torch.randn(x.shape[0], 3, x.shape[2]) * 100], dim=1)
    assert torch.allclose(model(longer), reference, atol=1e-5)
    garbage = {k: v.clone() for k, v in inputs.items()}
    for m in DIMS:  # overwrite the padding inside the original length
        pad = torch.arange(garbage[m].shape[1])[None, :] >= garbage[f"{m}_len"][:, None]
        garbage[m][pad] = 1e3
    assert torch.allclose(model(garbage), reference, atol=1e-5)
    shorter = {k: v.clone() for k, v in inputs.items()}
    shorter["text_len"] = torch.clamp(shorter["text_len"] - 1, min=0)  # a real token hidden: output moves
    assert not torch.allclose(model(shorter), reference, atol=1e-5)


def test_sequences_longer_than_max_positions_are_refused():
    with pytest.raises(ValueError, match="max_positions"):
        _model(True, max_positions=5)(_inputs())


def test_save_and_load_round_trip(tmp_path):
    model = _model(True, regression_activation="tanh")
    stats = {m: (torch.full((d[1],), 0.5), torch.full((d[1],), 2.0)) for m, d in DIMS.items()}
    model.set_feature_stats(stats)
    inputs = _inputs()
    model.save_pretrained(tmp_path / "m")
    loaded = FusionModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    assert torch.equal(loaded(inputs), model(inputs))
    assert torch.equal(loaded.lc_std, torch.full((8,), 2.0))
    assert bool((model(inputs).abs() <= 1).all())  # tanh head
    sha = hashlib.sha256((tmp_path / "m" / "model.safetensors").read_bytes()).hexdigest()
    loaded.save_pretrained(tmp_path / "again")
    assert hashlib.sha256((tmp_path / "again" / "model.safetensors").read_bytes()).hexdigest() == sha
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(CheckpointFormatError, match="model.safetensors"):
        FusionModel.from_pretrained(tmp_path / "m")


# ---------------------------------------------------------------------- the trainer


def test_chsims2_lc_features_beat_the_ablation(chsims_runs):
    _, with_lc, without = chsims_runs
    for metrics in (with_lc, without):
        assert set(metrics["mean"]) == {"acc2", "acc2_weak", "acc3", "acc5", "f1", "mae", "corr"}
        assert set(metrics["seeds"]) == {"0"} and metrics["std"]["acc2"] == 0.0
    assert with_lc["use_lc"] is True and without["use_lc"] is False
    assert with_lc["mean"]["acc2"] >= 0.8
    assert with_lc["mean"]["acc2"] - without["mean"]["acc2"] >= 0.2
    assert without["mean"]["mae"] - with_lc["mean"]["mae"] >= 0.15
    assert with_lc["mean"]["corr"] >= 0.8 > 0.5 > without["mean"]["corr"]
    # the wiring control: the same with-LC model, LC tokens shuffled across the test utterances
    permuted = with_lc["lc_permuted"]["seeds"]["0"]
    assert with_lc["mean"]["acc2"] - permuted["acc2"] >= 0.2 and permuted["corr"] < 0.5
    assert "lc_permuted" not in without


def test_permute_lc_shuffles_only_the_given_rows_and_keeps_tokens_with_their_lengths():
    lc = torch.arange(6 * 2 * 3, dtype=torch.float32).view(6, 2, 3)
    inputs = {"lc": lc, "lc_len": torch.tensor([1, 2, 1, 2, 1, 2]), "text": torch.zeros(6, 1, 1),
              "text_len": torch.ones(6, dtype=torch.long)}
    rows = np.array([1, 3, 4, 5])
    out = permute_lc(inputs, rows, seed=0)
    assert torch.equal(out["lc"][[0, 2]], lc[[0, 2]]) and out["text"] is inputs["text"]
    sources = [int(torch.nonzero((lc == out["lc"][r]).all(-1).all(-1))[0]) for r in rows]
    assert sorted(sources) == rows.tolist() and sources != rows.tolist()
    assert [int(out["lc_len"][r]) for r in rows] == [int(inputs["lc_len"][s]) for s in sources]


def test_chsims2_outputs_and_skipped_rows(chsims_runs):
    out, metrics, _ = chsims_runs
    folder = out / "with_lc"
    assert json.loads((folder / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    # rows 0-2 have missing media, rows 0-7 no features (3 of them already counted), rows 8-9 NaN labels
    assert metrics["skipped"] == {"media_not_ok": 3, "no_features": 5, "bad_label": 2, "duplicate_id": 0}
    assert metrics["counts"]["utterances_used"] == 110
    (run,) = metrics["runs"]
    assert run["selection"] == "best_valid" and 1 <= run["selected_epoch"] <= 20
    assert run["n_train"] == 62 and run["n_valid"] == 24 and run["n_test"] == 24
    assert run["steps"] == 20 * 4
    assert metrics["valid"]["0"]["mae"] < 0.3
    model = FusionModel.from_pretrained(folder)
    assert model.config.use_lc and model.config.input_dims["lc"] == 8
    run_weights = (folder / "runs" / "seed-0" / "model.safetensors").read_bytes()
    assert (folder / "model.safetensors").read_bytes() == run_weights
    assert sorted(p.name for p in (folder / "checkpoints" / "seed-0").iterdir()) == ["step-40", "step-80"]
    assert (folder / "checkpoints" / "seed-0" / "step-80" / "best.safetensors").is_file()
    assert not list(folder.rglob(".*"))  # no temporary files left
    ablation = FusionModel.from_pretrained(out / "without_lc")
    assert not ablation.config.use_lc and "lc" not in ablation.proj


def test_finished_runs_are_reused_and_a_changed_config_retrains(chsims, chsims_runs):
    out, metrics, _ = chsims_runs
    table, features = chsims
    result = out / "with_lc" / "runs" / "seed-0" / "result.json"
    stamp = result.stat().st_mtime_ns
    again = train(_config("chsims2", table, features, out / "with_lc", use_lc=True, checkpoint_every=40))
    assert again["mean"] == metrics["mean"] and result.stat().st_mtime_ns == stamp
    changed = train(_config("chsims2", table, features, out / "with_lc", use_lc=True, epochs=2))
    assert changed["runs"][0]["steps"] == 8 and result.stat().st_mtime_ns != stamp


def test_meld_classification_lc_features_beat_the_ablation(tmp_path):
    table, features = write_dataset(tmp_path / "data", "meld", n=140)
    opts = dict(epochs=15, class_weights="balanced")
    with_lc = train(_config("meld", table, features, tmp_path / "with", use_lc=True, **opts))
    without = train(_config("meld", table, features, tmp_path / "without", use_lc=False, **opts))
    assert set(with_lc["mean"]) == {"weighted_f1", "accuracy"}
    assert with_lc["mean"]["accuracy"] >= 0.8 and with_lc["mean"]["weighted_f1"] >= 0.8
    assert with_lc["mean"]["weighted_f1"] - without["mean"]["weighted_f1"] >= 0.4
    assert FusionModel.from_pretrained(tmp_path / "with").head.out_features == 7


def test_mustard_speaker_dependent_five_folds(tmp_path):
    table, features = write_dataset(tmp_path / "data", "mustard")
    metrics = train(_config("mustard", table, features, tmp_path / "out", epochs=8, batch_size=32,
                            protocol="speaker_dependent"))
    assert metrics["protocol"] == "speaker_dependent"
    assert set(metrics["mean"]) == {"weighted_precision", "weighted_recall", "weighted_f1"}
    folds = metrics["folds"]["0"]
    assert len(folds) == 5 and len(metrics["runs"]) == 5
    assert sum(r["n_test"] for r in metrics["runs"]) == 120  # every utterance tested exactly once
    assert all(r["n_train"] + r["n_test"] == 120 and r["selection"] == "last_epoch" for r in metrics["runs"])
    assert metrics["seeds"]["0"]["weighted_f1"] == pytest.approx(np.mean([f["weighted_f1"] for f in folds]))
    assert metrics["mean"]["weighted_f1"] >= 0.85
    assert metrics["model_run"] == "seed-0-fold-4"


def test_mustard_speaker_independent_holds_out_friends(tmp_path):
    table, features = write_dataset(tmp_path / "data", "mustard")
    with_lc = train(_config("mustard", table, features, tmp_path / "with", epochs=10, batch_size=32,
                            protocol="speaker_independent"))
    without = train(_config("mustard", table, features, tmp_path / "without", epochs=10, batch_size=32,
                            protocol="speaker_independent", use_lc=False))
    (run,) = with_lc["runs"]
    # every 4th row is FRIENDS (some spelled "friends"): 30 test, 90 train
    assert run["n_test"] == 30 and run["n_train"] == 90 and "folds" not in with_lc
    assert with_lc["mean"]["weighted_f1"] - without["mean"]["weighted_f1"] >= 0.25


def test_the_same_seed_gives_the_same_weights(chsims, tmp_path):
    table, features = chsims
    a = train(_config("chsims2", table, features, tmp_path / "a", epochs=2))
    b = train(_config("chsims2", table, features, tmp_path / "b", epochs=2))
    assert a["mean"] == b["mean"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_nan_loss_stops_before_a_checkpoint_of_poisoned_weights(chsims, tmp_path, monkeypatch):
    table, features = chsims
    cfg = _config("chsims2", table, features, tmp_path / "out", epochs=2, checkpoint_every=1)
    inject(monkeypatch, nan_at_step=3)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train(cfg)
    steps = sorted(p.name for p in (tmp_path / "out" / "checkpoints" / "seed-0").iterdir())
    assert steps == ["step-1", "step-2"] and not (tmp_path / "out" / "metrics.json").exists()


def test_unusable_inputs_raise_typed_errors(chsims, tmp_path):
    from lcaffect_ml.fusion_data import DownstreamDataError

    table, features = chsims
    broken = tmp_path / "features"
    broken.mkdir()
    for name in ("features.json", "base_features.safetensors"):
        (broken / name).write_bytes((features / name).read_bytes())
    with pytest.raises(DownstreamDataError, match="lc_features.safetensors"):
        load_data(_config("chsims2", table, broken, tmp_path / "o"))
    assert load_data(_config("chsims2", table, broken, tmp_path / "o", use_lc=False)).input_dims == {
        "text": 8, "audio": 6, "visual": 5}
    with pytest.raises(DownstreamDataError, match="no meld rows"):
        load_data(_config("meld", table, features, tmp_path / "o"))


# ------------------------------------------------------ the program: kill, resume, Pipes


def _run_program(config: Path, *args: str, env: dict[str, str] | None = None, **faults):
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    program = faults_command("lcaffect_ml.train_fusion", **faults) if faults else [sys.executable, "-m", "lcaffect_ml.train_fusion"]
    return subprocess.run([*program, "--config", str(config), *args],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def test_killed_program_resumes_to_identical_weights_and_reports_through_pipes(chsims, tmp_path):
    table, features = chsims
    options = {**FAST, **dict(task="chsims2", utterances=str(table), features_dir=str(features), seeds=[0, 1],
                              epochs=4, checkpoint_every=3, pipes_asset_key="fusion_chsims2")}
    reference = train(FusionTrainConfig.from_dict({**options, "output_dir": str(tmp_path / "ref")}))
    config = tmp_path / "fusion.yaml"
    config.write_text(yaml.safe_dump({**options, "output_dir": str(tmp_path / "out")}), encoding="utf-8")
    # 16 steps per seed: the kill lands at step 7 of seed 1, whose last checkpoint is step 6
    killed = _run_program(config, kill_after_step=23)
    assert killed.returncode == -9, killed.stderr[-2000:]
    out = tmp_path / "out"
    assert (out / "runs" / "seed-0" / "result.json").is_file() and not (out / "metrics.json").exists()
    assert sorted(p.name for p in (out / "checkpoints" / "seed-1").iterdir()) == ["step-3", "step-6"]
    env, messages = pipes_env(tmp_path, "fusion_chsims2", job_name="downstream", retry=1)
    resumed = _run_program(config, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "seed-0: finished earlier" in resumed.stderr and "resuming from" in resumed.stderr
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "ref" / "model.safetensors").read_bytes()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == json.loads(json.dumps(reference["seeds"])) and metrics["mean"] == reference["mean"]
    assert [r["resumed_from_step"] for r in metrics["runs"]] == [-1, 6]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["mean"]["acc2"] == metrics["mean"]["acc2"]

    msgs = [json.loads(line) for line in messages.read_text().splitlines() if line.strip()]
    assert msgs[0]["method"] == "opened" and msgs[-1]["method"] == "closed"
    (mat,) = [m["params"] for m in msgs if m["method"] == "report_asset_materialization"]
    assert mat["asset_key"] == "fusion_chsims2"
    assert mat["data_version"] == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert mat["metadata"]["acc2"] == {"raw_value": metrics["mean"]["acc2"], "type": "float"}
    assert mat["metadata"]["mae_std"] == {"raw_value": metrics["std"]["mae"], "type": "float"}
    assert mat["metadata"]["use_lc"] == {"raw_value": True, "type": "bool"}
    assert mat["metadata"]["skipped_rows"] == {"raw_value": 10, "type": "int"}
    assert not [m for m in msgs if m["method"] == "report_asset_check"]


def test_program_exit_codes(chsims, tmp_path, monkeypatch):
    from lcaffect_ml.train_fusion import main

    table, features = chsims
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**FAST, **dict(task="chsims2", utterances=str(table), features_dir=str(features),
                                                 output_dir=str(tmp_path / "o"), epochs=1)}))
    inject(monkeypatch, nan_at_step=2)
    assert main(["--config", str(config)]) == EXIT_NON_FINITE
    assert main(["--config", str(config), "--set", "task=iemocap"]) == 2
    assert main(["--config", str(config), "--set", "protocol=speaker_dependent"]) == 2  # mustard only
