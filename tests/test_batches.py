"""V2LC batches are drawn across many videos, and each step samples the comments it trains on.

Measured from the real loader (``SegmentStream`` through ``make_loader``, with worker processes
and DDP ranks) over shards written in the contract's layout.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from lcaffect_ml.data import SegmentStream, load_shard_index, make_loader
from lcaffect_ml.synthetic import write_synthetic_shards

BATCH = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """72 videos of 12 segments (neighbouring segments would crowd a batch), tiny frames."""
    root = tmp_path_factory.mktemp("corpus")
    index = write_synthetic_shards(root, n_videos=72, segments_per_video=12, frames=2, size=8, seed=5,
                                   empty_fraction=0.0, max_comments=5)
    return load_shard_index(index)


def _batches(stream, n, workers=0):
    it = iter(make_loader(stream, num_workers=workers))
    return [next(it) for _ in range(n)]


def _per_video(batch) -> Counter:
    return Counter(batch["video_id"])


@pytest.mark.parametrize("workers", [0, 2])
def test_default_batches_take_at_most_two_segments_of_a_video(corpus, workers):
    batches = _batches(SegmentStream(corpus, batch_size=BATCH, seed=1), 16, workers)  # about 1.2 epochs
    assert all(len(b["video_id"]) == BATCH for b in batches)
    worst = max(max(_per_video(b).values()) for b in batches)
    distinct = [len(_per_video(b)) for b in batches]
    assert worst <= 2, f"a video gave {worst} segments to one batch"
    assert min(distinct) >= BATCH // 2, distinct


def test_without_the_cap_the_old_reader_crowds_batches(corpus):
    """The measurement that motivated the cap: 4 open shards through a 64-sample buffer."""
    old = SegmentStream(corpus, batch_size=BATCH, seed=1, open_shards=4, max_per_video=None)
    worst = max(max(_per_video(b).values()) for b in _batches(old, 6))
    assert worst > 2


def test_the_cap_holds_for_each_rank_under_ddp(corpus):
    for rank in (0, 1):
        stream = SegmentStream(corpus, batch_size=BATCH // 2, seed=2, rank=rank, world_size=2)
        for batch in _batches(stream, 10):
            assert max(_per_video(batch).values()) <= 2
    # the two ranks read disjoint videos in an epoch
    a = {v for b in _batches(SegmentStream(corpus, batch_size=8, seed=2, rank=0, world_size=2), 4) for v in b["video_id"]}
    b = {v for b in _batches(SegmentStream(corpus, batch_size=8, seed=2, rank=1, world_size=2), 4) for v in b["video_id"]}
    assert a.isdisjoint(b)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_replays_capped_batches_and_comment_samples_exactly(corpus, workers):
    kw = dict(batch_size=BATCH, seed=3)
    full = _batches(SegmentStream(corpus, **kw), 14, workers)
    resumed = _batches(SegmentStream(corpus, start_batch=9, **kw), 5, workers)
    for a, b in zip(full[9:], resumed):
        assert a["video_id"] == b["video_id"] and torch.equal(a["segment_index"], b["segment_index"])
        assert a["comments"] == b["comments"] and torch.equal(a["frames"], b["frames"])


def test_a_tiny_corpus_is_not_stalled_by_the_cap(corpus):
    """Fewer videos than batch / cap: segments over the cap wait, then go through."""
    few = [s for s in corpus if s.video_id in {corpus[0].video_id, corpus[1].video_id}]
    batches = _batches(SegmentStream(few, batch_size=8, seed=0), 6)
    assert all(len(b["video_id"]) == 8 for b in batches)


# ------------------------------------------------------------------ comments per step


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """Segments with 30 comments each, as shards now keep up to 32."""
    root = tmp_path_factory.mktemp("busy")
    index = write_synthetic_shards(root, n_videos=4, segments_per_video=4, frames=2, size=8, seed=9,
                                   empty_fraction=0.0, max_comments=30, min_comments=30)
    return load_shard_index(index)


def test_each_epoch_samples_five_of_the_stored_comments_in_order(busy):
    stream = SegmentStream(busy, batch_size=4, seed=0, max_comments=5)
    seen: dict[tuple, list[list[str]]] = {}
    for seg in _take(stream.slot_segments(0, 1), 16 * 3):  # three epochs
        seen.setdefault((seg.video_id, seg.segment_index), []).append(seg.comments)
    stored = _stored_comments(busy)
    for key, draws in seen.items():
        assert len(draws) == 3 and all(len(d) == 5 for d in draws)
        for d in draws:  # a subset of the segment's comments, in their order of appearance
            assert _is_subsequence(d, stored[key])
        assert len({tuple(d) for d in draws}) > 1  # another sample in another epoch
    union = {c for draws in seen.values() for d in draws for c in d}
    assert len(union) > 5 * len(seen)  # more than a fixed top-5 ever shows


def test_comment_samples_depend_on_the_seed_not_on_the_reader(busy):
    a = SegmentStream(busy, batch_size=4, seed=0)
    b = SegmentStream(busy, batch_size=4, seed=0, open_shards=1, shuffle_buffer=1)
    c = SegmentStream(busy, batch_size=4, seed=1)
    pick = {(s.key, s.url): s.comments for s in _take(a.slot_segments(0, 1), 16)}
    assert pick == {(s.key, s.url): s.comments for s in _take(b.slot_segments(0, 1), 16)}
    assert pick != {(s.key, s.url): s.comments for s in _take(c.slot_segments(0, 1), 16)}


def _is_subsequence(part, whole) -> bool:
    rest = iter(whole)
    return all(any(c == w for w in rest) for c in part)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _stored_comments(shards):
    from lcaffect_ml.data import iter_raw_samples, parse_meta

    out = {}
    for shard in shards:
        for raw in iter_raw_samples(shard.url, select=("json",)):
            meta = parse_meta(raw)
            out[(meta["video_id"], meta["segment_index"])] = meta["comments"]
    return out
