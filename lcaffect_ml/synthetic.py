"""Learnable toy shards in the shard contract's layout, for the tests, the benchmarks and the GPU check.

No network and no real video: each segment draws a class, and both its frames (a colour plus
noise) and its comments (that class's characters plus shared filler) reveal it, so a V2LC model
that learns anything retrieves above chance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .contracts.hashing import sha256_bytes
from .contracts.shards import INDEX_NAME, SHARDS_DIR, encode_sample, shard_name, video_dir_name


PALETTE = [(220, 40, 40), (40, 200, 60), (40, 70, 220), (230, 210, 40), (40, 210, 210), (200, 50, 200),
           (240, 140, 30), (120, 120, 120)]
CLASS_WORDS = ["红火热辣燃爆", "绿草森林清新", "蓝天海洋冷静", "黄金阳光灿烂", "青色湖水凉爽", "紫色梦幻神秘",
               "橙子活力温暖", "灰色阴天沉闷"]
FILLER = "的了啊吧呀哈"


def write_synthetic_shards(root: str | os.PathLike, n_videos: int = 12, segments_per_video: int = 8,
                           n_classes: int = 6, frames: int = 4, size: int = 32, max_comments: int = 5,
                           seed: int = 0, empty_fraction: float = 0.05, noise: float = 25.0,
                           max_shard_samples: int | None = None, min_comments: int = 1) -> Path:
    """Learnable toy shards in the contract's layout; returns the ``index.json`` path.

    Each segment draws a class: its frames are that class's colour plus noise, its 0-5 comments
    are drawn from that class's characters (plus shared filler characters). Used by the tests,
    the benchmarks and the GPU check (no network, no real video needed).
    """
    import webdataset as wds

    if not 1 <= n_classes <= len(PALETTE):
        raise ValueError(f"n_classes must be in 1..{len(PALETTE)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    index = []
    for v in range(n_videos):
        video_id = f"synth-{seed}-{v:04d}"
        folder = root / SHARDS_DIR / video_dir_name(video_id)
        folder.mkdir(parents=True, exist_ok=True)
        per_shard = max_shard_samples or segments_per_video
        for part, first in enumerate(range(0, segments_per_video, per_shard)):
            path = folder / shard_name(video_id, part)
            tmp = path.with_name(f".{path.name}.tmp")
            count = 0
            with wds.TarWriter(str(tmp)) as sink:
                for s in range(first, min(first + per_shard, segments_per_video)):
                    sink.write(_synthetic_sample(rng, video_id, s, n_classes, frames, size,
                                                 (min_comments, max_comments), empty_fraction, noise))
                    count += 1
            os.replace(tmp, path)
            data = path.read_bytes()
            index.append({"url": path.relative_to(root / SHARDS_DIR).as_posix(),  # lake-relative, as the pipeline's
                          "video_id": video_id, "samples": count, "bytes": len(data), "sha256": sha256_bytes(data)})
    index_path = root / SHARDS_DIR / INDEX_NAME
    tmp = index_path.with_name(f".{INDEX_NAME}.tmp")
    tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    os.replace(tmp, index_path)
    return index_path


def _synthetic_sample(rng: np.random.Generator, video_id: str, s: int, n_classes: int, frames: int,
                      size: int, n_range: tuple[int, int], empty_fraction: float, noise: float) -> dict[str, Any]:
    cls = int(rng.integers(n_classes))
    colour = np.array(PALETTE[cls], dtype=np.float32)
    shade = rng.uniform(0.7, 1.1, size=(frames, 1, 1, 1))
    pixels = colour * shade + rng.normal(0.0, noise, size=(frames, size, size, 3))
    n_comments = 0 if rng.random() < empty_fraction else int(rng.integers(n_range[0], n_range[1] + 1))
    words, comments = CLASS_WORDS[cls], []
    for _ in range(n_comments):
        length = int(rng.integers(2, 6))
        chars = [words[int(rng.integers(len(words)))] if rng.random() < 0.75 else FILLER[int(rng.integers(len(FILLER)))]
                 for _ in range(length)]
        comments.append("".join(chars))
    start = s * 8000
    meta = {"video_id": video_id, "segment_index": s, "start_ms": start, "end_ms": start + 8000,
            "comments": comments, "comment_ids": [f"{video_id}-{s}-{i}" for i in range(n_comments)],
            "comment_count": n_comments,
            "frame_times_ms": [start + int((i + 0.5) * 8000 / frames) for i in range(frames)]}
    return encode_sample(meta, np.clip(pixels, 0, 255).astype(np.uint8))
