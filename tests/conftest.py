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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny models (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): on a 2-core machine shared with other test runs,
    OpenMP threads spinning at barriers cost more than they gain, and every run a test compares
    for bit-identity (also ``OMP_NUM_THREADS=1`` subprocesses) uses the same thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spawn_gloo_ranks(worker, world: int = 2) -> None:
    """Run ``worker(rank, world)`` in ``world`` spawned processes joined in a gloo process group on a
    free local port; a rank's failure fails the call."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_rank, args=(worker, world, port), nprocs=world)


def _gloo_rank(rank: int, worker, world: int, port: int) -> None:
    import os

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        worker(rank, world)
    finally:
        dist.destroy_process_group()


def pipes_env(folder: Path, asset_key: str, *, job_name: str = "test-job", retry: int = 0,
              messages_name: str = "pipes-messages.jsonl") -> tuple[dict[str, str], Path]:
    """The environment ``PipesSubprocessClient`` gives a program it launches for ``asset_key``
    (real ``dagster_pipes`` encoding; messages to a file), and that message file's path."""
    from dagster_pipes import encode_param

    messages = folder / messages_name
    context = {"asset_keys": [asset_key], "code_version_by_asset_key": None, "provenance_by_asset_key": None,
               "partition_key": None, "partition_key_range": None, "partition_time_window": None,
               "run_id": "test-run", "job_name": job_name, "retry_number": retry, "extras": {}}
    env = {"DAGSTER_PIPES_CONTEXT": encode_param({"data": context}),
           "DAGSTER_PIPES_MESSAGES": encode_param({"path": str(messages)})}
    return env, messages


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
    scope = overrides.pop("scope", None) or r.RunScope()
    defaults = {
        "lake": lake,
        "scope": scope,
        "catalogue": r.CatalogueResource(demo=True, demo_videos=4),
        "crawler": r.CrawlerResource(min_interval_s=0),
        "cleaning": r.CleaningResource(),
        "clips": r.ClipsResource(size=32, frames_per_segment=4),
        "v2lc_training": r.V2LCTrainingResource(max_steps=4, batch_size=4, warmup_steps=1, checkpoint_every=4,
                                                num_workers=0, eval_fraction=0.25),
        # speaker-independent as in configs/demo.yaml: one MUStARD run instead of 5 folds
        "downstream": r.DownstreamResource(demo=True, frames=4, size=32, seeds=[0], mustard_protocol="speaker_independent"),
        "human_eval": r.HumanEvalResource(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "io_manager": r.LakeJsonIOManager(lake=lake, as_of_json=scope.as_of_json),  # as lake_io_manager does
    }
    return {**defaults, **overrides}


def manifest(root: Path, name: str) -> dict:
    """An asset's latest manifest as the pipeline reads it (its lake paths resolved in ``root``)."""
    from lcaffect_pipeline import versions

    return versions.latest(root, name)


def write_frames(table, frames, shards_root, video_id: str, *, version: str = "a" * 16, **options):
    """Shards of frames held in memory (``frames[i]`` for row ``i``), through the writer the segments
    stage uses (``shards.write_shard_stream``), in version folder ``version``."""
    from lcaffect_pipeline.shards import write_shard_stream

    times = table.column("frame_times_ms").to_pylist()
    stacks = [(stack, times[i] if i < len(times) else []) for i, stack in enumerate(frames)]  # the writer counts
    return write_shard_stream(table, stacks, shards_root, video_id, version=version, **options)


def index_shards(shards_root, *written) -> list[dict]:
    """The shard index over the version folders that the written segment tables name, as the
    training_shards asset writes it (``shards.write_shard_index``)."""
    from lcaffect_pipeline.shards import referenced_folders, write_shard_index

    folders = set().union(*(referenced_folders(t.column("shard").to_pylist()) for t in written))
    return write_shard_index(shards_root, folders)[1]


def hash_author(raw_id: object, salt: str | None) -> str | None:
    """The author hash (``formats._common.hash_authors``, which DuckDB computes) by ``hashlib``:
    the first 24 hex digits of SHA-256(salt + U+001F + id); None without an id or a salt."""
    import hashlib

    if raw_id is None or raw_id == "" or not salt:
        return None
    return hashlib.sha256(f"{salt}\x1f{raw_id}".encode("utf-8")).hexdigest()[:24]


def undocumented(config_cls: type) -> list[str]:
    """Names of the options of ``config_cls`` (``lcaffect_ml.options.opt`` fields) with no help."""
    import dataclasses

    return [f.name for f in dataclasses.fields(config_cls) if not f.metadata.get("help")]


def check_contract(table) -> None:
    """What every comments table must satisfy: the exact schema, no nulls where forbidden, known
    modes, no comment twice."""
    from lcaffect_pipeline.schema import COMMENTS_SCHEMA, MODES

    assert table.schema.equals(COMMENTS_SCHEMA)
    for field in COMMENTS_SCHEMA:
        if not field.nullable:
            assert table[field.name].null_count == 0, field.name
    assert set(table["mode"].to_pylist()) <= set(MODES)
    ids = list(zip(table["platform"].to_pylist(), table["video_id"].to_pylist(), table["comment_id"].to_pylist()))
    assert len(ids) == len(set(ids)), "duplicates survived"
