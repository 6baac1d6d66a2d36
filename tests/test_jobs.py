"""Named jobs, their example configs, schedules and sensors; re-running one downstream task from the shell."""

import os
from datetime import datetime
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from conftest import ROOT, need_ffmpeg

CONFIGS = ROOT / "configs"
JOB_CONFIGS = {  # job → the example configs that must be valid for it (merged in order, like -c a -c b)
    "corpus_job": [["corpus.example.yaml"], ["corpus.example.yaml", "rerun_one.yaml"]],
    "clips_job": [["clips.example.yaml"]],
    "pretrain_job": [["pretrain.example.yaml"]],
    "downstream_job": [["downstream.example.yaml"], ["paper.example.yaml"]],
    "reproduce_job": [["pretrain.example.yaml", "reproduce.example.yaml"], ["demo.yaml", "reproduce.example.yaml"]],
    "retention_job": [["retention.example.yaml"]],
    "human_eval_job": [["human_eval.example.yaml"], ["demo.yaml", "human_eval.example.yaml"]],
    "full_pipeline": [["demo.yaml"], ["demo.yaml", "rerun_one.yaml"], ["demo_unseen.yaml"], ["paper.example.yaml"],
                      ["paper.example.yaml", "crosslingual.example.yaml"],
                      ["paper.example.yaml", "diversity.example.yaml"],
                      ["paper.example.yaml", "unseen_platform.example.yaml"],
                      ["scaleout_small.yaml"]],
}
# The configs that may train and extract with the "tiny" towers built in code: the demos.
TINY_ALLOWED = {"demo.yaml", "demo_unseen.yaml", "scaleout_small.yaml"}
TIMESFORMER, ZH_ROBERTA = "facebook/timesformer-base-finetuned-k400", "hfl/chinese-roberta-wwm-ext"
ENGLISH = {"text_model": "roberta-base", "audio_model": "facebook/wav2vec2-base", "vision_model": "openai/clip-vit-base-patch32"}
PAPER_FEATURES = {"chsims2": {**ENGLISH, "text_model": ZH_ROBERTA}, "meld": ENGLISH, "mustard": ENGLISH}
# What each example (job, configs) trains V2LC with (variant -> video and text tower) and extracts each
# task's features with, resolved as a run resolves them (docs/OPERATIONS.md, "Models and devices").
TOWERS = {
    ("pretrain_job", ("pretrain.example.yaml",)): ({"default": (TIMESFORMER, ZH_ROBERTA)}, {}),
    ("downstream_job", ("downstream.example.yaml",)): (None, PAPER_FEATURES),
    ("downstream_job", ("paper.example.yaml",)): (None, PAPER_FEATURES),
    ("reproduce_job", ("pretrain.example.yaml", "reproduce.example.yaml")): ({"default": (TIMESFORMER, ZH_ROBERTA)}, {}),
    ("full_pipeline", ("paper.example.yaml",)): ({"default": (TIMESFORMER, ZH_ROBERTA)}, PAPER_FEATURES),
    ("full_pipeline", ("paper.example.yaml", "crosslingual.example.yaml")): (
        {"zh": (TIMESFORMER, ZH_ROBERTA), "bilingual": (TIMESFORMER, "xlm-roberta-base")}, PAPER_FEATURES),
    ("full_pipeline", ("paper.example.yaml", "diversity.example.yaml")): (
        {"narrow": (TIMESFORMER, ZH_ROBERTA), "diverse": (TIMESFORMER, ZH_ROBERTA)}, PAPER_FEATURES),
    ("full_pipeline", ("paper.example.yaml", "unseen_platform.example.yaml")): (
        {"with-niconico": (TIMESFORMER, "xlm-roberta-base"), "without-niconico": (TIMESFORMER, "xlm-roberta-base")},
        PAPER_FEATURES),
    ("full_pipeline", ("demo.yaml",)): ({"default": ("tiny", "tiny")}, {t: {"text_model": "tiny", "audio_model": "tiny",
                                                                            "vision_model": "tiny"} for t in PAPER_FEATURES}),
    ("full_pipeline", ("demo_unseen.yaml",)): ({"v2lc": ("tiny", "tiny"), "shuffled_comments": ("tiny", "tiny")},
                                               {t: {"text_model": "tiny", "audio_model": "tiny", "vision_model": "tiny"}
                                                for t in PAPER_FEATURES}),
}


