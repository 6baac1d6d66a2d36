"""The v2lc_encoder asset: the training program through Dagster Pipes, reuse, retry-resume."""

import json
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS_ASSETS
from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS_ASSETS
from lcaffect_pipeline.defs.model_assets import ASSETS as MODEL_ASSETS
from lcaffect_pipeline.defs.model_assets import launch_command
from lcaffect_pipeline.v2lc_runs import k8s_pod_spec
from faults import command as faults_command
from lcaffect_pipeline.defs.resources import V2LCTrainingResource

from conftest import demo_resources, manifest, need_ffmpeg


def resources(root: Path, training: V2LCTrainingResource) -> dict:
    return demo_resources(root, v2lc_training=training)


def tiny(**kw) -> V2LCTrainingResource:
    return V2LCTrainingResource(max_steps=6, batch_size=4, warmup_steps=1, checkpoint_every=2, num_workers=0, eval_fraction=0.25, **kw)


def mat(result, key="v2lc_encoder"):
    return [e.materialization for e in result.get_asset_materialization_events() if e.materialization.asset_key.to_user_string() == key]


@pytest.fixture(scope="module")
def shards_lake(tmp_path_factory):
    need_ffmpeg()
    root = tmp_path_factory.mktemp("lake")
    assert dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS], resources=resources(root, tiny())).success
    return root


def test_training_through_pipes_then_reuse(shards_lake: Path) -> None:
    res = resources(shards_lake, tiny())
    first = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=res, selection=["v2lc_encoder"])
    assert first.success
    (m,) = mat(first)
    assert {"v2c_r1", "c2v_r1", "chance_r1", "steps"} <= set(m.metadata)
    assert m.metadata["steps"].value == 6
    checks = first.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["retrieval_above_chance"]
    out = Path(m.metadata["checkpoint"].value).parents[1]  # output_dir/checkpoints/step-N
    assert (out / "model.safetensors").exists() and (out / "metrics.json").exists()
    second = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=res, selection=["v2lc_encoder"])
    (m2,) = mat(second)
    assert m2.metadata["reused"].value is True
    assert m2.tags["dagster/data_version"] == m.tags["dagster/data_version"]


