"""The text encoder's top layers fine-tuned inside the fusion model (``lcaffect_ml.text_tower``):
features taken below the top, the same sentence embedding as the frozen encoder before training,
the layers learned and saved with the model, and the configurations that cannot work refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lcaffect_ml.features import TextFeaturizer
from lcaffect_ml.fusion import FusionModel
from lcaffect_ml.fusion_data import DownstreamDataError, FusionTrainConfig, load_data
from lcaffect_ml.options import ConfigError
from lcaffect_ml.text_tower import TextTower, encoder_config
from lcaffect_ml.tokenizer import build_char_tokenizer
from lcaffect_ml.train_fusion import train
from test_modalities import WORDS, _extract, _text_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    """A tiny 3-layer BERT saved as a local model folder (a hub name's offline form), built in code."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = [w for words in WORDS.values() for w in words] + ["this is and turn a b 0123456789"]
    tokenizer = build_char_tokenizer(texts, model_max_length=64)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32,
                         num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64), add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _padded(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(len(rows), max(r.shape[0] for r in rows), rows[0].shape[1])
    for i, r in enumerate(rows):
        x[i, : r.shape[0]] = torch.from_numpy(r)
    return x, torch.tensor([r.shape[0] for r in rows])


@pytest.mark.parametrize("layers", [1, 3])
def test_the_tower_over_hidden_states_below_the_top_gives_the_frozen_sentence_embedding(encoder, layers):
    texts = ["great and lovely", ("awful", "turn a 1 turn b"), "sad"]
    frozen = np.stack([v[0] for v in TextFeaturizer(encoder, [], pooling="mean")(texts)])
    below = TextFeaturizer(encoder, [], layers_below_top=layers)(texts)
    tower = TextTower(encoder_config(encoder), layers)
    tower.load_pretrained(encoder)
    tower.eval()
    with torch.no_grad():
        got = tower(*_padded(below))
    assert got.shape == (3, 1, 32)
    want = torch.nn.functional.layer_norm(torch.from_numpy(frozen), (32,))
    torch.testing.assert_close(got[:, 0], want, rtol=1e-4, atol=1e-4)
    # an untrained tower (what a wiring slip would leave) misses it by far more than the tolerance
    with torch.no_grad():
        fresh = TextTower(encoder_config(encoder), layers).eval()(*_padded(below))
    assert (fresh[:, 0] - want).abs().max() > 1e-2


def test_fusion_fine_tunes_the_top_layer_and_saves_it_with_the_model(encoder, tmp_path):
    table = _text_table(tmp_path / "data", n=60)
    feats = tmp_path / "feats"
    meta = _extract(table, feats, text_model=encoder, text_layers_below_top=1, context_turns=1)
    assert meta["models"]["text"]["layers_below_top"] == 1
    out = tmp_path / "out"
    metrics = train(FusionTrainConfig.from_dict(dict(
        task="mustard", utterances=str(table), features_dir=str(feats), output_dir=str(out), use_lc=False,
        modalities=["text"], epochs=12, batch_size=8, lr=1e-3, text_tune_layers=1, text_tune_lr=1e-3, seeds=[0])))
    assert metrics["mean"]["weighted_f1"] > 0.75  # the label is in the words; the majority class scores 0.33
    saved = json.loads((out / "config.json").read_text())
    assert saved["text_tower"]["layers"] == 1 and saved["text_tower"]["model"] == encoder
    weights = load_file(str(out / "model.safetensors"))
    from transformers import AutoModel

    top = AutoModel.from_pretrained(encoder).encoder.layer[2].state_dict()
    tuned = {k.removeprefix("text_tower.layers.0."): v for k, v in weights.items() if k.startswith("text_tower.layers.0.")}
    assert set(tuned) == set(top)
    assert max(float((tuned[k] - top[k]).abs().max()) for k in top) > 1e-3  # the layer was trained, not frozen
    # the model reloads from its own folder, the tuned layer included, without the encoder's weights
    model = FusionModel.from_pretrained(out)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_tuning_needs_features_taken_below_the_top_of_a_pretrained_encoder(encoder, tmp_path):
    table = _text_table(tmp_path / "data", n=20)
    frozen = tmp_path / "frozen"
    _extract(table, frozen, text_model=encoder)
    common = dict(task="mustard", utterances=str(table), output_dir="o", use_lc=False, modalities=["text"])
    with pytest.raises(DownstreamDataError, match=r"frozen/features.json: text_tune_layers 1 needs .* 0 below"):
        load_data(FusionTrainConfig.from_dict({**common, "features_dir": str(frozen), "text_tune_layers": 1}))
    below = tmp_path / "below"
    _extract(table, below, text_model=encoder, text_layers_below_top=2)
    with pytest.raises(DownstreamDataError, match="2 below"):
        load_data(FusionTrainConfig.from_dict({**common, "features_dir": str(below), "text_tune_layers": 1}))
    tiny = tmp_path / "tiny"
    _extract(table, tiny)
    with pytest.raises(DownstreamDataError, match="pretrained encoder"):
        load_data(FusionTrainConfig.from_dict({**common, "features_dir": str(tiny), "text_tune_layers": 1}))
    with pytest.raises(ConfigError, match="text_pooling tokens"):
        _extract(table, tmp_path / "x", text_model=encoder, text_layers_below_top=1, text_pooling="mean")
    with pytest.raises(ValueError, match="out of range"):
        TextFeaturizer(encoder, [], layers_below_top=4)
    with pytest.raises(ConfigError, match="text_tune_layers"):
        FusionTrainConfig.from_dict({**common, "features_dir": "f", "text_tune_layers": -1})
