"""Downstream metrics for CH-SIMS v2, MELD and MUStARD, defined as the published baselines compute them.

CH-SIMS v2 (regression, labels in [-1, 1]) follows ``MetricsTop.__eval_sims_regression`` of the
official CH-SIMS v2 code (github.com/thuiar/ch-sims-v2, ``utils/metricsTop.py``; MMSA's
``src/MMSA/utils/metricsTop.py`` is the same without the weak variant):

- predictions and labels are first clipped to [-1, 1]; every metric below uses the clipped values;
- ``acc2``: 2-class accuracy over the bins [-1, 0] and (0, 1] (MMSA's ``ms_2 = [-1.01, 0.0, 1.01]``
  with ``lo < x <= hi``): a value of exactly 0 counts with the negatives, i.e. *non-positive vs
  positive*;
- ``acc2_weak``: the same 2-class accuracy restricted to the weak-sentiment samples, those whose
  (clipped) label lies in [-0.4, 0.4] (``Mult_acc_2_weak``); NaN when the set has no such sample;
- ``acc3``: bins [-1, -0.1], (-0.1, 0.1], (0.1, 1];
- ``acc5``: bins [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1];
- ``f1``: weighted F1 (sklearn ``average="weighted"``) of the ``acc2`` decision;
- ``mae``: mean absolute error; ``corr``: Pearson correlation, 0.0 when either side is constant
  (as MMSA's current ``__safe_corr``; numpy would give NaN).

MELD (7 emotions, ``MELD_EMOTIONS`` order): ``accuracy`` and ``weighted_f1`` (sklearn, weights = true
support per class). MUStARD (sarcastic = 1): ``weighted_precision``, ``weighted_recall``,
``weighted_f1`` from ``precision_recall_fscore_support(average="weighted")``, as the MUStARD
baseline reports them. Undefined precision/recall/F1 of a class (no predictions of it) count 0.

Classification ``preds`` may be class indices (N,) or scores/logits (N, C) (argmax taken).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

TASKS = ("chsims2", "meld", "mustard")
MELD_EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
NUM_CLASSES = {"chsims2": 1, "meld": len(MELD_EMOTIONS), "mustard": 2}
METRIC_NAMES = {
    "chsims2": ("acc2", "acc2_weak", "acc3", "acc5", "f1", "mae", "corr"),
    "meld": ("weighted_f1", "accuracy"),
    "mustard": ("weighted_precision", "weighted_recall", "weighted_f1"),
}
# Which way is better, for model selection on the validation split.
LOWER_IS_BETTER = frozenset({"mae"})

# Inner bin edges of the MMSA discretisation (the outer ones, +-1.01, only frame the clipped range).
SIMS_EDGES_2 = (0.0,)
SIMS_EDGES_3 = (-0.1, 0.1)
SIMS_EDGES_5 = (-0.7, -0.1, 0.1, 0.7)
SIMS_WEAK_LIMIT = 0.4


class MetricInputError(ValueError):
    """Predictions and labels that cannot be scored (shape mismatch, empty, unknown task)."""


def sims_bins(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Class index per value for the bins (-inf, e0], (e0, e1], ... (MMSA's ``lo < x <= hi``)."""
    return np.digitize(values, np.asarray(edges, dtype=np.float64), right=True)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) < 1e-8 or np.std(b) < 1e-8:
        return 0.0
    corr = float(np.corrcoef(a, b)[0, 1])
    return 0.0 if np.isnan(corr) else corr