def test_a_retried_step_resumes_from_its_checkpoint(shards_lake: Path, tmp_path: Path) -> None:
    # The first attempt is killed (SIGKILL) right after step 4; the step's retry resumes there.
    marker = tmp_path / "killed-once"
    train = f"{sys.executable} -m lcaffect_ml.train_v2lc"
    killed = " ".join(faults_command("lcaffect_ml.train_v2lc", kill_after_step=4))  # a test-only wrapper
    script = f'if [ -e {marker} ]; then exec {train} "$@"; else touch {marker}; exec {killed} "$@"; fi'
    cmd = ["bash", "-c", script, "train"]
    res = resources(shards_lake, tiny(seed=1, command=cmd))
    result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=res, selection=["v2lc_encoder"], raise_on_error=False)
    assert result.success
    (m,) = mat(result)
    metrics = json.loads((Path(m.metadata["checkpoint"].value).parents[1] / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 4 and metrics["steps"] == 6


def test_launch_variants() -> None:
    cfg = Path("/x/train_config.yaml")
    assert launch_command(V2LCTrainingResource(), cfg)[1:] == ["-m", "lcaffect_ml.train_v2lc", "--config", str(cfg)]
    multi = launch_command(V2LCTrainingResource(gpus=4), cfg)
    assert "torch.distributed.run" in multi and "--nproc_per_node=4" in multi
    spec = k8s_pod_spec(2)
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_two_variants_train_side_by_side_on_their_own_selections(shards_lake: Path) -> None:
    variants = {"zh": {"languages": ["ZH"], "platforms": ["bilibili"]}, "seed-1": {"options": {"seed": 1, "max_steps": 4}}}
    res = resources(shards_lake, tiny(variants_json=json.dumps(variants)))
    result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=res, selection=["v2lc_encoder"])
    assert result.success
    (m,) = mat(result)
    value = manifest(shards_lake, "v2lc_encoder")  # lake paths resolved
    assert set(value["variants"]) == {"zh", "seed-1"} and value["variant"] == "zh"  # the first listed
    zh, seed1 = value["variants"]["zh"], value["variants"]["seed-1"]
    assert value["output_dir"] == zh["output_dir"] != seed1["output_dir"]  # downstream reads the first
    assert json.loads((Path(seed1["output_dir"]) / "metrics.json").read_text())["steps"] == 4  # its own options
    assert zh["groups"]["by_platform"].keys() == {"bilibili"} and zh["groups"]["by_language"].keys() == {"zh"}
    (zh_index,) = (shards_lake / "shards").glob("index.v2lc-zh-*.json")  # content-addressed, beside index.json
    index = json.loads(zh_index.read_text())
    assert index and {(e["platform"], e["language"]) for e in index} == {("bilibili", "zh")}
    assert yaml.safe_load((Path(zh["output_dir"]) / "train_config.yaml").read_text())["shards"] == str(zh_index)
    shards = manifest(shards_lake, "training_shards")
    assert value["reads"] == {"training_shards": shards["manifest_id"]} and "training_shards" in m.metadata["lineage"].value
    assert set(m.metadata["variants"].value) == {"zh", "seed-1"}
    (check,) = result.get_asset_check_evaluations()
    assert {"zh_v2c_r1", "seed-1_v2c_r1"} <= set(check.metadata)


def test_a_narrow_and_a_diverse_variant_of_equal_size_train_side_by_side(shards_lake: Path) -> None:
    """configs/diversity.example.yaml's comparison on the demo world (4 videos of 5 segments: two
    Bilibili, one Niconico, one YouTube), with its variants' selections and tiny training options."""
    cfg = yaml.safe_load((Path(__file__).parents[1] / "configs" / "diversity.example.yaml").read_text())["resources"]
    # the demo's size, and its one genre in place of the narrow variant's
    variants = {name: {**spec, "segments": 10, **({"genres": ["demo-scenes"]} if "genres" in spec else {})}
                for name, spec in json.loads(cfg["v2lc_training"]["config"]["variants_json"]).items()}
    res = resources(shards_lake, tiny(variants_json=json.dumps(variants), split_group="video"))
    result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=res, selection=["v2lc_encoder"])
    assert result.success
    indexes = {name: json.loads(next((shards_lake / "shards").glob(f"index.v2lc-{name}-*.json")).read_text())
               for name in variants}
    assert {n: sum(e["samples"] for e in index) for n, index in indexes.items()} == {"narrow": 10, "diverse": 10}
    assert {e["platform"] for e in indexes["narrow"]} == {"bilibili"}
    assert len({e["platform"] for e in indexes["diverse"]}) == 2  # this seed draws two platforms' videos
    (m,) = mat(result)
    side_by_side = m.metadata["variants"].value
    assert {n: v["split_group"] for n, v in side_by_side.items()} == {"narrow": "video", "diverse": "video"}
    assert m.metadata["split_group"].value == "video"


def test_a_variant_pretrained_without_a_platform_is_evaluated_on_it(shards_lake: Path) -> None:
    """configs/unseen_platform.example.yaml's variants on the demo world (its third video is Niconico's)."""
    cfg = yaml.safe_load((Path(__file__).parents[1] / "configs" / "unseen_platform.example.yaml").read_text())["resources"]
    variants = cfg["v2lc_training"]["config"]["variants_json"]  # the towers: the demo's stand-ins
    result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=resources(shards_lake, tiny(variants_json=variants)),
                            selection=["v2lc_encoder"])
    assert result.success
    value = manifest(shards_lake, "v2lc_encoder")
    metrics = {n: json.loads((Path(v["output_dir"]) / "metrics.json").read_text()) for n, v in value["variants"].items()}
    without, with_ = metrics["without-niconico"], metrics["with-niconico"]
    assert set(without["by_platform"]) == {"niconico"} and without["split_group"] == "platform"
    assert without["train_videos"] == 3 and without["test_videos"] == 1  # no Niconico video in its training
    assert with_["train_videos"] + with_["test_videos"] == 4 and with_["split_group"] == "video"


def test_a_variant_that_selects_nothing_fails_naming_it(shards_lake: Path) -> None:
    res = resources(shards_lake, tiny(variants_json='{"ja": {"languages": ["ja"]}}'))
    result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=res, selection=["v2lc_encoder"],
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "variant 'ja' selects no shard" in str(failure.event_specific_data.error)
    bad = resources(shards_lake, tiny(variants_json='{"Bad Name": {}}'))
    result = dg.materialize([*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS], resources=bad, selection=["v2lc_encoder"],
                            raise_on_error=False)
    assert not result.success
