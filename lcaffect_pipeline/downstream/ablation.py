"""The ablation: each task's metrics with and without the synthetic live-comment (LC) features.

A plain function of the fusion programs' ``metrics.json`` files (``lcaffect_ml.train_fusion``:
per-seed values, mean and population std over seeds) and of the features' ``features.json``
(which encoders made them). The report keeps every per-seed value, so anyone can recompute the
margin, and says the difference in units of the larger of the two spreads over seeds: a gain
inside the spread is not evidence of anything. Where the with-LC runs also tested their models on
LC features shuffled across the test utterances (``lc_permuted``), that control is reported next
to them: a gain that survives the shuffle does not come from each utterance's own LC features.
A V2LC variant named ``SHUFFLED_ARM``, pretrained on comments shuffled across segments, is a second
control: its with-LC scores are copied beside the primary arm's (``shuffled_comments``).

Where both arms saved their test predictions (``predictions``), each metric also gets the paired
difference with a 95 % bootstrap interval over test utterances (``bootstrap.paired_bootstrap``),
and the headline metric the gain the paper reports (``bootstrap.PAPER_GAINS``), for orientation
only: the paper's gain is over the prior state of the art, with its encoders and data. Each task
also records how it was evaluated: its protocol, the folds used (MUStARD) and the dialogue
context its text features saw (``features.json["context"]``).

Stand-in encoders (``tiny``: random projections built in code, for tests and the demo) are never
used silently: a task whose features came from one is flagged in the JSON and in the Markdown
with words a reader cannot miss, unless the run is the demo, which is made of stand-ins.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .bootstrap import PAPER_GAINS, paired_bootstrap

HEADLINE = {"chsims2": "acc2", "meld": "weighted_f1", "mustard": "weighted_f1"}
METRICS = {"chsims2": ("acc2", "acc2_weak", "acc3", "acc5", "f1", "mae", "corr"), "meld": ("weighted_f1", "accuracy"),
           "mustard": ("weighted_precision", "weighted_recall", "weighted_f1")}
LOWER_IS_BETTER = {"mae"}
TINY = "tiny"
# The V2LC variant trained on comments shuffled across segments (``shuffle_comments``, a control):
# its with-LC scores go beside the primary arm's as ``shuffled_comments`` (its gain must vanish).
SHUFFLED_ARM = "shuffled_comments"


def stand_ins(features_meta: Mapping[str, Any] | None) -> list[str]:
    """Modalities whose features came from a stand-in encoder (``features.json["models"]``)."""
    models = (features_meta or {}).get("models", {})
    out = [name for name, spec in sorted(models.items()) if isinstance(spec, dict) and spec.get("name") == TINY]
    v2lc = models.get("v2lc") or {}
    if v2lc.get("video_encoder") == TINY:
        out.append("v2lc")
    return out


def metric_row(metric: str, with_lc: Mapping[str, Any], without: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per-seed values, mean ± std per arm, the difference and the margin in spreads, for one metric."""
    seeds_w = {str(s): v[metric] for s, v in with_lc.get("seeds", {}).items() if metric in v}
    seeds_wo = {str(s): v[metric] for s, v in without.get("seeds", {}).items() if metric in v}
    if not seeds_w or not seeds_wo:
        return None
    mean_w, std_w = _mean_std(seeds_w.values())
    mean_wo, std_wo = _mean_std(seeds_wo.values())
    diff = mean_w - mean_wo
    gain = -diff if metric in LOWER_IS_BETTER else diff
    spread = max(std_w, std_wo)
    row = {"with": mean_w, "without": mean_wo, "std_with": std_w, "std_without": std_wo, "difference": diff,
           "gain_over_spread": (gain / spread) if spread > 0 else (math.inf if gain > 0 else 0.0),
           "lower_is_better": metric in LOWER_IS_BETTER, "seeds_with": seeds_w, "seeds_without": seeds_wo}
    permuted = {str(s): v[metric] for s, v in with_lc.get("lc_permuted", {}).get("seeds", {}).items() if metric in v}
    if permuted:  # the with-LC models tested on LC features shuffled across utterances
        row["permuted"], row["std_permuted"] = _mean_std(permuted.values())
        row["seeds_permuted"] = permuted
    return row