def chsims2_metrics(preds: Any, labels: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    p = np.clip(_as_1d_float(preds), -1.0, 1.0)
    y = np.clip(_as_1d_float(labels), -1.0, 1.0)
    _same_length(p, y)
    p2, y2 = sims_bins(p, SIMS_EDGES_2), sims_bins(y, SIMS_EDGES_2)
    weak = np.abs(y) <= SIMS_WEAK_LIMIT
    return {
        "acc2": float(accuracy_score(y2, p2)),
        "acc2_weak": float(accuracy_score(y2[weak], p2[weak])) if weak.any() else float("nan"),
        "acc3": float(accuracy_score(sims_bins(y, SIMS_EDGES_3), sims_bins(p, SIMS_EDGES_3))),
        "acc5": float(accuracy_score(sims_bins(y, SIMS_EDGES_5), sims_bins(p, SIMS_EDGES_5))),
        "f1": float(f1_score(y2, p2, average="weighted", zero_division=0)),
        "mae": float(np.mean(np.abs(p - y))),
        "corr": _pearson(p, y),
    }


def meld_metrics(preds: Any, labels: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    p, y = _class_preds(preds), _as_labels(labels)
    _same_length(p, y)
    return {
        "weighted_f1": float(f1_score(y, p, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y, p)),
    }


def mustard_metrics(preds: Any, labels: Any) -> dict[str, float]:
    from sklearn.metrics import precision_recall_fscore_support

    p, y = _class_preds(preds), _as_labels(labels)
    _same_length(p, y)
    precision, recall, f1, _ = precision_recall_fscore_support(y, p, average="weighted", zero_division=0)
    return {"weighted_precision": float(precision), "weighted_recall": float(recall), "weighted_f1": float(f1)}


_BY_TASK: dict[str, Callable[[Any, Any], dict[str, float]]] = {
    "chsims2": chsims2_metrics,
    "meld": meld_metrics,
    "mustard": mustard_metrics,
}


def task_metrics(task: str, preds: Any, labels: Any) -> dict[str, float]:
    """The metrics of ``task`` (keys ``METRIC_NAMES[task]``) for one evaluation set."""
    if task not in _BY_TASK:
        raise MetricInputError(f"unknown task {task!r}; known: {list(_BY_TASK)}")
    return _BY_TASK[task](preds, labels)


def selection_metric(task: str, name: str, preds: Any, labels: Any) -> float:
    """One validation metric for model selection, cheaply: training calls this every epoch, where
    scikit-learn's input validation costs ~50x the arithmetic on a few hundred rows. ``mae`` and
    ``weighted_f1`` are computed here with NumPy (equal to ``task_metrics``; tested against it);
    any other metric goes through ``task_metrics``."""
    if name == "mae" and task == "chsims2":
        p, y = np.clip(_as_1d_float(preds), -1.0, 1.0), np.clip(_as_1d_float(labels), -1.0, 1.0)
        _same_length(p, y)
        return float(np.mean(np.abs(p - y)))
    if name == "weighted_f1" and task in ("meld", "mustard"):
        p, y = _class_preds(preds), _as_labels(labels)
        _same_length(p, y)
        return _weighted_f1(p, y)
    return task_metrics(task, preds, labels)[name]


def _weighted_f1(p: np.ndarray, y: np.ndarray) -> float:
    """scikit-learn's ``f1_score(average="weighted", zero_division=0)`` over integer labels."""
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = len(classes)
    yc, pc = codes[: len(y)], codes[len(y):]
    cm = np.bincount(yc * k + pc, minlength=k * k).reshape(k, k)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float((f1 * support).sum() / support.sum()) if support.sum() else 0.0


def resampled_metrics(task: str, preds: Any, labels: Any, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of ``task`` on many resamples at once: ``idx`` (B, n) holds row indices, and
    row b of each result is ``task_metrics(task, preds[idx[b]], labels[idx[b]])`` (tested against
    it), computed with NumPy over confusion counts, so a bootstrap of a thousand resamples costs
    about one scikit-learn call per metric instead of a thousand."""
    idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
    if task == "chsims2":
        p = np.clip(_as_1d_float(preds), -1.0, 1.0)
        y = np.clip(_as_1d_float(labels), -1.0, 1.0)
        _same_length(p, y)
        p, y = p[idx], y[idx]
        p2, y2 = sims_bins(p, SIMS_EDGES_2), sims_bins(y, SIMS_EDGES_2)
        weak = np.abs(y) <= SIMS_WEAK_LIMIT
        n_weak = weak.sum(1)
        hits_weak = ((p2 == y2) & weak).sum(1)
        return {
            "acc2": (p2 == y2).mean(1),
            "acc2_weak": np.divide(hits_weak, n_weak, out=np.full(len(idx), np.nan), where=n_weak > 0),
            "acc3": (sims_bins(p, SIMS_EDGES_3) == sims_bins(y, SIMS_EDGES_3)).mean(1),
            "acc5": (sims_bins(p, SIMS_EDGES_5) == sims_bins(y, SIMS_EDGES_5)).mean(1),
            "f1": _weighted_prf(y2, p2, len(SIMS_EDGES_2) + 1)[2],
            "mae": np.abs(p - y).mean(1),
            "corr": _pearson_rows(p, y),
        }
    if task not in ("meld", "mustard"):
        raise MetricInputError(f"unknown task {task!r}; known: {list(_BY_TASK)}")
    p, y = _class_preds(preds), _as_labels(labels)
    _same_length(p, y)
    k = int(max(NUM_CLASSES[task], p.max() + 1, y.max() + 1))
    precision, recall, f1 = _weighted_prf(y[idx], p[idx], k)
    if task == "meld":
        return {"weighted_f1": f1, "accuracy": (p[idx] == y[idx]).mean(1)}
    return {"weighted_precision": precision, "weighted_recall": recall, "weighted_f1": f1}


def _weighted_prf(y: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted precision, recall and F1 per row of (B, n) labels and predictions (zero_division 0)."""
    b = y.shape[0]
    codes = (np.arange(b)[:, None] * k * k + y * k + p).reshape(-1)
    cm = np.bincount(codes, minlength=b * k * k).reshape(b, k, k).astype(np.float64)
    tp, support, predicted = np.diagonal(cm, axis1=1, axis2=2), cm.sum(2), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=support + predicted > 0)
    total = support.sum(1)
    return tuple((x * support).sum(1) / total for x in (precision, recall, f1))  # type: ignore[return-value]


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``_pearson`` per row: 0.0 where either side is (nearly) constant."""
    sa, sb = a.std(1), b.std(1)
    cov = ((a - a.mean(1, keepdims=True)) * (b - b.mean(1, keepdims=True))).mean(1)
    ok = (sa >= 1e-8) & (sb >= 1e-8) & (a.shape[1] >= 2)
    return np.divide(cov, sa * sb, out=np.zeros_like(cov), where=ok)


def is_better(metric: str, candidate: float, best: float | None) -> bool:
    """``candidate`` beats ``best`` (None: nothing yet) in the direction that is better for ``metric``."""
    if candidate is None or np.isnan(candidate):
        return False
    if best is None:
        return True
    return candidate < best if metric in LOWER_IS_BETTER else candidate > best


# ----------------------------------------------------------------------------- inputs


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _as_1d_float(x: Any) -> np.ndarray:
    arr = _to_numpy(x).astype(np.float64).reshape(-1)
    if arr.size == 0:
        raise MetricInputError("no predictions/labels to score")
    return arr


def _as_labels(x: Any) -> np.ndarray:
    arr = _as_1d_float(x)
    if not np.all(arr == np.round(arr)):
        raise MetricInputError("class labels must be whole numbers")
    return arr.astype(np.int64)


def _class_preds(x: Any) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim == 2:
        arr = arr.argmax(axis=1)
    return _as_labels(arr)


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise MetricInputError(f"{a.shape[0]} predictions for {b.shape[0]} labels")
