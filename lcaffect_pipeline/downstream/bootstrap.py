"""How sure the ablation is: the paired difference between the with-LC and without-LC arms, with a
bootstrap confidence interval over test utterances, and the gains the paper reports beside it.

Both arms are tested on the same utterances, so the difference is paired: each bootstrap resample
draws test utterances with replacement and scores both arms on that same draw. An arm's value on
a draw is the mean over its seeds of the metric on the seeds' predictions (``metrics.json``
``predictions`` of ``lcaffect_ml.train_fusion``); for MUStARD's k-fold protocol the folds'
predictions are pooled (every utterance is tested once per seed). The interval is the percentile
interval of the resampled differences. Seeds vary the model; the resampling varies the test set:
the interval says how much the difference could move on another draw of utterances like these.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lcaffect_ml.metrics import resampled_metrics

N_BOOT = 1000
LEVEL = 0.95

# The gains the paper reports (points, its own setting: over the prior state of the art, with its
# encoders and data), shown beside the measured difference for orientation only.
PAPER_GAINS: dict[str, dict[str, float]] = {"chsims2": {"acc2": 3.18}, "meld": {"weighted_f1": 2.89},
                                            "mustard": {"weighted_f1": 3.0}}


class PairingError(ValueError):
    """The two arms' predictions cannot be paired (different labels for the same utterance)."""


def _arm(predictions: Mapping[str, Any], ids: list[str]) -> np.ndarray:
    """(seeds, n) predictions of ``ids``."""
    row = {u: i for i, u in enumerate(predictions["ids"])}
    order = [row[u] for u in ids]
    return np.asarray([np.asarray(p, dtype=np.float64)[order] for p in predictions["seeds"].values()])


def paired_bootstrap(task: str, with_lc: Mapping[str, Any] | None, without: Mapping[str, Any] | None, *,
                     n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> dict[str, dict[str, Any]] | None:
    """metric -> {"difference", "ci_low", "ci_high", "level", "n_boot", "n_utterances"} from the two
    arms' ``predictions``; None when either arm has none or they share no utterance."""
    if not with_lc or not without or not with_lc.get("seeds") or not without.get("seeds"):
        return None
    labels_w = dict(zip(with_lc["ids"], with_lc["labels"]))
    labels_wo = dict(zip(without["ids"], without["labels"]))
    ids = [u for u in with_lc["ids"] if u in labels_wo]
    if not ids:
        return None
    differ = [u for u in ids if labels_w[u] != labels_wo[u]]
    if differ:
        raise PairingError(f"{task}: the arms disagree on the labels of {len(differ)} utterances, e.g. {differ[:3]}")
    labels = np.asarray([labels_w[u] for u in ids], dtype=np.float64)
    n = len(ids)
    rng = np.random.default_rng(seed)
    idx = np.concatenate([np.arange(n)[None, :], rng.integers(0, n, (n_boot, n))])  # row 0: the test set itself
    arms = []
    for preds in (_arm(with_lc, ids), _arm(without, ids)):
        per_seed = [resampled_metrics(task, p, labels, idx) for p in preds]
        arms.append({m: np.mean([s[m] for s in per_seed], axis=0) for m in per_seed[0]})
    out = {}
    tail = 100 * (1 - level) / 2
    for metric in arms[0]:
        diff = arms[0][metric] - arms[1][metric]
        draws = diff[1:][np.isfinite(diff[1:])]
        low, high = (np.percentile(draws, [tail, 100 - tail]).tolist() if len(draws) else (float("nan"),) * 2)
        out[metric] = {"difference": float(diff[0]), "ci_low": float(low), "ci_high": float(high), "level": level,
                       "n_boot": n_boot, "n_utterances": n}
    return out
