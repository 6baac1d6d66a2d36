"""Per-video stages: run a function over many videos, skip what has not changed, never stop a batch.

Each stage keeps one small JSON state file per video under ``{lake}/_state/{stage}/``: the
fingerprint of the inputs it last processed and the content hash of what it wrote. A video
whose inputs hash the same as last time (and whose output still exists) is skipped, so a
re-run of the corpus with nothing new does no work and reports the same data version. One
video's failure is recorded with its reason and the rest of the batch goes on.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from lcaffect_ml.contracts import lakepaths

from . import lake

log = logging.getLogger(__name__)


@dataclass
class VideoResult:
    video_id: str
    status: str  # "done" | "skipped" | "failed"
    fingerprint: str | None = None  # hash of the inputs that produced the output
    output_hash: str | None = None  # content hash of what the stage wrote for this video
    rows: int = 0
    reason: str | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Skip(Exception):
    """Raised by a stage function: the inputs are unchanged, keep the previous output.

    A function may instead *return* a ``skipped`` result: the output is kept as well, and the
    result's state is saved (say, the new modification time of a touched but unchanged file,
    so that the next run need not read it again).
    """


def state_path(root, stage: str, video_id: str):
    return lake.under(root, "_state", stage, video_id, ext=".json")


def load_state(root, stage: str, video_id: str) -> dict[str, Any] | None:
    path = state_path(root, stage, video_id)
    if not path.exists():
        return None
    try:  # paths inside the lake are kept relative to it (a copied lake reads its own files)
        return lakepaths.from_lake(root, json.loads(path.read_text()), str(path))
    except (OSError, ValueError):
        return None  # a corrupt state file (or one naming files outside the lake) only costs a recomputation


def save_state(root, stage: str, result: VideoResult) -> None:
    lake.atomic_write_bytes(state_path(root, stage, result.video_id),
                            json.dumps(lakepaths.to_lake(root, result.to_dict()), sort_keys=True).encode())


def forget(root, stage: str) -> int:
    """Drop every video's state of ``stage`` (after a rollback): the next run recomputes them."""
    folder = lake.under(root, "_state", stage)
    paths = list(folder.glob("*.json")) if folder.exists() else []
    for path in paths:
        path.unlink(missing_ok=True)
    return len(paths)


StageFn = Callable[[dict[str, Any], dict[str, Any] | None], VideoResult]


def run_stage(
    root,
    stage: str,
    videos: Iterable[dict[str, Any]],
    fn: StageFn,
    *,
    force: bool = False,
) -> list[VideoResult]:
    """Run ``fn(video, previous_state)`` for each video row; record state; collect results.

    ``fn`` decides whether its inputs changed (it gets the previous state, ``None`` when
    ``force``) and raises :class:`Skip` to keep the previous output.
    """
    results = []
    for video in videos:
        vid = video["video_id"]
        prev = None if force else load_state(root, stage, vid)
        started = time.perf_counter()
        returned = False
        try:
            result, returned = fn(video, prev), True
        except Skip:
            assert prev is not None, f"stage {stage} skipped {vid} without a previous state"
            result = VideoResult(**{**prev, "status": "skipped", "reason": None, "seconds": 0.0})
        except Exception as exc:  # one bad video never stops the batch
            log.warning("stage %s: video %s failed: %s", stage, vid, exc)
            log.debug("%s", traceback.format_exc())
            result = VideoResult(vid, "failed", reason=f"{type(exc).__name__}: {exc}")
            if prev and prev.get("output_hash"):
                # Keep serving the last good output; the failure is still reported.
                result.output_hash = prev["output_hash"]
                result.rows = prev.get("rows", 0)
        result.seconds = round(time.perf_counter() - started, 3)
        if result.status == "done" or (returned and result.status == "skipped"):
            save_state(root, stage, result)
        results.append(result)
    return results


def summarise(results: list[VideoResult]) -> dict[str, Any]:
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    return {
        "videos": len(results),
        **counts,
        "rows": sum(r.rows for r in results if r.output_hash),
        "data_version": lake.combine_hashes({r.video_id: r.output_hash for r in results if r.output_hash}),
        "failures": {r.video_id: r.reason for r in results if r.status == "failed"},
    }


def plan_chunks(n_videos: int, *, workers: int, min_chunk: int = 16, max_chunk: int = 500,
                chunk_size: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges that split ``n_videos`` into fan-out chunks.

    Each chunk is one step, that is one process (or one pod), and starting one costs seconds
    whatever it does; so by default there are just enough chunks to keep ``workers`` busy, none
    smaller than ``min_chunk`` videos (start-up amortised) and none larger than ``max_chunk``
    (bounded memory and a bounded loss when a step dies). ``chunk_size`` fixes the size instead.
    """
    if n_videos <= 0:
        return [(0, 0)]
    if chunk_size:
        size = max(1, int(chunk_size))
    else:
        n_chunks = max(1, min(int(workers), n_videos // max(1, min_chunk)))
        size = min(max(1, max_chunk), -(-n_videos // n_chunks))
    return [(i, min(i + size, n_videos)) for i in range(0, n_videos, size)]
