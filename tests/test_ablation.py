"""The ablation report: per-seed values, mean ± std per arm, the difference in spreads, stand-ins flagged."""

from __future__ import annotations

import math

import pytest

from lcaffect_pipeline.downstream.ablation import ablation_table, metric_row, stand_ins


def _metrics(values: dict[int, float], metric="weighted_f1") -> dict:
    return {"seeds": {str(s): {metric: v} for s, v in values.items()}, "protocol": None}


REAL = {"models": {"text": {"name": "roberta-base"}, "audio": {"name": "facebook/wav2vec2-base"},
                   "visual": {"name": "openai/clip-vit-base-patch32"}, "v2lc": {"video_encoder": "base"}}}
TINY = {"models": {"text": {"name": "tiny"}, "audio": {"name": "facebook/wav2vec2-base"},
                   "visual": {"name": "tiny"}, "v2lc": {"video_encoder": "tiny"}}}


def test_row_keeps_every_seed_and_measures_the_gain_in_spreads():
    row = metric_row("weighted_f1", _metrics({0: 0.80, 1: 0.84, 2: 0.82}), _metrics({0: 0.60, 1: 0.62, 2: 0.58}))
    assert row["seeds_with"] == {"0": 0.80, "1": 0.84, "2": 0.82}
    assert row["with"] == pytest.approx(0.82) and row["without"] == pytest.approx(0.60)
    assert row["std_with"] == pytest.approx(math.sqrt((0.02**2 * 2) / 3))  # population std, as train_fusion
    assert row["difference"] == pytest.approx(0.22)
    assert row["gain_over_spread"] == pytest.approx(0.22 / max(row["std_with"], row["std_without"]))


def test_lower_is_better_metrics_count_a_drop_as_a_gain():
    row = metric_row("mae", _metrics({0: 0.3, 1: 0.5}, "mae"), _metrics({0: 0.6, 1: 0.8}, "mae"))
    assert row["difference"] == pytest.approx(-0.3) and row["gain_over_spread"] == pytest.approx(3.0)
    worse = metric_row("mae", _metrics({0: 0.6, 1: 0.8}, "mae"), _metrics({0: 0.3, 1: 0.5}, "mae"))
    assert worse["gain_over_spread"] == pytest.approx(-3.0)


def test_stand_in_encoders_are_flagged_outside_the_demo_and_named():
    assert stand_ins(REAL) == []
    assert stand_ins(TINY) == ["text", "visual", "v2lc"]
    results = {"meld": {"with": _metrics({0: 0.7}), "without": _metrics({0: 0.6}), "features": TINY}}
    table, md = ablation_table(results)
    assert table["tasks"]["meld"]["stand_in_encoders"] == ["text", "visual", "v2lc"]
    assert "WARNING" in md and "STAND-IN" in md and "meld" in table["warnings"][0]
    table, md = ablation_table({"meld": {**results["meld"], "features": REAL}})
    assert table["warnings"] == [] and "WARNING" not in md
    table, md = ablation_table(results, demo=True)  # the demo is made of stand-ins: said once, as such
    assert "WARNING" not in md and "Demo world" in md


def test_missing_arm_is_not_available_not_zero():
    table, md = ablation_table({"meld": {"with": _metrics({0: 0.7}), "without": None}})
    assert "meld" not in table["tasks"] and "| meld | not available |" in md
    assert "| chsims2 | not available |" in md


def test_shuffled_comment_arm_goes_beside_the_primary_arm():
    shuffled = _metrics({0: 0.61, 1: 0.59, 2: 0.60})
    results = {"meld": {"with": _metrics({0: 0.80, 1: 0.82, 2: 0.84}), "without": _metrics({0: 0.60, 1: 0.62, 2: 0.58}),
                        "lc_variant": "v2lc", "arms": {"shuffled_comments": {"with": shuffled}}}}
    row = ablation_table(results, demo=True)[0]["tasks"]["meld"]["metrics"]["weighted_f1"]
    assert row["shuffled_comments"] == pytest.approx(0.60)
    assert row["std_shuffled_comments"] == pytest.approx(math.sqrt(0.0002 / 3))
    assert row["seeds_shuffled_comments"] == {"0": 0.61, "1": 0.59, "2": 0.60}
    other = {"meld": {**results["meld"], "arms": {"zh": {"with": shuffled}}}}  # any other arm is no control
    assert "shuffled_comments" not in ablation_table(other, demo=True)[0]["tasks"]["meld"]["metrics"]["weighted_f1"]
