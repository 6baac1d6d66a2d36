"""Run folders, reuse decisions, the comment bank and the ablation as plain functions
(``lcaffect_pipeline.v2lc_runs``, ``lcaffect_pipeline.downstream.runs``): no Dagster involved."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lcaffect_ml.contracts.runs import RunFolderError
from lcaffect_pipeline import v2lc_runs
from lcaffect_pipeline.downstream import runs


def _features(folder: Path, base: str = "b1", lc: str = "l1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features.json").write_text(json.dumps({"base_version": base, "lc_version": lc}))
    return folder


def test_every_downstream_asset_name_is_written_out() -> None:
    for task in runs.TASKS:
        names = runs.TASK_ASSETS[task]
        assert names == {"utterances": f"{task}_utterances", "features": f"{task}_features",
                         "with_lc": f"{task}_fusion_with_lc", "without_lc": f"{task}_fusion_without_lc"}
        assert runs.fusion_name(task, True) == names["with_lc"] and runs.fusion_name(task, False) == names["without_lc"]


def test_the_defs_use_those_names() -> None:
    from lcaffect_pipeline.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {n for t in runs.TASKS for n in runs.TASK_ASSETS[t].values()} | {runs.ABLATION_ASSET} <= keys


def test_fusion_run_folder_follows_config_and_feature_versions(tmp_path) -> None:
    feats = _features(tmp_path / "downstream" / "meld" / "features")
    cfg = runs.fusion_config("meld", True, "u.parquet", feats, [0, 1], {"epochs": 3}, "speaker_independent")
    assert cfg["pipes_asset_key"] == "meld_fusion_with_lc" and "protocol" not in cfg  # MUStARD only
    first = runs.fusion_run_dir(tmp_path, "meld", cfg, "utt-v1")
    assert first.parent == tmp_path / "downstream" / "meld" / "meld_fusion_with_lc" and len(first.name) == 16
    assert runs.fusion_run_dir(tmp_path, "meld", dict(cfg), "utt-v1") == first  # same inputs, same folder: reuse
    assert runs.fusion_run_dir(tmp_path, "meld", cfg, "utt-v2") != first  # a new utterance table: a new run
    _features(feats, lc="l2")
    assert runs.fusion_run_dir(tmp_path, "meld", cfg, "utt-v1") != first  # a new V2LC checkpoint: a new run
    mustard = runs.fusion_config("mustard", False, "u.parquet", feats, [0], {}, "speaker_dependent")
    assert mustard["protocol"] == "speaker_dependent"


def test_only_a_finished_fusion_run_is_reused(tmp_path) -> None:
    out = tmp_path / "downstream" / "chsims2" / "chsims2_fusion_without_lc" / "k"
    out.mkdir(parents=True)
    assert runs.finished_fusion(out) is None
    (out / "model.safetensors").write_bytes(b"weights")
    (out / "metrics.json").write_text(json.dumps({"mean": {"acc2": 0.75}, "seeds": {}}))
    with pytest.raises(RunFolderError, match="model_sha256"):  # from a program that did not record it
        runs.finished_fusion(out)
    sha = hashlib.sha256(b"weights").hexdigest()
    (out / "metrics.json").write_text(json.dumps({"mean": {"acc2": 0.75}, "seeds": {}, "model_sha256": sha}))
    values, version = runs.finished_fusion(out)  # the version as recorded: the weights are not hashed again
    assert values == {"acc2": 0.75} and version == sha


def test_ablation_reads_the_runs_the_fusion_values_name(tmp_path) -> None:
    feats = _features(tmp_path / "feats", base="b9")
    good, other = tmp_path / "good", tmp_path / "other"
    for folder, acc in ((good, 0.75), (other, 0.5)):
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"mean": {"acc2": acc}}))
    values = {"chsims2_without_lc": {"available": True, "output_dir": str(good), "features_dir": str(feats)},
              "chsims2_with_lc": {"available": True, "output_dir": str(tmp_path / "unfinished"), "features_dir": str(feats)},
              "meld_with_lc": {"available": False, "reason": "no root"}}
    inputs = runs.ablation_inputs(values)
    assert inputs["chsims2"]["without"]["mean"] == {"acc2": 0.75}  # the named run, not any other in the lake
    assert inputs["chsims2"]["with"] is None and inputs["chsims2"]["features"]["base_version"] == "b9"
    empty = {"with": None, "without": None, "features": None, "lc_variant": None, "arms": {}}
    assert inputs["meld"] == empty and inputs["mustard"] == empty


def test_ablation_report_without_runs_says_not_available(tmp_path) -> None:
    report = runs.write_ablation(tmp_path, runs.ablation_inputs({}), demo=False)
    assert report["table"]["tasks"] == {} and report["headline"] == {}
    payload = (tmp_path / "ablation.json").read_bytes()
    assert report["data_version"] == hashlib.sha256(payload).hexdigest()[:32]
    assert "| meld | not available |" in (tmp_path / "ablation.md").read_text()


def test_comment_bank_is_the_distinct_clean_texts(tmp_path) -> None:
    assert runs.comment_bank(tmp_path) is None  # no corpus yet
    from lcaffect_pipeline import schema, tables

    def version(texts_by_video):
        changes = {}
        for vid, texts in texts_by_video.items():
            rows = [dict(platform="bilibili", video_id=vid, comment_id=str(i), offset_ms=i, text=t, mode="scroll",
                         superchat=False, source_file="f") for i, t in enumerate(texts)]
            changes[vid] = tables.write(tmp_path, "clean_comments", pa.Table.from_pylist(rows, schema=schema.CLEAN_COMMENTS_SCHEMA), vid)
        tables.commit(tmp_path, "clean_comments", changes)

    version({"a": ["好看", "哈哈"], "b": ["好看", "泪目"]})
    version({"b": ["加油"]})  # b's earlier file stays in the lake, not in the current version
    bank = runs.comment_bank(tmp_path)
    assert pq.read_table(bank).column("text").to_pylist() == sorted({"好看", "哈哈", "加油"})


def test_v2lc_run_folder_ignores_the_output_dir_and_follows_the_config(tmp_path) -> None:
    cfg = v2lc_runs.training_config({"lr": 1e-3, "gpus": 2, "extra_json": '{"max_steps": 5}', "seed": None},
                                 ("gpus",), "idx.json", tmp_path / "x")
    assert cfg == {"lr": 1e-3, "max_steps": 5, "shards": "idx.json", "output_dir": str(tmp_path / "x"),
                   "pipes_asset_key": "v2lc_encoder"}
    first = v2lc_runs.run_dir(tmp_path, "shards-v1", cfg)
    assert v2lc_runs.run_dir(tmp_path, "shards-v1", {**cfg, "output_dir": "elsewhere"}) == first
    assert v2lc_runs.run_dir(tmp_path, "shards-v1", {**cfg, "lr": 2e-3}) != first
    # new shard data at the same index path trains anew (the path must not hide the version)
    assert v2lc_runs.run_dir(tmp_path, "shards-v2", cfg) != first


def test_finished_v2lc_run_is_reused_and_is_the_assets_value(tmp_path) -> None:
    out = tmp_path / "models" / "v2lc" / "k"
    (out / "checkpoints" / "step-10").mkdir(parents=True)
    (out / "checkpoints" / "step-9").mkdir()
    assert v2lc_runs.finished_run(out) is None
    (out / "model.safetensors").write_bytes(b"w")
    (out / "metrics.json").write_text(json.dumps({"v2c_r1": 0.2, "chance_r1": 0.1}))
    with pytest.raises(RunFolderError, match="model_sha256"):  # from a program that did not record it
        v2lc_runs.finished_run(out)
    sha = hashlib.sha256(b"w").hexdigest()
    (out / "metrics.json").write_text(json.dumps({"v2c_r1": 0.2, "chance_r1": 0.1, "model_sha256": sha}))
    metrics, version = v2lc_runs.finished_run(out)  # the version as the program recorded it, not hashed again
    assert version == sha and v2lc_runs.above_chance(metrics)
    assert not v2lc_runs.above_chance({"v2c_r1": 0.1, "chance_r1": 0.1})
    assert v2lc_runs.latest_checkpoint(out).name == "step-10"  # numeric, not lexical, order
    value = v2lc_runs.encoder_value(out, {**metrics, "not_a_metric": "x", "device": "cpu", "cuda_version": "none",
                                       "split_group": "series"}, version)
    assert value == {"output_dir": str(out), "data_version": version, "metrics": {"v2c_r1": 0.2, "chance_r1": 0.1}, "groups": {},
                     "runtime": {"device": "cpu", "cuda_version": "none"},  # where it ran: the asset's metadata
                     "split_group": "series"}  # what the held-out split kept together


def test_launch_command() -> None:
    cfg = Path("c.yaml")
    assert v2lc_runs.launch_command(cfg) == [sys.executable, "-m", "lcaffect_ml.train_v2lc", "--config", "c.yaml"]
    assert v2lc_runs.launch_command(cfg, gpus=4)[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node=4", "-m"]
    # GPUs asked for: the program is told device=cuda, so it fails at start where CUDA is not usable
    assert v2lc_runs.launch_command(cfg, command=["srun", "python"], gpus=4) == ["srun", "python", "--config", "c.yaml",
                                                                              "--set", "device=cuda"]
    assert v2lc_runs.launch_command(cfg, gpus=1)[-2:] == ["--set", "device=cuda"]
    assert "--set" not in v2lc_runs.launch_command(cfg, gpus=1, device="cuda:1")  # chosen in the config: kept


def test_variants_parse_and_select_their_corpus() -> None:
    assert v2lc_runs.parse_variants("") == [v2lc_runs.Variant("default")]
    zh, everything = v2lc_runs.parse_variants(
        '{"zh": {"languages": ["ZH"], "platforms": ["Bilibili"], "options": {"text_encoder": "x"}}, "all": null}')
    assert (zh.name, zh.where, zh.options) == ("zh", (("language", ("zh",)), ("platform", ("bilibili",))), {"text_encoder": "x"})
    catalogue = [{"video_id": "a", "platform": "bilibili", "language": "zh"},
                 {"video_id": "b", "platform": "niconico", "language": "ja"},
                 {"video_id": "c", "platform": "bilibili", "language": None}]
    entries = [{"url": f"{v}/{v}-00000.tar", "video_id": v} for v in ("a", "b", "c", "unknown")]
    assert [e["video_id"] for e in v2lc_runs.variant_index(entries, catalogue, zh)] == ["a"]
    kept = v2lc_runs.variant_index(entries, catalogue, everything)
    assert [(e["video_id"], e["platform"], e["language"]) for e in kept] == [
        ("a", "bilibili", "zh"), ("b", "niconico", "ja"), ("c", "bilibili", None), ("unknown", None, None)]


def test_variants_select_by_any_catalogue_column_and_subsample_to_equal_sizes() -> None:
    # 12 anime videos in 4 series and 12 videos of 4 other genres, 5 segments each
    genres = ["anime"] * 12 + ["game", "music", "vlog", "sports"] * 3
    catalogue = [{"video_id": f"v{i:02d}", "platform": "bilibili", "genre": g, "series": f"s{i // 3}", "title": f"t{i}"}
                 for i, g in enumerate(genres)]
    entries = [{"url": f"v{i:02d}/v{i:02d}-00000.tar", "video_id": f"v{i:02d}", "samples": 5} for i in range(24)]
    narrow, diverse, series = v2lc_runs.parse_variants(
        '{"narrow": {"genres": ["Anime"], "segments": 30, "sample_seed": 1},'
        ' "diverse": {"where": {"genre": ["game", "music", "vlog", "sports"]}, "hours": 0.0667, "sample_seed": 1},'
        ' "s1": {"where": {"series": "s1"}}}')
    picked = {v.name: v2lc_runs.variant_index(entries, catalogue, v, segment_s=8.0) for v in (narrow, diverse, series)}
    sizes = {name: sum(e["samples"] for e in kept) for name, kept in picked.items()}
    assert sizes == {"narrow": 30, "diverse": 30, "s1": 15}  # 0.0667 h of 8 s segments: 30
    assert {catalogue[int(e["video_id"][1:])]["genre"] for e in picked["narrow"]} == {"anime"}
    assert len({catalogue[int(e["video_id"][1:])]["genre"] for e in picked["diverse"]}) > 1
    # the entries carry the catalogue's other columns (the held-out split groups by them)
    assert {e["catalogue"]["series"] for e in picked["s1"]} == {"s1"} and set(picked["s1"][0]["catalogue"]) == {"genre", "series"}
    # seeded: the same seed draws the same videos, another seed others
    again = v2lc_runs.parse_variants('{"narrow": {"genres": ["anime"], "segments": 30, "sample_seed": 2}}')[0]
    assert v2lc_runs.variant_index(entries, catalogue, narrow) == picked["narrow"]
    assert v2lc_runs.variant_index(entries, catalogue, again) != picked["narrow"]
    too_big = v2lc_runs.parse_variants('{"big": {"genres": ["anime"], "segments": 61}}')[0]
    with pytest.raises(v2lc_runs.VariantError, match=r"asks for 61 segments but its selection \(genre in \['anime'\]\) has only 60"):
        v2lc_runs.variant_index(entries, catalogue, too_big)
    for bad, message in (("[1]", "JSON object"), ('{"Zh!": {}}', "variant name"), ('{"x": {"lang": []}}', "unknown key"),
                         ("{", "not JSON"), ('{"x": {"where": {"studio": ["a"]}}}', r"where names \['studio'\], not catalogue"),
                         ('{"x": {"segments": 10, "hours": 1}}', "not both"), ('{"x": {"hours": -1}}', "positive")):
        with pytest.raises(v2lc_runs.VariantError, match=message):
            v2lc_runs.parse_variants(bad)


def test_lc_arms_follow_the_encoder_and_the_task_list(tmp_path) -> None:
    from lcaffect_pipeline.downstream import arms

    encoder = {"output_dir": "/m/zh", "variant": "zh", "variants": {"zh": {"output_dir": "/m/zh"}, "bi": {"output_dir": "/m/bi"},
                                                                     "a": {"output_dir": "/m/a"}}}
    assert arms.encoder_arms(encoder) == [("zh", "/m/zh"), ("a", "/m/a"), ("bi", "/m/bi")]  # primary first
    assert arms.encoder_arms(encoder, ["bi", "zh", "bi"]) == [("bi", "/m/bi"), ("zh", "/m/zh")]
    assert arms.encoder_arms({"output_dir": "/old"}) == [("default", "/old")]  # a value from before variants
    with pytest.raises(arms.ArmError, match=r"\['ja'\] asked for, but v2lc_encoder holds \['a', 'bi', 'zh'\]"):
        arms.encoder_arms(encoder, ["ja"])
    assert [arms.features_folder(n, encoder) for n in ("bi", "zh")] == ["features-bi", "features"]  # by name, not order
    assert arms.features_folder("default", {"output_dir": "/old"}) == "features"


def test_an_arm_is_seeded_with_the_primary_base_features_once(tmp_path) -> None:
    from lcaffect_pipeline.downstream import arms

    primary, arm = tmp_path / "features", tmp_path / "features-bi"
    assert arms.seed_base_features(primary, arm) is False  # nothing to seed from yet
    primary.mkdir()
    (primary / "base_features.safetensors").write_bytes(b"base-1")
    (primary / "features.json").write_text(json.dumps({"base_version": "b1", "lc_version": "zh"}))
    assert arms.seed_base_features(primary, arm) is True
    assert (arm / "base_features.safetensors").read_bytes() == b"base-1"
    (arm / "features.json").write_text(json.dumps({"base_version": "b1", "lc_version": "bi"}))  # extraction ran here
    assert arms.seed_base_features(primary, arm) is False  # same base: this arm's LC cache is kept
    assert json.loads((arm / "features.json").read_text())["lc_version"] == "bi"
    (primary / "features.json").write_text(json.dumps({"base_version": "b2", "lc_version": "zh"}))
    assert arms.seed_base_features(primary, arm) is True  # new base features upstream: seeded again


def test_the_crosslingual_example_names_variants_that_exist() -> None:
    import yaml

    from conftest import ROOT

    cfg = yaml.safe_load((ROOT / "configs" / "crosslingual.example.yaml").read_text())["resources"]
    variants = v2lc_runs.parse_variants(cfg["v2lc_training"]["config"]["variants_json"])
    assert [v.name for v in variants] == ["zh", "bilingual"] and variants[0].where == (("language", ("zh",)),)
    wanted = json.loads(cfg["downstream"]["config"]["lc_variants_json"])
    assert set(wanted) == set(runs.TASKS) and {n for names in wanted.values() for n in names} <= {v.name for v in variants}


def test_lc_variants_json_is_checked_when_the_resource_is_built() -> None:
    from pydantic import ValidationError

    from lcaffect_pipeline.defs.resources import DownstreamResource

    assert DownstreamResource(lc_variants_json='{"meld": ["bilingual", "zh"]}').lc_variants("meld") == ["bilingual", "zh"]
    assert DownstreamResource().lc_variants("meld") is None  # every variant the encoder holds
    for bad, message in (("{", "not JSON"), ("[]", "must be a JSON object"), ('{"friends": ["zh"]}', "keys must be tasks"),
                         ('{"meld": "zh"}', "list of V2LC variant names")):
        with pytest.raises(ValidationError, match=message):
            DownstreamResource(lc_variants_json=bad)


def test_the_without_lc_arm_does_not_follow_the_task_order() -> None:
    from lcaffect_pipeline.downstream import arms

    assert arms.base_arm({"seed1": "/l/meld/features-seed1", "zh": "/l/meld/features"}) == "zh"
    assert arms.base_arm({"zh": "/l/meld/features", "seed1": "/l/meld/features-seed1"}) == "zh"
    assert arms.base_arm({"b": "/l/x/features-b", "a": "/l/x/features-a"}) == "a"


def test_the_diversity_example_compares_two_variants_of_equal_size() -> None:
    import yaml

    from conftest import ROOT

    cfg = yaml.safe_load((ROOT / "configs" / "diversity.example.yaml").read_text())["resources"]
    narrow, diverse = v2lc_runs.parse_variants(cfg["v2lc_training"]["config"]["variants_json"])
    assert (narrow.name, diverse.name) == ("narrow", "diverse") and narrow.where and not diverse.where
    assert narrow.segments == diverse.segments and narrow.hours is diverse.hours is None
    wanted = json.loads(cfg["downstream"]["config"]["lc_variants_json"])
    assert set(wanted) == set(runs.TASKS) and all(names == ["diverse", "narrow"] for names in wanted.values())


def test_the_unseen_platform_example_holds_niconico_out_of_one_variant() -> None:
    import yaml

    from conftest import ROOT

    cfg = yaml.safe_load((ROOT / "configs" / "unseen_platform.example.yaml").read_text())["resources"]
    with_, without = v2lc_runs.parse_variants(cfg["v2lc_training"]["config"]["variants_json"])
    assert with_.options == {} and without.options == {"eval_platforms": ["niconico"]}
    wanted = json.loads(cfg["downstream"]["config"]["lc_variants_json"])
    assert set(wanted) == set(runs.TASKS) and all(set(names) == {with_.name, without.name} for names in wanted.values())
