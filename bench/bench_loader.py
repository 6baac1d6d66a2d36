"""Does the shard loader keep a GPU fed at the real shape? Compressed against raw shards, one run.

    python bench/bench_loader.py [--videos 64] [--segments-per-video 4] [--batch-size 64]
                                 [--workers 1 2] [--batches 6] [--gpu-clips-per-s 125 370] [--s3]

Writes two local lakes of the same segments with the project's writer
(``lcaffect_pipeline.shards.write_shard_stream`` and ``write_shard_index``): the default frame codec (JPEG) and raw ``npy``, 8
frames of 224 px per segment, the real frames of the fixture videos (``bench_codecs.load_segments``)
dealt out to ``--videos`` videos. For each lake and each worker count it runs the training
program's loader alone (``train_v2lc.train_loader`` through ``gpu_check.loader_clips_per_s``:
shuffle buffer, per-video cap, tokenisation of 5 comments, collation; clips/s after the first
batch) and prints clips/s, clips/s per worker, and the workers one GPU needs at
``--gpu-clips-per-s`` (the TimeSformer-base training rate; default: the README's estimate, 0.8
TFLOP a clip at 10-30 % of an H100's 989 TFLOP/s, i.e. 125-370 clips/s; measure it with
``bench/gpu_check.py``). ``--s3`` also copies both lakes to the object store that
``scripts/s3_server.sh`` starts (run under its ``env.sh``: ``LCAFFECT_S3_BUCKET``, the endpoint
and keys) and measures the loader reading them from there.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from bench_codecs import FIXTURES, load_segments  # noqa: E402
from gpu_check import loader_clips_per_s  # noqa: E402

from lcaffect_ml.contracts.shards import DEFAULT_FRAME_CODEC  # noqa: E402
from lcaffect_ml.train_v2lc import TrainConfig  # noqa: E402
from lcaffect_pipeline.schema import SEGMENTS_SCHEMA  # noqa: E402
from lcaffect_pipeline.shards import referenced_folders, write_shard_index, write_shard_stream  # noqa: E402


def write_lake(root: Path, segments: list, videos: int, per_video: int, codec: str) -> Path:
    """``videos`` videos of ``per_video`` segments (the real segments, cycled), their index's path."""
    shards, folders = root / "shards", set()
    for v in range(videos):
        vid = f"v{v:04d}"
        rows = [{"video_id": vid, "segment_index": i, "start_ms": 8000 * i, "end_ms": 8000 * (i + 1),
                 "comments": [f"{vid} 弹幕 {i} {k}" for k in range(8)], "comment_ids": [str(k) for k in range(8)],
                 "comment_count": 8, "frame_times_ms": [8000 * i + 1000 * j for j in range(8)],
                 "shard": None, "sample_key": None} for i in range(per_video)]
        stacks = ((segments[(v * per_video + i) % len(segments)], row["frame_times_ms"]) for i, row in enumerate(rows))
        table = write_shard_stream(pa.Table.from_pylist(rows, schema=SEGMENTS_SCHEMA), stacks, shards, vid,
                                   version="bench", codec=codec)
        folders |= referenced_folders(table.column("shard").to_pylist())
    return write_shard_index(shards, folders)[0]


def upload(shards: Path, codec: str) -> str:
    """The shards folder copied to ``s3://$LCAFFECT_S3_BUCKET/bench-loader/{codec}/shards``; its index's URL."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=os.environ["LCAFFECT_S3_ENDPOINT"])
    dest = f"{os.environ['LCAFFECT_S3_BUCKET']}/bench-loader/{codec}/shards"
    fs.put(str(shards), dest, recursive=True)
    return f"s3://{dest}/index.json"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=64)
    ap.add_argument("--segments-per-video", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64, help="the paper configs' batch per GPU")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, TrainConfig.__dataclass_fields__["num_workers"].default])
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--gpu-clips-per-s", type=float, nargs="+", default=[125.0, 370.0])
    ap.add_argument("--s3", action="store_true", help="also read the lakes from the S3 store of scripts/s3_server.sh")
    args = ap.parse_args(argv)
    segments = [s for stacks in load_segments(FIXTURES, 224, 8).values() for s in stacks]
    print(f"# {len(segments)} real segments (8 x 224 px), {args.videos} videos x {args.segments_per_video}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs")
    gpu = " ".join(f"{'workers@' + format(r, 'g'):>12}" for r in args.gpu_clips_per_s)
    print(f"{'lake':6} {'codec':6} {'lake MB':>8} {'workers':>7} {'clips/s':>8} {'per worker':>10} {gpu}")
    with tempfile.TemporaryDirectory() as tmp:
        for codec in (DEFAULT_FRAME_CODEC, "npy"):
            index = write_lake(Path(tmp) / codec, segments, args.videos, args.segments_per_video, codec)
            mb = sum(p.stat().st_size for p in index.parent.rglob("*.tar")) / 1e6
            places = [("local", str(index))] + ([("s3", upload(index.parent, codec))] if args.s3 else [])
            for where, url in places:
                for w in args.workers:
                    cfg = TrainConfig(shards=url, output_dir=str(Path(tmp) / "out"), batch_size=args.batch_size,
                                      num_workers=w)
                    rate = loader_clips_per_s(cfg, torch.device("cpu"), args.batches)["clips_per_s"]
                    per = rate / max(w, 1)
                    need = " ".join(f"{math.ceil(r / per):12d}" for r in args.gpu_clips_per_s)
                    print(f"{where:6} {codec:6} {mb:8.0f} {w:7d} {rate:8.1f} {per:10.1f} {need}", flush=True)


if __name__ == "__main__":
    main()
