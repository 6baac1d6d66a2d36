"""Fan-out sized to the executor, and per-video metadata that scales (issue: orchestration cost)."""

from __future__ import annotations

import pytest

from lcaffect_pipeline.defs.fanout import per_video_summary
from lcaffect_pipeline.defs.resources import RunScope
from lcaffect_pipeline.stages import plan_chunks


def _sizes(chunks):
    return [end - start for start, end in chunks]


def test_chunks_keep_every_worker_busy_and_no_more():
    assert _sizes(plan_chunks(1000, workers=2)) == [500, 500]  # two processes on two cores, not 125
    assert _sizes(plan_chunks(32, workers=2)) == [16, 16]
    assert _sizes(plan_chunks(20, workers=2)) == [20]  # two chunks would be under the start-up floor
    assert _sizes(plan_chunks(40, workers=8)) == [20, 20]  # no more chunks than the 16-video floor allows
    assert _sizes(plan_chunks(10, workers=8)) == [10]
    assert _sizes(plan_chunks(5000, workers=2)) == [500] * 10  # the memory ceiling
    assert plan_chunks(0, workers=2) == [(0, 0)]  # one empty chunk: the collect step still runs


def test_an_explicit_chunk_size_wins_and_every_video_is_in_exactly_one_chunk():
    for n, workers, size in ((37, 3, None), (37, 3, 5), (1, 16, None), (999, 7, None)):
        chunks = plan_chunks(n, workers=workers, chunk_size=size)
        covered = [i for start, end in chunks for i in range(start, end)]
        assert covered == list(range(n))
        if size:
            assert max(_sizes(chunks)) == size


def test_k8s_gets_larger_chunks_by_default(monkeypatch):
    monkeypatch.setenv("LCAFFECT_EXECUTOR", "k8s")
    assert min(_sizes(RunScope().chunks(200)[:-1])) >= 64
    monkeypatch.setenv("LCAFFECT_EXECUTOR", "multiprocess")
    assert len(RunScope(workers=2).chunks(200)) == 2
    assert _sizes(RunScope(chunk_size=8).chunks(20)) == [8, 8, 4]


def test_summary_shows_failures_and_slowest_not_ten_thousand_rows():
    results = {f"v{i:05d}": {"video_id": f"v{i:05d}", "status": "done", "rows": 5, "seconds": i / 100}
               for i in range(10_000)}
    for i in (3, 7):
        results[f"v{i:05d}"] = {"video_id": f"v{i:05d}", "status": "failed", "reason": "ValueError: bad | file\nx"}
    md = per_video_summary(results)
    assert md.startswith("**10000 videos**: 9998 done, 0 skipped, 2 failed")
    assert "| v00003 | ValueError: bad   file x |" in md  # a reason cannot break the table
    assert "| v09999 | 99.99 | 5 |" in md  # the slowest first
    assert len(md.splitlines()) < 30