def load(*names: str) -> dict:
    """Merge configs as `dagster job execute -c a -c b` does (deep merge, later wins)."""
    from dagster._utils.merger import deep_merge_dicts

    merged: dict = {}
    for name in names:
        merged = deep_merge_dicts(merged, yaml.safe_load((CONFIGS / name).read_text()) or {})
    return merged


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from lcaffect_pipeline.definitions import defs

    return defs


def test_every_job_schedule_and_sensor_resolves(defs) -> None:
    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert jobs == set(JOB_CONFIGS)
    for name in jobs - {"retention_job"}:  # retention is an op over the lake, not an asset
        assert defs.resolve_job_def(name).asset_layer.executable_asset_keys  # every job selects assets
    schedule = defs.resolve_schedule_def("daily_corpus_refresh")
    assert schedule.job_name == "corpus_job" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    sensors = {s.name: defs.resolve_sensor_def(s.name) for s in defs.sensors}
    assert set(sensors) == {"catalogue_changed", "retrain_on_new_data"}
    assert all(s.default_status == dg.DefaultSensorStatus.STOPPED for s in sensors.values())
    assert {k.to_user_string() for k in defs.resolve_job_def("pretrain_job").asset_layer.executable_asset_keys} == {"v2lc_encoder"}


@pytest.mark.parametrize("job,names", [(j, n) for j, ns in JOB_CONFIGS.items() for n in ns], ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_example_config_is_valid_for_its_job(defs, job: str, names: list[str]) -> None:
    dg.validate_run_config(defs.resolve_job_def(job), load(*names))


def resolved_towers(job: str, names: list[str]) -> tuple[dict | None, dict]:
    """(V2LC variant -> (video, text tower), task -> its three encoders) of a run of ``job`` with
    ``names``, from the resources built as the run builds them (validated, defaults filled in)."""
    from lcaffect_pipeline import preflight
    from lcaffect_pipeline.defs.launch_checks import run_plan
    from lcaffect_pipeline.defs.fetch_models import job_assets, job_resources

    res, planned = job_resources(job, load(*names)), job_assets(job)
    v2lc = None
    if "v2lc_encoder" in planned:
        from lcaffect_ml.train_v2lc_config import TrainConfig

        program = TrainConfig(shards="", output_dir="")  # the defaults of the options a config leaves out
        v2lc = {name: (o.get("video_encoder", program.video_encoder), o.get("text_encoder", program.text_encoder))
                for name, o in preflight.v2lc_options(res["v2lc_training"].model_dump()).items()}
    ds = res.get("downstream")
    tasks = {t: {k: ds.features_options(t)[k] for k in ENGLISH} for t in PAPER_FEATURES
             if f"{t}_features" in planned and (getattr(ds, f"{t}_root") or ds.demo)}
    models, _ = run_plan(planned, res.get("v2lc_training"), ds)  # the list the preflight checks and fetch_models fetches
    named = {n for towers in (v2lc or {}).values() for n in towers} | {n for e in tasks.values() for n in e.values()}
    assert {m.name for m in models} == named - {"tiny"}
    return v2lc, tasks


@pytest.mark.parametrize("job,names", [(j, n) for j, ns in JOB_CONFIGS.items() for n in ns], ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_example_configs_train_and_extract_with_the_towers_they_say(job: str, names: list[str]) -> None:
    """No example outside the demos resolves to a tiny tower; the listed ones to exactly these towers
    (full_pipeline with the paper config: TimeSformer-base and the Chinese RoBERTa)."""
    v2lc, tasks = resolved_towers(job, names)
    if not set(names) & TINY_ALLOWED:
        used = {n for towers in (v2lc or {}).values() for n in towers} | {n for e in tasks.values() for n in e.values()}
        assert "tiny" not in used, (names, v2lc, tasks)
    if (job, tuple(names)) in TOWERS:
        assert (v2lc, tasks) == TOWERS[job, tuple(names)]


def test_the_paper_config_trains_with_gradient_checkpointing_on_gpus() -> None:
    from lcaffect_pipeline import preflight
    from lcaffect_pipeline.defs.fetch_models import job_resources

    training = job_resources("full_pipeline", load("paper.example.yaml"))["v2lc_training"].model_dump()
    (options,) = preflight.v2lc_options(training).values()
    assert options["gradient_checkpointing"] is True and options["batch_size"] == 64 and training["gpus"] >= 1


def test_a_misspelt_option_is_rejected(defs) -> None:
    """The validation above could fail: a wrong field name (an old spelling) is an error naming it."""
    bad = load("corpus.example.yaml")
    bad["resources"]["crawler"]["config"]["max_attempts"] = 6
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_attempts"):
        dg.validate_run_config(defs.resolve_job_def("corpus_job"), bad)


def test_the_retention_schedules_config_is_valid_for_its_job(defs) -> None:
    schedule = defs.resolve_schedule_def("weekly_retention")
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=datetime(2026, 1, 4, 5))).run_requests[0]
    assert request.run_key == "retention-2026-01-04" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    dg.validate_run_config(defs.resolve_job_def("retention_job"), request.run_config)


