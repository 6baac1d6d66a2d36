"""Every numeric and enumerated option is checked against its allowed values when the run starts,
before any work (issue 26 item 7): the message names the option and the range. The bounds are
declared once, on the dataclass field that owns each option (``lcaffect_ml.options.opt``), and the
Dagster resources validate through those dataclasses."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from lcaffect_ml.options import ConfigError, check_options, opt
from lcaffect_pipeline.defs.resources import (ClipsResource, CrawlerResource, DownstreamResource, RunScope,
                                              V2LCTrainingResource)

REFUSED = [
    (RunScope, {"chunk_size": 0}, r"chunk_size\s+Input should be greater than or equal to 1"),
    (RunScope, {"chunk_size": -5}, r"chunk_size\s+Input should be greater than or equal to 1"),
    (ClipsResource, {"frames_per_segment": 10**6}, r"frames_per_segment = 1000000: must be in \[1, 256\]"),
    (ClipsResource, {"size": 0}, r"clips: size = 0: must be in \[16, 2048\]"),
    (ClipsResource, {"segment_s": 0}, r"segment_s = 0.0: must be in \(0, 600\]"),
    (DownstreamResource, {"size": 0}, r"size\s+Input should be greater than or equal to 16"),
    (DownstreamResource, {"seeds": list(range(100_000))}, r"seeds = 100000 items: must be at most 100 items"),
    (DownstreamResource, {"media_policy": "skipp"}, r"media_policy\s+Input should be 'skip', 'keep' or 'fail'"),
    (DownstreamResource, {"fusion_extra_json": '{"lr": 0.1, "bogus": 1}'},
     r"downstream.fusion_extra_json: unknown option\(s\) \['bogus'\]; known: \[.*'lr'"),
    (DownstreamResource, {"fusion_extra_json": '{"batch_size": 0}'}, r"fusion_extra_json: batch_size = 0: must be in \[1, inf\)"),
    (DownstreamResource, {"features_extra_json": '{"bogus": 1}'}, r"downstream.features_extra_json: unknown option\(s\) \['bogus'\]"),
    (DownstreamResource, {"task_features_json": '{"meld": {"context_turns": 1000}}'},
     r"task_features_json\[meld\]: context_turns = 1000: must be in \[0, 32\]"),
    (V2LCTrainingResource, {"launcher": "bogus"}, r"launcher\s+Input should be 'subprocess' or 'k8s'"),
    (V2LCTrainingResource, {"batch_size": 0}, r"v2lc_training: batch_size = 0: must be in \[1, inf\)"),
    (V2LCTrainingResource, {"lr": -1}, r"v2lc_training: lr = -1.0: must be in \(0, 10.0\]"),
    (V2LCTrainingResource, {"extra_json": '{"nope": 1}'}, r"v2lc_training.extra_json: unknown option\(s\) \['nope'\]"),
    (CrawlerResource, {"min_interval_s": -1}, r"crawler: min_interval_s = -1.0: must be in \[0, inf\)"),
]


@pytest.mark.parametrize("resource, values, message", REFUSED, ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_a_value_out_of_range_is_refused_naming_the_option(resource, values, message) -> None:
    with pytest.raises(Exception, match=message):
        resource(**values)


def test_values_in_range_and_the_defaults_are_accepted() -> None:
    for resource in (RunScope, ClipsResource, DownstreamResource, V2LCTrainingResource, CrawlerResource):
        resource()
    ClipsResource(frames_per_segment=16, size=112, segment_s=4.0)
    DownstreamResource(seeds=[0, 1], fusion_extra_json='{"lr": 0.001}', media_policy="keep")
    V2LCTrainingResource(batch_size=8, lr=3e-4, launcher="k8s", extra_json='{"embed_dim": 128}')


def test_bounds_are_declared_on_the_field() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Config:
        n: int = opt(1, "count", low=1, high=3)
        mode: str = opt("a", "mode", choices=("a", "b"))

    check_options(Config, {"n": 3, "mode": "b"}, "x")
    with pytest.raises(ConfigError, match=r"^x: n = 4: must be in \[1, 3\]$"):
        check_options(Config, {"n": 4}, "x")
    with pytest.raises(ConfigError, match=r"^x: mode = 'c': must be one of 'a', 'b'$"):
        check_options(Config, {"mode": "c"}, "x")
    with pytest.raises(ConfigError, match=r"x: n = True: must be in"):  # a bool is not a count
        check_options(Config, {"n": True}, "x")


def test_clips_job_with_a_huge_frames_per_segment_fails_at_once_naming_it(tmp_path: Path) -> None:
    """It once downloaded, probed and extracted audio, then failed 75 s in with bare MemoryErrors."""
    from lcaffect_pipeline.definitions import defs

    run_config = {"resources": {"lake": {"config": {"root": str(tmp_path / "lake")}},
                                "catalogue": {"config": {"demo": True, "demo_videos": 2}},
                                "clips": {"config": {"frames_per_segment": 1_000_000}}}}
    started = time.monotonic()
    result = defs.resolve_job_def("clips_job").execute_in_process(run_config=run_config, raise_on_error=False)
    elapsed = time.monotonic() - started
    assert not result.success and elapsed < 30, elapsed
    errors = " ".join(str(e.event_specific_data.error) for e in result.all_events
                      if e.event_type in (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.STEP_FAILURE,
                                          dg.DagsterEventType.RESOURCE_INIT_FAILURE)
                      and getattr(e.event_specific_data, "error", None))
    assert "frames_per_segment = 1000000: must be in [1, 256]" in errors
    assert not (tmp_path / "lake" / "videos").exists()  # nothing fetched