def arm_rows(task: str, with_lc: Mapping[str, Any], without: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The metric rows of one with-LC arm against the without-LC runs, with the paired bootstrap
    interval where both saved predictions and the paper's gain beside each metric."""
    rows = {m: row for m in METRICS[task] if (row := metric_row(m, with_lc, without)) is not None}
    paired = paired_bootstrap(task, with_lc.get("predictions"), without.get("predictions")) or {}
    for metric, row in rows.items():
        row["paired"] = paired.get(metric)
        row["paper_gain_points"] = PAPER_GAINS.get(task, {}).get(metric)
    return rows


def add_shuffled(rows: Mapping[str, dict[str, Any]], shuffled: Mapping[str, Any]) -> None:
    """Each metric's with-LC mean, std and per-seed values of the shuffled-comment control arm."""
    for metric, row in rows.items():
        seeds = {str(s): v[metric] for s, v in shuffled.get("seeds", {}).items() if metric in v}
        if seeds:
            row["shuffled_comments"], row["std_shuffled_comments"] = _mean_std(seeds.values())
            row["seeds_shuffled_comments"] = seeds


def ablation_table(results: Mapping[str, Mapping[str, Any] | None], *, demo: bool = False) -> tuple[dict, str]:
    """``results``: task → {"with": metrics.json, "without": metrics.json, "features": features.json,
    and optionally "lc_variant" (the primary arm's V2LC variant) and "arms": {variant: {"with",
    "features"}}} (None or a missing arm: not available). Every arm other than the primary gets its
    own rows (``tasks[task]["arms"]``). Returns the JSON payload and its Markdown."""
    table: dict[str, Any] = {}
    lines = ["| task | metric | without LC | with LC | difference | paired difference [95 % CI] | paper | "
             "gain / larger std | LC permuted (control) | seeds |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    setups = []
    warnings = []
    for task in METRICS:
        entry = results.get(task) or {}
        with_lc, without = entry.get("with"), entry.get("without")
        if not with_lc or not without:
            lines.append(f"| {task} | not available | | | | | | | | |")
            continue
        flagged = stand_ins(entry.get("features"))
        primary = entry.get("lc_variant")
        others = {n: a for n, a in (entry.get("arms") or {}).items() if n != primary and a.get("with")}
        rows = arm_rows(task, with_lc, without)
        if SHUFFLED_ARM in others:
            add_shuffled(rows, others[SHUFFLED_ARM]["with"])
        table[task] = {"headline": HEADLINE[task], "metrics": rows, "stand_in_encoders": flagged, "lc_variant": primary,
                       "arms": {n: {"metrics": arm_rows(task, a["with"], without), "stand_in_encoders": stand_ins(a.get("features"))}
                                for n, a in others.items()},
                       **evaluation_setup(with_lc, entry.get("features"))}
        setups.append(f"{task}: {describe_setup(table[task])}")
        if flagged and not demo:
            warnings.append(f"**WARNING — {task}: features from STAND-IN encoders ({', '.join(flagged)}), "
                            "random projections built for tests, not real models. These numbers say nothing "
                            "about live comments.**")
        label = f"{task} · LC {primary}" if others else task
        lines += _markdown_rows(task, label, rows)
        for name, arm in table[task]["arms"].items():
            lines += _markdown_rows(task, f"{task} · LC {name}", arm["metrics"])
    if demo:
        warnings.append("Demo world: stand-in datasets and encoders (bench/README.md, \"Demo world\"); not real data.")
    notes = "\n".join(f"- {line}" for line in setups)
    body = "\n\n".join(part for part in ("\n".join(lines), notes) if part)
    return ({"tasks": table, "demo": demo, "warnings": warnings},
            "\n\n".join([*warnings, body]) if warnings else body)


def _markdown_rows(task: str, label: str, rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    out = []
    for metric, r in rows.items():
        name = f"**{metric}**" if metric == HEADLINE[task] else metric
        out.append(f"| {label} | {name}{' (lower is better)' if r['lower_is_better'] else ''} | "
                   f"{r['without']:.4f} ± {r['std_without']:.4f} | {r['with']:.4f} ± {r['std_with']:.4f} | "
                   f"{r['difference']:+.4f} | {_paired(r)} | {_paper(r)} | {r['gain_over_spread']:.1f} | {_permuted(r)} | "
                   f"{', '.join(r['seeds_with'])} |")
    return out


ROW_COLUMNS = ("task", "lc_variant", "metric", "headline", "without", "std_without", "with", "std_with", "difference",
               "ci_low", "ci_high", "permuted", "paper_gain")


def ablation_rows(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat record per task, LC arm (V2LC variant) and metric (``ROW_COLUMNS``) for a table view
    (the Dagster UI's); values absent for a row (no predictions, no control, no paper figure) are None."""
    rows = []
    for task, entry in table["tasks"].items():
        arms = {entry.get("lc_variant"): entry["metrics"], **{n: a["metrics"] for n, a in entry.get("arms", {}).items()}}
        for variant, metrics in arms.items():
            for metric, r in metrics.items():
                paired = r.get("paired") or {}
                gain = r.get("paper_gain_points")
                rows.append({"task": task, "lc_variant": variant, "metric": metric, "headline": metric == entry["headline"],
                             "without": r["without"], "std_without": r["std_without"], "with": r["with"],
                             "std_with": r["std_with"], "difference": r["difference"], "ci_low": paired.get("ci_low"),
                             "ci_high": paired.get("ci_high"), "permuted": r.get("permuted"),
                             "paper_gain": None if gain is None else gain / 100})
    return rows


def evaluation_setup(metrics: Mapping[str, Any], features: Mapping[str, Any] | None) -> dict[str, Any]:
    """How a task was evaluated: protocol, folds (MUStARD), the dialogue context of its text, the
    LC frame sampling and the released-feature splits left out (CH-SIMS v2's train_mix)."""
    models = (features or {}).get("models") or {}
    ignored = {s: why for spec in models.values() if isinstance(spec, dict) for s, why in spec.get("ignored_splits", {}).items()}
    return {"protocol": metrics.get("protocol"), "folds_used": metrics.get("folds_used"),
            "context": (features or {}).get("context") or (metrics.get("features") or {}).get("context"),
            "lc_frames": (models.get("v2lc") or {}).get("frame_sampling"), "ignored_splits": ignored}


def describe_setup(entry: Mapping[str, Any]) -> str:
    context = entry.get("context")
    said = ("context not recorded" if context is None else
            f"context on (up to {context['max_turns']} turns, {context['utterances_with_context']} utterances with "
            "context)" if context.get("used") else "context off")
    frames = entry.get("lc_frames") or {}
    lc = f"LC frames {frames['mode']} ({frames.get('effective_fps')} fps)" if frames else None
    ignored = f"released splits not used: {', '.join(entry['ignored_splits'])}" if entry.get("ignored_splits") else None
    return ", ".join(x for x in (f"protocol {entry.get('protocol')}", entry.get("folds_used"), said, lc, ignored) if x)


def _paired(row: Mapping[str, Any]) -> str:
    p = row.get("paired")
    return "n/a" if not p else f"{p['difference']:+.4f} [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]"


def _paper(row: Mapping[str, Any]) -> str:
    gain = row.get("paper_gain_points")
    return "" if gain is None else f"+{gain / 100:.4f} ({gain:g} pts)"  # the paper's points, in this table's units


def _permuted(row: Mapping[str, Any]) -> str:
    return f"{row['permuted']:.4f} ± {row['std_permuted']:.4f}" if "permuted" in row else "n/a"


def _mean_std(values) -> tuple[float, float]:
    vals = [float(v) for v in values]
    mean = sum(vals) / len(vals)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))  # population std, as train_fusion