def test_schedule_run_config_is_valid_for_its_job(defs) -> None:
    schedule = defs.resolve_schedule_def("daily_corpus_refresh")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 1, 2, 4))
    request = schedule.evaluate_tick(context).run_requests[0]
    assert request.run_key == "refresh-2026-01-02"
    from dagster._utils.merger import deep_merge_dicts

    config = deep_merge_dicts(load("corpus.example.yaml"), request.run_config)
    assert config["resources"]["scope"]["config"]["refresh"] is True
    dg.validate_run_config(defs.resolve_job_def("corpus_job"), config)


def test_example_configs_point_at_files_that_exist() -> None:
    for name in ("corpus.example.yaml", "clips.example.yaml"):
        assert (ROOT / load(name)["resources"]["catalogue"]["config"]["path"]).is_file()


@pytest.mark.slow
def test_rerun_one_downstream_task_from_the_shell(tmp_path: Path) -> None:
    """`dagster asset materialize --select meld_utterances`: that task's asset only, in one run."""
    need_ffmpeg()
    cfg = tmp_path / "meld.yaml"
    cfg.write_text(yaml.safe_dump({"resources": {"downstream": {"config": {"demo": True, "frames": 2, "size": 16}}}}))
    home, lake = tmp_path / "home", tmp_path / "lake"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "LCAFFECT_LAKE": str(lake)}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(dagster), "asset", "materialize", "-m", "lcaffect_pipeline.definitions", "--select", "meld_utterances", "-c", str(cfg)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from lcaffect_pipeline import tables

    assert tables.read(lake, "meld_utterances").num_rows > 0  # version 0 of the task's utterance table
    assert not (lake / "downstream" / "chsims2").exists()  # the other tasks were not touched
    code = (
        "import dagster as dg\n"
        "i = dg.DagsterInstance.get()\n"
        "for k in ('meld_utterances', 'chsims2_utterances', 'meld_features'):\n"
        "    e = i.get_latest_materialization_event(dg.AssetKey(k))\n"
        "    print(k, e.asset_materialization.tags.get('dagster/data_version') if e else None)\n"
        "print(len(i.get_runs()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    meld, chsims, features, runs = out[0].split(), out[1].split(), out[2].split(), out[3]
    assert len(meld[1]) >= 16 and meld[1] != "None"  # content-derived data version
    assert chsims[1] == "None" and features[1] == "None" and runs == "1"
