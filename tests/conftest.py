"""Shared test helpers: the real fixtures live in ../shared, never in this repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from skip_policy import missing
from skip_policy import pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary  # noqa: F401 (hooks)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
DATA = SHARED / "data"


def fixture_path(*parts: str) -> Path:
    """Path to a shared fixture; where it is absent the test skips (with the reason), or fails in CI."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        missing(f"shared fixture {path} is absent (see ../shared/fixtures/README.md)")
    return path


def data_path(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        missing(f"shared annotation file {path} is absent (see ../shared/fixtures/README.md)")
    return path


def need_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        missing("ffmpeg/ffprobe not installed (apt-get install ffmpeg)")


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    return root


def demo_resources(root: Path, **overrides) -> dict:
    """Every pipeline resource, set for a small, fast demo in ``root``; override any by key."""
    import dagster as dg

    from lcaffect_pipeline.defs import resources as r

    lake = overrides.pop("lake", None) or r.LakeResource(root=str(root), author_salt="test-salt")
    defaults = {
        "lake": lake,
        "scope": r.RunScope(),
        "catalogue": r.CatalogueResource(demo=True, demo_videos=4),
        "crawler": r.CrawlerResource(min_interval_s=0),
        "cleaning": r.CleaningResource(),
        "clips": r.ClipsResource(size=32, frames_per_segment=4),
        "v2lc_training": r.V2LCTrainingResource(max_steps=4, batch_size=4, warmup_steps=1, checkpoint_every=4,
                                                num_workers=0, eval_fraction=0.25),
        "downstream": r.DownstreamResource(demo=True, frames=4, size=32, seeds=[0]),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "io_manager": r.LakeJsonIOManager(lake=lake),
    }
    return {**defaults, **overrides}


def manifest(root: Path, name: str) -> dict:
    """An asset's JSON manifest as the pipeline stored it in the lake."""
    import json

    return json.loads((root / "_manifests" / f"{name}.json").read_text())
