"""The ablation's paired difference with a bootstrap interval over test utterances: the vectorised
metrics against the reference ones, the bootstrap on arms of known quality, the report's columns,
and the per-utterance predictions train_fusion saves for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lcaffect_ml.fusion_data import FusionTrainConfig
from lcaffect_ml.metrics import resampled_metrics, task_metrics
from lcaffect_ml.train_fusion import train
from lcaffect_pipeline.downstream.ablation import ablation_table
from lcaffect_pipeline.downstream.bootstrap import PairingError, paired_bootstrap

from test_fusion import write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task_data(task: str, n: int, rng, accuracy: float = 0.6):
    if task == "chsims2":
        y = rng.uniform(-1, 1, n).round(1)
        return y + rng.normal(0, 1 - accuracy, n), y
    k = 7 if task == "meld" else 2
    y = rng.integers(0, k, n)
    return np.where(rng.random(n) < accuracy, y, rng.integers(0, k, n)), y


@pytest.mark.parametrize("task", ["chsims2", "meld", "mustard"])
def test_resampled_metrics_equal_the_reference_metrics_on_every_resample(task):
    rng = np.random.default_rng(0)
    preds, labels = _task_data(task, 150, rng)
    idx = rng.integers(0, 150, (6, 150))
    idx[5, :] = 3  # one utterance drawn 150 times: constant labels, undefined correlation and classes
    got = resampled_metrics(task, preds, labels, idx)
    for b in range(len(idx)):
        for metric, value in task_metrics(task, preds[idx[b]], labels[idx[b]]).items():
            assert got[metric][b] == pytest.approx(value, abs=1e-12, nan_ok=True), (metric, b)


def _predictions(ids, labels, per_seed) -> dict:
    return {"ids": list(ids), "labels": [float(x) for x in labels],
            "seeds": {str(s): [float(x) for x in p] for s, p in enumerate(per_seed)}}


def test_paired_bootstrap_on_arms_of_known_quality():
    rng = np.random.default_rng(1)
    n, ids = 400, [f"u{i}" for i in range(400)]
    labels = rng.integers(0, 2, n)
    good = [np.where(rng.random(n) < 0.85, labels, 1 - labels) for _ in range(3)]
    poor = [np.where(rng.random(n) < 0.60, labels, 1 - labels) for _ in range(3)]
    with_lc, without = _predictions(ids, labels, good), _predictions(ids, labels, poor)
    out = paired_bootstrap("mustard", with_lc, without, n_boot=500)
    expected = (np.mean([task_metrics("mustard", p, labels)["weighted_f1"] for p in good])
                - np.mean([task_metrics("mustard", p, labels)["weighted_f1"] for p in poor]))
    f1 = out["weighted_f1"]
    assert f1["difference"] == pytest.approx(expected) and f1["n_utterances"] == n and f1["n_boot"] == 500
    assert 0 < f1["ci_low"] < f1["difference"] < f1["ci_high"] and f1["ci_high"] - f1["ci_low"] < 0.15
    # the arms' utterances in another order pair the same way; the same seed gives the same interval
    order = rng.permutation(n)
    shuffled = {"ids": [ids[i] for i in order], "labels": [float(labels[i]) for i in order],
                "seeds": {s: [p[i] for i in order] for s, p in without["seeds"].items()}}
    assert paired_bootstrap("mustard", with_lc, shuffled, n_boot=500) == out
    same = paired_bootstrap("mustard", with_lc, with_lc, n_boot=200)["weighted_f1"]
    assert (same["difference"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)


def test_unpairable_arms():
    ids, labels = ["a", "b"], [0, 1]
    arm = _predictions(ids, labels, [[0, 1]])
    assert paired_bootstrap("mustard", arm, None) is None
    assert paired_bootstrap("mustard", arm, _predictions(["c", "d"], labels, [[0, 1]])) is None
    with pytest.raises(PairingError, match="disagree on the labels of 1 utterances"):
        paired_bootstrap("mustard", arm, _predictions(ids, [0, 0], [[0, 1]]))


def test_the_report_shows_the_interval_the_paper_gain_and_the_setup():
    rng = np.random.default_rng(2)
    ids, labels = [f"u{i}" for i in range(200)], rng.integers(0, 7, 200)
    good = [np.where(rng.random(200) < 0.8, labels, 0) for _ in range(2)]
    poor = [np.where(rng.random(200) < 0.5, labels, 0) for _ in range(2)]

    def arm(preds, use_lc):
        seeds = {str(s): task_metrics("meld", p, labels) for s, p in enumerate(preds)}
        return {"seeds": seeds, "protocol": "official", "use_lc": use_lc, "predictions": _predictions(ids, labels, preds)}

    features = {"context": {"used": True, "max_turns": 5, "utterances_with_context": 150}}
    table, md = ablation_table({"meld": {"with": arm(good, True), "without": arm(poor, False), "features": features}})
    row = table["tasks"]["meld"]["metrics"]["weighted_f1"]
    assert row["paired"]["ci_low"] < row["paired"]["difference"] < row["paired"]["ci_high"]
    assert row["paired"]["difference"] == pytest.approx(row["difference"])  # no folds: pooled = mean over seeds
    assert row["paper_gain_points"] == 2.89 and table["tasks"]["meld"]["metrics"]["accuracy"]["paper_gain_points"] is None
    assert table["tasks"]["meld"]["context"] == features["context"] and table["tasks"]["meld"]["protocol"] == "official"
    line = next(x for x in md.splitlines() if x.startswith("| meld | **weighted_f1**"))
    assert f"[{row['paired']['ci_low']:+.4f}, {row['paired']['ci_high']:+.4f}]" in line and "(2.89 pts)" in line
    assert "- meld: protocol official, context on (up to 5 turns, 150 utterances with context)" in md
    without_predictions = {k: v for k, v in arm(poor, False).items() if k != "predictions"}
    table, md = ablation_table({"meld": {"with": arm(good, True), "without": without_predictions}})
    assert table["tasks"]["meld"]["metrics"]["weighted_f1"]["paired"] is None and "| n/a |" in md


def _config(task, table, features, out, **options) -> FusionTrainConfig:
    return FusionTrainConfig.from_dict({"task": task, "utterances": str(table), "features_dir": str(features),
                                        "output_dir": str(out), "epochs": 2, "device": "cpu", "precision": "fp32",
                                        **options})


def test_train_fusion_saves_every_test_prediction(tmp_path: Path):
    table, features = write_dataset(tmp_path / "meld", "meld", n=60)
    metrics = train(_config("meld", table, features, tmp_path / "meld_out", seeds=[0, 1]))
    pred = metrics["predictions"]
    assert len(pred["ids"]) == 12 and set(pred["seeds"]) == {"0", "1"} and set(pred["lc_permuted"]) == {"0", "1"}
    for seed, values in pred["seeds"].items():  # the saved predictions give the reported metrics
        assert task_metrics("meld", values, pred["labels"]) == pytest.approx(metrics["seeds"][seed])
    table, features = write_dataset(tmp_path / "mustard", "mustard", n=50)
    metrics = train(_config("mustard", table, features, tmp_path / "mustard_out", use_lc=False))
    pred = metrics["predictions"]
    assert sorted(pred["ids"]) == [f"mustard-{i:04d}" for i in range(50)]  # every utterance once, over 5 folds
    assert "lc_permuted" not in pred


def test_the_ablation_as_a_table_and_a_bar_chart_for_the_ui():
    import dagster as dg

    from lcaffect_pipeline.defs.downstream_assets import _ablation_views
    from lcaffect_pipeline.downstream.ablation import ROW_COLUMNS, ablation_rows
    from lcaffect_pipeline.plots import ablation_png

    rng = np.random.default_rng(3)
    ids, labels = [f"u{i}" for i in range(100)], rng.integers(0, 2, 100)

    def arm(accuracy, permuted=None):
        preds = [np.where(rng.random(100) < accuracy, labels, 1 - labels) for _ in range(2)]
        out = {"seeds": {str(s): task_metrics("mustard", p, labels) for s, p in enumerate(preds)},
               "protocol": "speaker_dependent", "predictions": _predictions(ids, labels, preds)}
        if permuted is not None:
            out["lc_permuted"] = {"seeds": {"0": {"weighted_f1": permuted}, "1": {"weighted_f1": permuted}}}
        return out

    table, _ = ablation_table({"mustard": {"with": arm(0.9, permuted=0.55), "without": arm(0.6)}})
    rows = ablation_rows(table)
    assert [r["metric"] for r in rows] == ["weighted_precision", "weighted_recall", "weighted_f1"]
    assert all(set(r) == set(ROW_COLUMNS) for r in rows)
    f1 = rows[2]
    assert f1["headline"] and f1["paper_gain"] == pytest.approx(0.03) and f1["permuted"] == pytest.approx(0.55)
    assert f1["ci_low"] < f1["difference"] < f1["ci_high"] and rows[0]["paper_gain"] is None
    assert ablation_png(rows)[:8] == b"\x89PNG\r\n\x1a\n"
    views = _ablation_views(table)
    assert len(views["ablation_table"].value.records) == 3
    assert views["ablation_chart"].value.startswith("![ablation](data:image/png;base64,")
    assert _ablation_views({"tasks": {}}) == {}  # nothing to show: no empty table
    assert isinstance(views["ablation_table"], dg.TableMetadataValue)
