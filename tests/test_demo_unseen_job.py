"""The unseen-videos world end to end without an oracle: the real corpus, clips, V2LC training
(loader, comment sampling, loss), feature extraction, fusion and ablation report, for CH-SIMS v2,
MELD and MUStARD, on a smaller copy of configs/demo_unseen.yaml (fewer corpus videos).

No labelled or test scene had a comment, so the with-LC gain can only come from what V2LC learned
on the corpus; the arm pretrained on shuffled comments has the same data and recipe and must not
show that gain. A bug in any of those steps (frames not matching their comments, features
extracted from the wrong checkpoint, LC rows misaligned with utterances) breaks the margins."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from conftest import demo_resources, need_ffmpeg
from lcaffect_pipeline.defs import resources as r
from lcaffect_pipeline.downstream.ablation import HEADLINE, SHUFFLED_ARM
from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS_ASSETS
from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS_ASSETS
from lcaffect_pipeline.defs.downstream_assets import ASSETS as DOWNSTREAM_ASSETS
from lcaffect_pipeline.defs.model_assets import ASSETS as MODEL_ASSETS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo_unseen.yaml"
# fewer corpus videos; V2LC keeps the config's steps: with 400 it had not left the loss plateau
# (mean of the last 10 losses 3.56, held-out R@1 at chance; 2026-12-05)
SMALLER = {"catalogue": {"demo_videos": 48}}
MARGIN = 0.05  # the bar: with-LC beats without-LC by 5 points on every headline metric


def resources(root: Path) -> dict:
    """configs/demo_unseen.yaml's resources, with SMALLER's options replacing its own."""
    config = yaml.safe_load(CONFIG.read_text())["resources"]
    classes = {"catalogue": r.CatalogueResource, "crawler": r.CrawlerResource, "clips": r.ClipsResource,
               "v2lc_training": r.V2LCTrainingResource, "downstream": r.DownstreamResource}
    return demo_resources(root, **{name: cls(**{**config[name]["config"], **SMALLER.get(name, {})})
                                   for name, cls in classes.items()})


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    need_ffmpeg()
    root = tmp_path_factory.mktemp("unseen-job")
    assets = [*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS, *DOWNSTREAM_ASSETS]
    assert dg.materialize(assets, resources=resources(root)).success
    return json.loads((root / "ablation.json").read_text())["tasks"]


@pytest.mark.parametrize("task", sorted(HEADLINE))
def test_comments_on_other_videos_help_on_unseen_ones_and_shuffled_comments_do_not(ablation, task):
    row = ablation[task]["metrics"][HEADLINE[task]]
    gain, spread = row["with"] - row["without"], max(row["std_with"], row["std_without"])
    assert gain >= MARGIN and gain >= 3 * spread, row
    # the control learned from the same videos and comments, paired at random: no gain beyond 1 std
    assert row[SHUFFLED_ARM] - row["without"] <= max(row["std_without"], row[f"std_{SHUFFLED_ARM}"]), row
