"""The unseen-videos demo world: three disjoint scene pools (checked from the generated files),
moods that follow the pattern, labels that follow the recorded scene, and pixels that show it."""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lcaffect_pipeline import demo_unseen
from lcaffect_pipeline.demo_world import SCENES_FILE, generate_demo_world
from lcaffect_pipeline.downstream.demo_datasets import demo_label, generate_demo_downstream, text_cue


def _scene(key: str) -> demo_unseen.UnseenScene:
    pool, index = key.rsplit("-", 1)
    return demo_unseen.scene(pool, int(index))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("unseen")
    generate_demo_world(root / "corpus", 40, segments=8, with_videos=False, world="unseen")
    generate_demo_downstream(root / "downstream", with_media=False, world="unseen")
    return root


def test_corpus_training_and_test_scenes_are_three_disjoint_pools(world):
    corpus = json.loads((world / "corpus" / SCENES_FILE).read_text())
    corpus_keys = [k for keys in corpus.values() for k in keys]
    assert len(corpus_keys) == 320 == len(set(corpus_keys))  # one fresh scene per segment: held-out videos are new too
    downstream = json.loads((world / "downstream" / SCENES_FILE).read_text())
    by_split = collections.defaultdict(set)
    for task, utterances in downstream.items():
        sarcasm = json.loads((world / "downstream" / "mustard" / "sarcasm_data.json").read_text())
        for uid, key in utterances.items():
            if task == "mustard":
                split = "test" if sarcasm[uid]["show"] == "FRIENDS" else "train"  # the speaker-independent test show
            else:
                split = "test" if uid.startswith(("demo_test", "test/")) else "train"
            by_split[split].add(key)
    assert by_split["train"] and by_split["test"]
    assert not set(corpus_keys) & (by_split["train"] | by_split["test"])  # no labelled scene had a comment
    assert not by_split["train"] & by_split["test"]
    # the scenes themselves differ, not only their names
    params = lambda keys: {(s.pattern, s.colours, s.period, s.phase) for s in map(_scene, keys)}  # noqa: E731
    assert not params(corpus_keys) & params(by_split["test"]) and not params(by_split["train"]) & params(by_split["test"])


def test_labels_follow_the_recorded_scene_and_moods_follow_the_pattern(world):
    keys = json.loads((world / "downstream" / SCENES_FILE).read_text())["chsims2"]
    with open(world / "downstream" / "chsims2" / "label.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(keys)
    for row in rows:
        scene = _scene(keys[f"{row['video_id']}/{row['clip_id']}"])
        assert float(row["label"]) == demo_label("chsims2", text_cue("chsims2", row["text"]), scene)
    scenes = [demo_unseen.scene("corpus", i) for i in range(1000)]
    agree = sum(s.mood == s.pattern for s in scenes) / len(scenes)
    assert 1 - demo_unseen.MOOD_NOISE - 0.04 < agree < 1 - demo_unseen.MOOD_NOISE * 0.75 + 0.04  # noisy, not random
    assert set(collections.Counter(s.pattern for s in scenes)) == set(range(len(demo_unseen.PATTERNS)))


def test_frames_show_the_pattern_in_the_scene_colours():
    s = demo_unseen.scene("test", 3)
    a = demo_unseen.frames(s, 2, width=64, height=48, fps=10, seed=0)
    assert a.shape == (2, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, demo_unseen.frames(s, 2, width=64, height=48, fps=10, seed=0))  # deterministic
    colours = np.array([demo_unseen.PALETTE[c][1] for c in s.colours], dtype=float)
    nearest = np.abs(a[0].reshape(-1, 1, 3).astype(float) - colours[None]).max(-1).min(-1)
    assert nearest.max() <= demo_unseen.NOISE + 1  # every pixel is one of the two colours, under the noise
    horizontal = demo_unseen.UnseenScene("x", 0, 0, 0, s.colours, 0.5, 0.0, 0.0)
    rows = demo_unseen.frames(horizontal, 1, width=64, height=48, fps=10, seed=0)[0].astype(float)
    assert rows.std(axis=1).mean() < rows.std(axis=0).mean()  # stripes: uniform along a row, not down a column
    with pytest.raises(ValueError, match="unknown scene pool"):
        demo_unseen.scene("elsewhere", 0)


HEADLINE = {"chsims2": "acc2", "meld": "weighted_f1", "mustard": "weighted_f1"}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_job_transfers_to_unseen_videos_and_the_shuffled_control_does_not(tmp_path):
    """configs/demo_unseen.yaml end to end, no oracle: the real V2LC training (loader, comment
    sampling, loss), the features, the fusion over 3 seeds and the report, for all three tasks.
    About 10 minutes on 2 CPU cores (bench/README.md, "Demo world: transfer to unseen videos")."""
    import dagster as dg
    import yaml

    from conftest import manifest, need_ffmpeg
    from lcaffect_pipeline.definitions import defs

    need_ffmpeg()
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "demo_unseen.yaml").read_text())
    config["resources"]["lake"]["config"]["root"] = str(tmp_path)
    result = defs.resolve_job_def("full_pipeline").execute_in_process(
        run_config=config, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    encoder = manifest(tmp_path, "v2lc_encoder")["variants"]
    learnt, shuffled = encoder["v2lc"]["metrics"], encoder["shuffled_comments"]["metrics"]
    assert learnt["v2c_r1"] >= 10 * learnt["chance_r1"], learnt  # held-out videos show corpus scenes it never trained on
    assert shuffled["v2c_r1"] < 3 * shuffled["chance_r1"], shuffled
    tasks = json.loads((tmp_path / "ablation.json").read_text())["tasks"]
    for task, name in HEADLINE.items():
        m = tasks[task]["metrics"][name]
        spread = max(m["std_with"], m["std_without"])
        gain = m["with"] - m["without"]
        assert gain >= 0.05 and gain >= 3 * spread, (task, m)  # the margins, over 3 seeds
        # the control: V2LC on shuffled comments gives the fusion nothing (no gain above one std)
        assert m["shuffled_comments"] - m["without"] <= max(m["std_shuffled_comments"], m["std_without"]), (task, m)
