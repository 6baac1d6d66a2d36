"""A run's outcome tells the truth: per-video assets fail their run when (nearly) every video
failed, asset checks do not pass on nothing, and configuration is checked when the run starts."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from lcaffect_pipeline.defs.corpus_assets import ASSETS
from lcaffect_pipeline.defs.fanout import error_type, failure_verdict
from lcaffect_pipeline.defs.resources import CatalogueResource, RunScope

from conftest import demo_resources, manifest

GOOD_XML = ('<?xml version="1.0" encoding="UTF-8"?><i>'
            + "".join(f'<d p="{i}.5,1,25,16777215,1300000000,0,u{i},{i},10">comment {i}</d>' for i in range(5))
            + "</i>")


def _results(statuses: list[str], reason: str = "TypeError: boom") -> dict[str, dict]:
    return {f"v{i}": {"video_id": f"v{i}", "status": s, "reason": reason if s == "failed" else None}
            for i, s in enumerate(statuses)}


@pytest.mark.parametrize("statuses, share, fails", [
    (["done"] * 4, 0.5, False),
    (["done", "skipped", "done", "failed"], 0.5, False),  # one bad video among many goes on
    (["done", "failed"], 0.5, False),  # exactly the share is allowed
    (["done", "failed", "failed"], 0.5, True),  # more than the share
    (["failed"], 1.0, True),  # all failed fails even when any share is allowed
    (["failed", "failed", "skipped"], 0.8, False),  # a configured share holds
    (["failed", "done", "done", "done"], 0.2, True),
    ([], 0.5, False),  # an empty scope is not a failure of any video
])
def test_failure_verdict_forces_each_outcome(statuses, share, fails):
    verdict = failure_verdict("raw_comments", _results(statuses), share)
    assert (verdict is not None) is fails
    if fails:
        assert f"{statuses.count('failed')} of {len(statuses)} videos failed" in verdict


def test_verdict_groups_reasons_by_error_type():
    results = {**_results(["failed"] * 3, "TypeError: unexpected keyword 'min_length'"),
               "w": {"video_id": "w", "status": "failed", "reason": "CommentFormatError: w.xml: not XML"},
               "x": {"video_id": "x", "status": "failed", "reason": "no colon here"}}
    verdict = failure_verdict("clean_comments", results, 0.5)
    assert "- TypeError x3 (v0, v1, v2): e.g. TypeError: unexpected keyword 'min_length'" in verdict
    assert "- CommentFormatError x1 (w)" in verdict and "- error x1 (x)" in verdict
    assert error_type("sources.FetchError: 429") == "sources.FetchError"


def _catalogue(tmp_path: Path, good: int, bad: int) -> Path:
    rows = []
    for i in range(good):
        (tmp_path / f"good{i}.xml").write_text(GOOD_XML)
        rows.append(f"  - {{video_id: good{i}, platform: bilibili, source: {tmp_path / f'good{i}.xml'}}}")
    for i in range(bad):
        (tmp_path / f"bad{i}.xml").write_bytes(b"\x00\x01 not a comment file")
        rows.append(f"  - {{video_id: bad{i}, platform: bilibili, source: {tmp_path / f'bad{i}.xml'}}}")
    path = tmp_path / "catalogue.yaml"
    path.write_text("videos:\n" + "\n".join(rows) + "\n")
    return path


def _run(tmp_path: Path, catalogue: Path, **scope):
    res = demo_resources(tmp_path / "lake", catalogue=CatalogueResource(path=str(catalogue)), scope=RunScope(**scope))
    return dg.materialize(ASSETS[:2], resources=res, raise_on_error=False)


def _failure_message(result) -> str:
    return "\n".join(e.step_failure_data.error.message for e in result.get_step_failure_events())


def test_a_run_whose_videos_all_failed_fails_with_reasons_grouped(tmp_path):
    result = _run(tmp_path, _catalogue(tmp_path, good=0, bad=3))
    assert not result.success
    message = _failure_message(result)
    assert "raw_comments: 3 of 3 videos failed" in message
    assert "CommentFormatError x3 (bad0, bad1, bad2)" in message and "bad0.xml" in message


def test_more_than_the_share_failing_fails_the_run_and_one_bad_video_does_not(tmp_path):
    mostly_bad = _run(tmp_path / "a", _catalogue(_mkdir(tmp_path / "a"), good=1, bad=2))
    assert not mostly_bad.success and "2 of 3 videos failed" in _failure_message(mostly_bad)
    allowed = _run(tmp_path / "b", _catalogue(_mkdir(tmp_path / "b"), good=1, bad=2), max_failed_share=0.7)
    assert allowed.success
    one_bad = _run(tmp_path / "c", _catalogue(_mkdir(tmp_path / "c"), good=3, bad=1))
    assert one_bad.success
    raw = manifest(tmp_path / "c" / "lake", "raw_comments")
    assert raw["results"]["bad0"]["status"] == "failed" and "bad0.xml" in raw["results"]["bad0"]["reason"]
    assert raw["done"] == 3
    meta = next(e.materialization.metadata for e in one_bad.get_asset_materialization_events()
                if e.materialization.asset_key == dg.AssetKey("raw_comments"))
    assert "1 failed" in meta["per_video"].value and "| bad0 | CommentFormatError" in meta["per_video"].value
    import pyarrow.parquet as pq

    table = pq.read_table(meta["per_video_table"].value).to_pylist()  # every video, in the lake
    assert {r["video_id"]: r["status"] for r in table} == {"bad0": "failed", "good0": "done", "good1": "done", "good2": "done"}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ asset checks on nothing


def _check(name: str, table: str = "raw_comments"):
    from lcaffect_pipeline.defs.checks import CHECKS

    return next(c for c in CHECKS if c.check_key.name == name and c.check_key.asset_key == dg.AssetKey(table))


def _evaluate(check, root: Path) -> dg.AssetCheckResult:
    from lcaffect_pipeline.defs.resources import LakeResource

    return check(lake=LakeResource(root=str(root)))


def test_checks_over_an_empty_lake_do_not_pass(tmp_path):
    from lcaffect_pipeline import corpus
    from lcaffect_pipeline.defs.clips_assets import shards_match_segments
    from lcaffect_pipeline.defs.resources import ClipsResource, LakeResource

    root = tmp_path / "lake"
    cat = tmp_path / "c.yaml"
    cat.write_text("videos:\n  - {video_id: v, platform: bilibili, source: v.xml}\n")
    corpus.write_catalogue(root, corpus.load_catalogue(cat))
    for name in ("schema", "unique_ids", "offsets_in_video"):
        for table in ("raw_comments", "clean_comments"):
            result = _evaluate(_check(name, table), root)
            assert result.passed is False and "no " in result.metadata["reason"].text, (name, table)
    shards = shards_match_segments(lake=LakeResource(root=str(root)), clips=ClipsResource())
    assert shards.passed is False and shards.metadata["reason"].text.startswith("no segments to check")


def test_offsets_check_finds_the_probed_duration_and_fails_past_the_end(tmp_path):
    from lcaffect_pipeline import stages

    root = tmp_path / "lake"
    result = _run(tmp_path, _catalogue(tmp_path, good=1, bad=0))  # offsets 0.5 .. 4.5 s
    assert result.success
    unknown = _evaluate(_check("offsets_in_video"), root)
    assert unknown.passed is False and unknown.metadata["rows_with_known_duration"].value == 0
    # the probe (clips stage) writes its state where the lake's naming rule puts it
    stages.save_state(root, "video_probes", stages.VideoResult("good0", "done", metrics={"duration_s": 10.0}))
    inside = _evaluate(_check("offsets_in_video"), root)
    assert inside.passed is True and inside.metadata["rows_with_known_duration"].value == 5
    stages.save_state(root, "video_probes", stages.VideoResult("good0", "done", metrics={"duration_s": 2.0}))
    past = _evaluate(_check("offsets_in_video"), root)
    assert past.passed is False and past.metadata["past_end"].value == 2  # 3.5 s and 4.5 s > 2 s + 1 s


def test_unique_ids_check_fails_on_a_duplicate_and_passes_without(tmp_path):
    from lcaffect_pipeline import tables

    root = tmp_path / "lake"
    assert _run(tmp_path, _catalogue(tmp_path, good=1, bad=0)).success
    assert _evaluate(_check("unique_ids"), root).passed is True
    table = tables.read(root, "raw_comments")
    duplicated = tables.write(root, "raw_comments", pa.concat_tables([table, table.slice(0, 1)]), "good0")
    tables.commit(root, "raw_comments", {"good0": duplicated})  # as a buggy parser's version would be
    dup = _evaluate(_check("unique_ids"), root)
    assert dup.passed is False and dup.metadata["duplicates"].value == 1


@pytest.mark.parametrize("metrics, passed", [
    ({"v2c_r1": 0.5, "chance_r1": 0.1}, True),
    ({"v2c_r1": 0.05, "chance_r1": 0.1}, False),
    ({"v2c_r1": 0.1, "chance_r1": 0.1}, False),  # at chance is not above it
    ({"chance_r1": 0.1}, False),  # no held-out videos: the check is reported, not passed
])
def test_retrieval_check_is_decided_by_r1_against_chance(tmp_path, metrics, passed):
    from lcaffect_ml.pipes import TrainingReporter

    report = TrainingReporter().report_training_result({**metrics, "model_sha256": "ab" * 32}, str(tmp_path), None)
    assert report["passed"] is passed


# ------------------------------------------------------------------ configuration checked up front


def test_an_unknown_cleaning_field_is_refused_at_launch_naming_the_valid_ones():
    from lcaffect_pipeline.definitions import defs

    job = defs.resolve_job_def("corpus_job")
    with pytest.raises(dg.DagsterInvalidConfigError) as info:
        job.execute_in_process(run_config={"resources": {"cleaning": {"config": {"options": {"min_length": 2}}}}})
    assert "min_length" in str(info.value) and "min_chars" in str(info.value)


def test_an_unknown_options_json_field_fails_the_run_before_any_video(tmp_path):
    """The example once documented, {"min_length": 2}, made every video fail with a TypeError
    in a green run; now nothing runs and the error names the field and the valid ones."""
    from lcaffect_pipeline.definitions import defs

    root = tmp_path / "lake"
    run_config = {"resources": {"lake": {"config": {"root": str(root)}}, "catalogue": {"config": {"demo": True, "demo_videos": 2}},
                                "cleaning": {"config": {"options_json": '{"min_length": 2}'}}}}
    result = defs.resolve_job_def("corpus_job").execute_in_process(run_config=run_config, raise_on_error=False)
    assert not result.success
    events = [e for e in result.all_events if e.is_failure]
    message = "\n".join(str(e.event_specific_data.error) for e in events if getattr(e.event_specific_data, "error", None))
    assert "unknown field(s) 'min_length'" in message and "min_chars" in message, message[:2000]
    assert not result.get_asset_materialization_events() and not (root / "raw_comments").exists()


def test_cleaning_options_mirror_cleaning_config_and_reach_the_cleaner():
    from lcaffect_pipeline.cleaning import CleaningConfig
    from lcaffect_pipeline.defs.resources import CleaningOptions, CleaningResource

    assert CleaningOptions().model_dump() == CleaningConfig().to_dict()
    assert CleaningResource().options_dict() == {}  # defaults: the clean fingerprint stays as it was
    chosen = CleaningResource(options=CleaningOptions(min_chars=2), options_json='{"max_chars": 50}').options_dict()
    assert chosen == {"min_chars": 2, "max_chars": 50}
    with pytest.raises(ValueError, match="must be at least 1"):
        CleaningResource(options=CleaningOptions(max_repeat=0))


# ------------------------------------------------------------------ fault injection stays in tests


@pytest.mark.parametrize("module", ["lcaffect_ml.train_v2lc", "lcaffect_ml.train_fusion"])
def test_shipped_programs_have_no_fault_injection_switch(module, tmp_path, capsys):
    import importlib

    main = importlib.import_module(module).main
    config = tmp_path / "c.json"
    config.write_text('{"output_dir": "%s", "debug_nan_at_step": 3}' % tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["--config", str(config), "--stop-after-step", "4"])
    assert info.value.code == 2 and "unrecognized arguments: --stop-after-step" in capsys.readouterr().err
    assert main(["--config", str(config)]) == 2  # not a configuration option either
    assert "debug_nan_at_step" in capsys.readouterr().err
