"""Frame codecs for the training shards, on real footage: bytes, encode and decode cost, fidelity.

    python bench/bench_codecs.py [--videos DIR] [--size 224] [--frames 8] [--repeat 3]

Decodes every 8-frame segment of the fixture videos (``../shared/fixtures/video``, catalogue in
its README; the project's own ``segments.segment_video``, as ``clips_job`` does) at ``--size``
px, then for each candidate prints, per segment: bytes in the tar (member payload plus its tar
header and padding; mean and largest), encode and decode ms (best of ``--repeat``, one thread), the ratio to the raw
``.npy`` bytes of the same run, and PSNR against the exact frames (mean over segments, and the
worst segment). Candidates:

  npy              raw uint8 (T, S, S, 3): what shards held before frame codecs
  jpeg qQ 444|420  Pillow JPEG of the T frames stacked in one image (the shard codec ``jpeg``)
  jpeg-per-frame   T separate Pillow JPEGs (one tar member each), q90 4:4:4
  webp qQ          Pillow lossy WebP of the stacked image (the shard codec ``webp``)
  h264 crfC        the segment as an 8-frame H.264 clip (PyAV, libx264 yuv444p, all frames coded)

The bar for the default: bytes <= 1/5 of raw and PSNR >= 38 dB on every segment. Videos with no
complete segment (shorter than one) are skipped.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from lcaffect_ml.contracts.shards import decode_frames_member, encode_frames  # noqa: E402
from lcaffect_pipeline.segments import segment_video  # noqa: E402

TAR_BLOCK = 512
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "video"


def tar_bytes(payloads: list[bytes]) -> int:
    return sum(TAR_BLOCK + -(-len(p) // TAR_BLOCK) * TAR_BLOCK for p in payloads)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# A candidate is (encode, decode): encode(segment) -> [(member, bytes)], decode(that list) -> segment.
def shard_codec(codec: str, quality: int):
    return lambda seg: [encode_frames(seg, codec, quality)], lambda members: decode_frames_member(*members[0])


def jpeg_stack(quality: int, subsampling: int):
    def enc(seg):
        buf = io.BytesIO()
        Image.fromarray(seg.reshape(-1, seg.shape[2], 3)).save(buf, "JPEG", quality=quality, subsampling=subsampling)
        return [("frames.jpg", buf.getvalue())]

    def dec(members):
        tile = np.asarray(Image.open(io.BytesIO(members[0][1])))
        return tile.reshape(-1, tile.shape[1], tile.shape[1], 3)
    return enc, dec


def jpeg_per_frame(quality: int):
    def enc(seg):
        out = []
        for frame in seg:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, "JPEG", quality=quality, subsampling=0)
            out.append((f"f{len(out)}.jpg", buf.getvalue()))
        return out

    def dec(members):
        return np.stack([np.asarray(Image.open(io.BytesIO(p))) for _, p in members])
    return enc, dec


def h264(crf: int):
    import av

    def enc(seg):
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=1)
            stream.width = stream.height = seg.shape[1]
            stream.pix_fmt = "yuv444p"
            stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
            for frame in seg:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return [("frames.mp4", buf.getvalue())]

    def dec(members):
        with av.open(io.BytesIO(members[0][1])) as f:
            f.streams.video[0].thread_count = 1
            return np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])
    return enc, dec


def candidates():
    yield "npy", shard_codec("npy", 90)
    for q in (80, 90, 95):
        yield f"jpeg q{q} 444 (shard codec)", shard_codec("jpeg", q)
        yield f"jpeg q{q} 420", jpeg_stack(q, 2)
    yield "jpeg-per-frame q90 444", jpeg_per_frame(90)
    for q in (80, 90, 95):
        yield f"webp q{q} (shard codec)", shard_codec("webp", q)
    for crf in (18, 23):
        yield f"h264 crf{crf} 444", h264(crf)


def best_ms(fn, arg, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(arg)
        best = min(best, time.perf_counter() - t)
    return best * 1000, out


def load_segments(folder: Path, size: int, frames: int) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.iterdir()):
        try:
            _, stacks = segment_video(path, size=size, frames_per_segment=frames)
        except Exception as exc:  # a fixture built to fail decoding: say so and go on
            print(f"# {path.name}: skipped ({type(exc).__name__}: {exc})")
            continue
        if len(stacks):
            out[path.name] = stacks
        else:
            print(f"# {path.name}: skipped (no complete segment)")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=Path, default=FIXTURES)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    videos = load_segments(args.videos, args.size, args.frames)
    segs = [s for stacks in videos.values() for s in stacks]
    print(f"# {len(segs)} segments of {args.frames} x {args.size} px from {len(videos)} videos: "
          + ", ".join(f"{k} ({len(v)})" for k, v in videos.items()))
    print(f"{'candidate':28} {'bytes/seg':>10} {'largest':>8} {'x raw':>7} {'enc ms':>7} {'dec ms':>7} {'PSNR dB':>8} "
          f"{'worst':>6}")
    raw = None
    for name, (enc, dec) in candidates():
        sizes, enc_ms, dec_ms, scores = [], [], [], []
        for seg in segs:
            ms, members = best_ms(enc, seg, args.repeat)
            enc_ms.append(ms)
            sizes.append(tar_bytes([p for _, p in members]))
            ms, back = best_ms(dec, members, args.repeat)
            dec_ms.append(ms)
            scores.append(psnr(back, seg))
        mean_bytes = float(np.mean(sizes))
        raw = raw or mean_bytes
        print(f"{name:28} {mean_bytes:10.0f} {max(sizes):8d} {mean_bytes / raw:7.3f} {np.mean(enc_ms):7.2f} {np.mean(dec_ms):7.2f} "
              f"{np.mean(np.minimum(scores, 99)):8.1f} {min(scores):6.1f}")


if __name__ == "__main__":
    main()
