"""Operations: what a killed run leaves is cleaned, concurrent builds of corpus.duckdb do not
collide, and a lake root holding a quote works."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from lcaffect_ml import atomic
from lcaffect_pipeline import corpus, lake, tables
from lcaffect_pipeline.cleaning import CleaningConfig, clean_comments
from lcaffect_pipeline.formats import read_comments

from conftest import ROOT

GOOD_XML = ('<?xml version="1.0" encoding="UTF-8"?><i>'
            + "".join(f'<d p="{i}.5,1,25,16777215,1300000000,0,u{i},{i},10">comment number {i}</d>' for i in range(6))
            + "</i>")

KILLED_WRITER = """
import os, signal, sys
from lcaffect_pipeline import lake
with lake.atomic_write(sys.argv[1]) as fh:
    fh.write(b"x" * 1_000_000)
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    folder = tmp_path / "shards" / "v"
    folder.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(folder / "v-00000.tar")],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    assert proc.returncode == -9
    (left,) = _temps(folder)
    assert left.startswith(".v-00000.tar.tmp-") and not (folder / "v-00000.tar").exists()
    lake.atomic_write_bytes(folder / "v-00001.tar", b"next")  # the next write into that folder
    assert _temps(folder) == [] and (folder / "v-00001.tar").read_bytes() == b"next"


def test_a_live_writers_temporary_is_kept_and_an_old_unowned_one_goes(tmp_path):
    old = tmp_path / ".a.parquet.tmp-0123abcd"  # the name older versions wrote: no writer in it
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 2 * atomic.STALE_UNOWNED_S,) * 2)
    recent = tmp_path / ".b.parquet.tmp-4567cdef"
    recent.write_bytes(b"maybe still being written")
    other_host = tmp_path / ".c.parquet.tmp-ffffff-1-89abcdef"  # another machine's live writer
    other_host.write_bytes(b"x")
    checkpoint_tmp = tmp_path / ".tmp-step-5-0123abcd"  # not the lake's form: never touched here
    checkpoint_tmp.mkdir()
    with lake.atomic_write(tmp_path / "d.parquet") as fh:  # the first write here sweeps the folder
        fh.write(b"half")
        assert not old.exists()
        assert atomic.sweep_stale_temps(tmp_path, force=True) == []  # as a concurrent run would: ours is alive
        assert len([n for n in _temps(tmp_path) if n.startswith(".d.parquet.tmp-")]) == 1
    assert sorted(_temps(tmp_path)) == sorted([recent.name, other_host.name, checkpoint_tmp.name])


def _lake(root: Path) -> Path:
    src = root.parent / "v1.xml"
    src.write_text(GOOD_XML)
    cat = root.parent / "catalogue.yaml"
    cat.write_text(f"videos:\n  - {{video_id: v1, platform: bilibili, source: {src}}}\n")
    corpus.write_catalogue(root, corpus.load_catalogue(cat))
    raw = read_comments(src, platform="bilibili", video_id="v1")
    tables.commit(root, "raw_comments", {"v1": tables.write(root, "raw_comments", raw, "v1")})
    clean, _ = clean_comments(raw, CleaningConfig(langid=False))
    tables.commit(root, "clean_comments", {"v1": tables.write(root, "clean_comments", clean, "v1")})
    return root


def test_a_lake_root_holding_a_quote_builds_the_corpus_catalog(tmp_path):
    root = _lake(tmp_path / "it's a lake")
    card = corpus.build_corpus_catalog(root, {"v1": 60.0})
    assert card["videos"] == 1 and card["comments"] == 6
    con = duckdb.connect(card["path"], read_only=True)
    assert con.execute("SELECT count(*) FROM raw_comments").fetchone()[0] == 6
    assert con.execute("SELECT count(*) FROM catalogue").fetchone()[0] == 1


