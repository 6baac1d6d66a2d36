"""The demo world's claim on its downstream side, through the real dataset loader, media
preparation, feature extraction, fusion training and ablation report: features from a video
encoder that knows every scene's mood (what V2LC learns from the demo's comment corpus, made
here in seconds) beat the generic stand-ins on scenes the labelled set never shows, and the gain
disappears when those features are permuted across utterances (the wiring check).

That the real V2LC, trained by the main job on the demo corpus, learns the moods is shown by the
demo run itself (bench/README.md, "Demo world"); this test pins the half that a wiring bug would break.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import need_ffmpeg
from lcaffect_ml.extract_features import ExtractConfig, extract
from lcaffect_ml.tokenizer import build_char_tokenizer
from lcaffect_ml.train_fusion import train
from lcaffect_ml.fusion_data import FusionTrainConfig
from lcaffect_ml.v2lc import V2LCConfig, V2LCModel
from lcaffect_pipeline.demo_world import MOODS, SCENES
from lcaffect_pipeline.downstream import SCENE_SPLITS, generate_demo_downstream, load_dataset
from lcaffect_pipeline.downstream.ablation import ablation_table, metric_row
from lcaffect_pipeline.downstream.media import decode_utterance, prepare_media

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEEDS = [0, 1, 2]
FUSION = dict(d_model=64, ff_dim=128, epochs=30, batch_size=16, lr=3e-3,  # as configs/demo.yaml
              log_every=100, checkpoint_every=1000, device="cpu", precision="fp32")


def mood_encoder(pool: Path, out: Path) -> Path:
    """A tiny V2LC checkpoint whose video embedding points at its scene's mood, for every scene
    (the demo's comment corpus covers them all): a random video tower whose projection is fitted
    (ridge least squares) on the rendered scene clips to one direction per mood."""
    clips = sorted(pool.glob("scene*.mp4"))
    assert len(clips) == 2 * len(SCENES), clips
    frames = torch.from_numpy(np.stack([decode_utterance(p, 8, 32, 16_000)[0] for p in clips]))
    frames = torch.cat([frames[:, 0::2], frames[:, 1::2]])  # two 4-frame samples of each clip
    moods = torch.tensor([SCENES[int(p.name[5:7])].mood for p in clips] * 2)
    torch.manual_seed(0)
    words = [w for m in MOODS for w in m.words]
    wide = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4}  # room for 64 scenes
    model = V2LCModel.build(V2LCConfig(embed_dim=16, max_comments=5, text_max_length=12, video_overrides=wide),
                            tokenizer=build_char_tokenizer(words))
    directions = torch.linalg.qr(torch.randn(16, 16))[0][: len(MOODS)]  # orthonormal, one per mood
    with torch.no_grad():
        x = model.video_features(frames)
        w = torch.linalg.solve(x.t() @ x + 0.01 * torch.eye(x.shape[1]), x.t() @ directions[moods])
        model.video_proj.weight.copy_(w.t())
        fitted = (model.encode_video(frames) @ directions.t()).argmax(1)
    assert float((fitted == moods).float().mean()) >= 0.95
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    need_ffmpeg()
    root = tmp_path_factory.mktemp("transfer")
    folders = generate_demo_downstream(root / "data")
    table, report = prepare_media(load_dataset("chsims2", folders["chsims2"]), root / "media", frames=4, size=32)
    assert report.prepared and set(table.column("media_status").to_pylist()) == {"ok"}
    pq.write_table(table, root / "utterances.parquet")
    ckpt = mood_encoder(root / "data" / ".clip-pool", root / "v2lc")
    extract(ExtractConfig(utterances=str(root / "utterances.parquet"), output_dir=str(root / "features"),
                          v2lc_checkpoint=str(ckpt), max_audio_frames=16, device="cpu", precision="fp32",
                          progress=False))  # as configs/demo.yaml

    def fusion(name: str, features: Path, use_lc: bool) -> dict:
        return train(FusionTrainConfig.from_dict(dict(
            task="chsims2", utterances=str(root / "utterances.parquet"), features_dir=str(features),
            output_dir=str(root / name), use_lc=use_lc, seeds=SEEDS, **FUSION)))

    return {"with": fusion("with_lc", root / "features", True), "without": fusion("without_lc", root / "features", False)}


def test_labelled_splits_show_disjoint_scenes():
    train, valid, test = (set(SCENE_SPLITS[s]) for s in ("train", "valid", "test"))
    assert not (train & test or train & valid or valid & test) and len(train | valid | test) == len(SCENES)
    for split in (train, valid, test):  # every mood, positive and negative, in every split
        assert {SCENES[s].mood for s in split} == set(range(len(MOODS)))


def test_lc_features_carry_what_the_stand_ins_cannot_learn_from_the_labelled_set(runs):
    row = metric_row("acc2", runs["with"], runs["without"])
    # the margins: at least 5 points and 3 times the larger spread over 3 seeds
    assert row["difference"] >= 0.05 and row["gain_over_spread"] >= 3, row
    # the mood decides acc2, and the LC path knows it: 0.889 ± 0.010 on this Intel Xeon host, at or
    # above 0.9 on the AMD EPYC hosts before (CPU kernels round differently); the oracle itself is
    # held to 0.95 on the clip pool, and the stand-ins stay near chance (below)
    assert row["with"] >= 0.85, row
    assert row["without"] <= 0.75, row  # text, audio and frames cannot: about chance on new scenes


def test_the_gain_disappears_when_lc_features_are_permuted(runs):
    # the with-LC models tested on LC tokens shuffled across the test utterances: what they
    # gained came from each utterance's own features, so it is gone (and reported so)
    row = metric_row("acc2", runs["with"], runs["without"])
    assert row["permuted"] - row["without"] <= row["difference"] / 3, row
    table, markdown = ablation_table({"chsims2": {"with": runs["with"], "without": runs["without"]}}, demo=True)
    assert table["tasks"]["chsims2"]["metrics"]["acc2"]["seeds_permuted"].keys() == {"0", "1", "2"}
    assert f"{row['permuted']:.4f} ± {row['std_permuted']:.4f}" in markdown
