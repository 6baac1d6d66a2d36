"""Downstream metrics against cases worked out by hand (CH-SIMS v2 as MMSA / the CH-SIMS v2 code
bins it, MELD weighted F1 and accuracy, MUStARD weighted precision/recall/F1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lcaffect_ml.metrics import METRIC_NAMES, MetricInputError, is_better, sims_bins, task_metrics


def test_sims_bins_follow_mmsa_lower_open_upper_closed():
    # MMSA: class i where edge[i] < x <= edge[i+1]; the edge values themselves go to the lower bin
    values = np.array([-1.0, -0.7, -0.69, -0.1, -0.05, 0.0, 0.1, 0.11, 0.7, 0.71, 1.0])
    assert sims_bins(values, (-0.7, -0.1, 0.1, 0.7)).tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert sims_bins(values, (-0.1, 0.1)).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert sims_bins(values, (0.0,)).tolist() == [0] * 6 + [1] * 5


def test_chsims2_hand_computed_case():
    preds = [-0.5, 0.0, 0.3, 1.5, -0.05, 0.8]  # 1.5 is clipped to 1.0 before every metric
    labels = [-0.6, 0.2, 0.0, 0.9, -0.2, 0.75]
    m = task_metrics("chsims2", preds, labels)
    assert set(m) == set(METRIC_NAMES["chsims2"])
    # 2 classes [-1,0] / (0,1]: preds 0,0,1,1,0,1 vs labels 0,1,0,1,0,1
    assert m["acc2"] == pytest.approx(4 / 6)
    # weak labels (|y| <= 0.4): 0.2, 0.0, -0.2 -> labels 1,0,0 vs preds 0,1,0
    assert m["acc2_weak"] == pytest.approx(1 / 3)
    # 3 classes: preds 0,1,2,2,1,2 vs labels 0,2,1,2,0,2
    assert m["acc3"] == pytest.approx(3 / 6)
    # 5 classes: preds 1,2,3,4,2,4 vs labels 1,3,2,4,1,4
    assert m["acc5"] == pytest.approx(3 / 6)
    # each class: precision 2/3, recall 2/3 -> weighted F1 2/3
    assert m["f1"] == pytest.approx(2 / 3)
    # |err| on clipped values: .1 .2 .3 .1 .15 .05 (unclipped the 4th would be .6)
    assert m["mae"] == pytest.approx(0.9 / 6)


def test_chsims2_f1_weights_by_support():
    # labels: 3 positive, 1 non-positive; preds all positive
    m = task_metrics("chsims2", [0.5, 0.5, 0.5, 0.5], [0.3, 0.6, 0.9, -0.5])
    # positive class F1 = 2*(3/4*1)/(3/4+1) = 6/7 (support 3); negative class 0 (support 1)
    assert m["f1"] == pytest.approx(3 / 4 * 6 / 7)
    assert m["acc2"] == pytest.approx(3 / 4)


def test_chsims2_zero_counts_as_non_positive():
    # a zero label with a zero prediction agrees; a zero label with a small positive one does not
    m = task_metrics("chsims2", [0.0, 0.01, -0.3], [0.0, 0.0, -0.4])
    assert m["acc2"] == pytest.approx(2 / 3)
    # all three labels are weak (|y| <= 0.4) and zeros stay in the set
    assert m["acc2_weak"] == pytest.approx(2 / 3)


def test_chsims2_weak_subset_excludes_strong_labels_and_is_nan_when_empty():
    m = task_metrics("chsims2", [0.9, -0.9, 0.1], [-0.9, 0.9, 0.4])  # only the last label is weak
    assert m["acc2"] == pytest.approx(1 / 3) and m["acc2_weak"] == 1.0
    assert math.isnan(task_metrics("chsims2", [0.5, 0.6], [0.8, 0.9])["acc2_weak"])


def test_chsims2_all_one_class():
    right = task_metrics("chsims2", [0.5, 0.6, 0.7], [0.5, 0.6, 0.9])
    assert right["acc2"] == 1.0 and right["f1"] == 1.0
    wrong = task_metrics("chsims2", [-0.5, -0.6, -0.7], [0.5, 0.6, 0.9])
    assert wrong["acc2"] == 0.0 and wrong["f1"] == 0.0


def test_chsims2_pearson_correlation():
    assert task_metrics("chsims2", [-1, 0, 1], [-1, 1, 0])["corr"] == pytest.approx(0.5)  # cov 1 / (2*2)^.5
    assert task_metrics("chsims2", [0.1, 0.2, 0.3], [0.2, 0.4, 0.6])["corr"] == pytest.approx(1.0)
    assert task_metrics("chsims2", [0.3, 0.2, 0.1], [0.2, 0.4, 0.6])["corr"] == pytest.approx(-1.0)
    assert task_metrics("chsims2", [0.2, 0.2, 0.2], [0.2, 0.4, 0.6])["corr"] == 0.0  # constant: 0, not NaN


def test_chsims2_accepts_tensors():
    preds = torch.tensor([[-0.5], [0.0], [0.3]], dtype=torch.bfloat16)
    m = task_metrics("chsims2", preds, torch.tensor([-0.6, 0.2, 0.0]))
    assert m["acc2"] == pytest.approx(1 / 3)


def test_meld_hand_computed_case():
    labels = [0, 1, 2, 2, 3, 6, 6, 6]
    preds = [0, 1, 2, 3, 3, 6, 0, 6]
    m = task_metrics("meld", preds, labels)
    assert set(m) == {"weighted_f1", "accuracy"}
    assert m["accuracy"] == pytest.approx(6 / 8)
    # per-class F1 (support): 0: 2/3 (1), 1: 1 (1), 2: 2/3 (2), 3: 2/3 (1), 6: 4/5 (3)
    assert m["weighted_f1"] == pytest.approx(91 / 120)
    logits = np.full((8, 7), -1.0)
    logits[np.arange(8), preds] = 2.0
    assert task_metrics("meld", logits, labels) == m


def test_mustard_hand_computed_case():
    m = task_metrics("mustard", [1, 1, 1, 1, 0], [1, 1, 1, 0, 0])
    # sarcastic (support 3): P 3/4, R 1, F1 6/7; not sarcastic (support 2): P 1, R 1/2, F1 2/3
    assert m["weighted_precision"] == pytest.approx((3 * 0.75 + 2 * 1.0) / 5)
    assert m["weighted_recall"] == pytest.approx((3 * 1.0 + 2 * 0.5) / 5)
    assert m["weighted_f1"] == pytest.approx(82 / 105)


def test_mustard_all_one_class():
    assert task_metrics("mustard", [0, 0, 0], [0, 0, 0]) == {
        "weighted_precision": 1.0, "weighted_recall": 1.0, "weighted_f1": 1.0}
    assert task_metrics("mustard", [1, 1, 1], [0, 0, 0]) == {
        "weighted_precision": 0.0, "weighted_recall": 0.0, "weighted_f1": 0.0}


@pytest.mark.parametrize("task, preds, labels", [
    ("meld", [0, 1], [0, 1, 2]),
    ("chsims2", [], []),
    ("mustard", [0, 1], [0.5, 1]),
    ("iemocap", [0], [0]),
])
def test_bad_inputs_raise_typed_errors(task, preds, labels):
    with pytest.raises(MetricInputError):
        task_metrics(task, preds, labels)


def test_is_better_knows_the_direction():
    assert is_better("mae", 0.2, 0.3) and not is_better("mae", 0.4, 0.3)
    assert is_better("weighted_f1", 0.6, 0.5) and not is_better("weighted_f1", 0.5, 0.5)
    assert is_better("acc2", 0.1, None) and not is_better("acc2", float("nan"), None)


def test_selection_metric_equals_the_reported_one():
    """The cheap per-epoch selection metric is the benchmark's metric, not an approximation."""
    from lcaffect_ml.metrics import selection_metric, task_metrics

    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 60))
        for task, k in (("meld", 7), ("mustard", 2)):
            logits = rng.normal(size=(n, k))
            labels = rng.integers(0, k if trial % 3 else 2, size=n)  # some classes absent, some never predicted
            assert selection_metric(task, "weighted_f1", logits, labels) == pytest.approx(
                task_metrics(task, logits, labels)["weighted_f1"], abs=1e-12)
        preds, labels = rng.uniform(-1.5, 1.5, n), rng.choice(np.round(np.arange(-1, 1.01, 0.2), 1), n)
        assert selection_metric("chsims2", "mae", preds, labels) == pytest.approx(
            task_metrics("chsims2", preds, labels)["mae"], abs=1e-12)
        assert selection_metric("chsims2", "acc2", preds, labels) == task_metrics("chsims2", preds, labels)["acc2"]