def _build_many(root: str, n: int, queue) -> None:
    errors = []
    for _ in range(n):
        try:
            corpus.build_corpus_catalog(root, {"v1": 60.0})
        except Exception as exc:  # reported to the test, which fails on any
            errors.append(f"{type(exc).__name__}: {exc}")
    queue.put(errors)


def test_concurrent_builds_of_the_corpus_catalog_do_not_collide(tmp_path):
    root = _lake(tmp_path / "lake")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_many, args=(str(root), 5, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    errors = [e for _ in procs for e in queue.get(timeout=300)]
    for p in procs:
        p.join(timeout=60)
    assert errors == []
    assert _temps(root) == []
    con = duckdb.connect(str(root / "corpus.duckdb"), read_only=True)
    assert con.execute("SELECT comments FROM dataset_card WHERE dimension = 'all'").fetchone()[0] == 6


# ------------------------------------------------------------------ a killed run


def _group(pgid: int) -> set[int]:
    """Live (not zombie) processes of a process group."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.add(int(entry.name))
    return members


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} if root.exists() else {}


@pytest.mark.slow
def test_a_killed_run_leaves_no_step_behind_and_monitoring_fails_it(tmp_path):
    """Kill a `dagster job execute` run's process group mid-fan-out: no step outlives it, nothing
    is written after it died, and the daemon's run monitoring marks it failed (so the run-retry
    policy applies) instead of leaving it STARTED."""
    import logging
    import signal

    import dagster as dg
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    from lcaffect_pipeline import stages
    from conftest import need_ffmpeg

    need_ffmpeg()
    home, root = tmp_path / "home", tmp_path / "lake"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    cfg = tmp_path / "run.yaml"
    cfg.write_text("resources:\n  catalogue:\n    config: {demo: true, demo_videos: 8}\n  lake:\n    config: {author_salt: s}\n"
                   "  crawler:\n    config: {min_interval_s: 0}\n  scope:\n    config: {chunk_size: 1}\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "LCAFFECT_LAKE": str(root), "PYTHONPATH": str(ROOT)}
    dagster = Path(sys.executable).with_name("dagster")
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen([str(dagster), "job", "execute", "-m", "lcaffect_pipeline.definitions", "-j", "corpus_job", "-c", str(cfg)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not stages.state_path(root, "raw_comments", "demo_00").exists():  # the fan-out has begun
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):  # also when the wait above failed
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.time() + 20
    while _group(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert _group(proc.pid) == set()  # no step, forkserver or tool survives the run
    before = _snapshot(root)
    time.sleep(5)
    assert _snapshot(root) == before  # nothing materialises after the run died

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.STARTED  # what a killed run looks like
        health = instance.run_launcher.check_run_worker_health(record.dagster_run)
        assert health.status.value == "FAILED" and str(proc.pid) in health.msg
        monitor_started_run(instance, None, record, logging.getLogger("run_monitoring"))
        assert instance.get_run_by_id(record.dagster_run.run_id).status == dg.DagsterRunStatus.FAILURE


def test_comment_bank_works_under_a_lake_root_holding_a_quote(tmp_path):
    """The downstream nearest-comment bank is built by DuckDB from the clean corpus: its paths are
    bound or quoted, never pasted raw into SQL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lcaffect_pipeline.defs.downstream_assets import _comment_bank
    from lcaffect_pipeline.defs.resources import LakeResource

    from lcaffect_pipeline import schema

    root = tmp_path / "it's a lake"
    rows = [dict(platform="bilibili", video_id="v'1", comment_id=str(i), offset_ms=i, text=t, mode="scroll",
                 superchat=False, source_file="f") for i, t in enumerate(["好看", "哈哈哈", "好看"])]
    data = pa.Table.from_pylist(rows, schema=schema.CLEAN_COMMENTS_SCHEMA)
    tables.commit(root, "clean_comments", {"v'1": tables.write(root, "clean_comments", data, "v'1")})
    bank = _comment_bank(LakeResource(root=str(root), author_salt="s"))
    assert pq.read_table(bank).column("text").to_pylist() == sorted({"好看", "哈哈哈"})
