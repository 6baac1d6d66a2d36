"""Frame sampling speed against the ffmpeg command line decoding the same file with the same threads.

    python bench/bench_frames.py [--seconds 60] [--threads 2] [--repeat 3] [--web FILE] [--all-p FILE]

Encodes two 720p H.264 files (lavfi testsrc2, 30 fps, x264 ``medium``; ``--web``/``--all-p``
use given files instead):

  web-like  x264's B-frames (3, pyramid) and a keyframe every 2-5 s (seeded random gaps),
            as video on the web is usually encoded
  all-P     no B-frames, the same keyframes

and times on each file, interleaved and best of ``--repeat``:

  baseline  ffmpeg -threads N -i FILE -f null -          (decodes every frame, no scaling)
  fast      segment_video(FILE, size=224, frames_per_segment=8, threads=N)   (the default)
  exact     segment_video(..., exact=True, threads=N)
  decord    segment_video(..., backend="decord", threads=N)   (exact, decoded by decord)

It prints wall-clock and CPU times and the speed ``baseline / time`` of each (targets for
``fast``: >= 1.15x on the web-like file, >= 0.9x on the all-P one; ``decord`` is there for
users choosing ``frame_backend``). On a machine shared with
other work the CPU-time ratio moves less than the wall-clock one; run it more than once.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lcaffect_pipeline.segments import segment_video  # noqa: E402
from lcaffect_pipeline.probe import probe_video  # noqa: E402


def keyframe_times(seconds: int, seed: int = 0) -> list[float]:
    rng, t, out = random.Random(seed), 0.0, []
    while t < seconds:
        out.append(round(t, 2))
        t += rng.uniform(2.0, 5.0)
    return out


def make_video(path: Path, seconds: int, bframes: int) -> None:
    keys = ",".join(str(t) for t in keyframe_times(seconds))
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-c:v", "libx264", "-preset", "medium", "-x264-params", f"bframes={bframes}:keyint=150:scenecut=0",
         "-force_key_frames", keys, "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(fn, who: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``fn()`` (CPU of this process, or of its children)."""
    wall, cpu = time.perf_counter(), cpu_seconds(who)
    fn()
    return time.perf_counter() - wall, cpu_seconds(who) - cpu


def bench(video: Path, threads: int, repeat: int) -> dict[str, tuple[float, float]]:
    runs = {
        "baseline ffmpeg -f null": (resource.RUSAGE_CHILDREN, lambda: subprocess.run(
            ["ffmpeg", "-v", "error", "-threads", str(threads), "-i", str(video), "-f", "null", "-"], check=True)),
        "segment_video fast": (resource.RUSAGE_SELF, lambda: segment_video(video, threads=threads)),
        "segment_video exact": (resource.RUSAGE_SELF, lambda: segment_video(video, exact=True, threads=threads)),
        # decord's decoder threads run in this process: RUSAGE_SELF counts them.
        "segment_video decord": (resource.RUSAGE_SELF, lambda: segment_video(video, backend="decord", threads=threads)),
    }
    best = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeat):  # interleaved, so machine noise hits every contender alike
        for name, (who, fn) in runs.items():
            wall, cpu = timed(fn, who)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def report(label: str, video: Path, best: dict[str, tuple[float, float]], threads: int) -> None:
    probe = probe_video(video)
    base_wall, base_cpu = best["baseline ffmpeg -f null"]
    print(f"{label}: {probe.duration_s:.0f} s {probe.width}x{probe.height} {probe.fps:.0f} fps {probe.video_codec}; "
          f"threads={threads}; cpus={os.cpu_count()}; load {os.getloadavg()[0]:.1f}")
    for name, (wall, cpu) in best.items():
        print(f"  {name:26s} wall {wall:6.2f} s ({base_wall / wall:4.2f}x)   cpu {cpu:6.2f} s ({base_cpu / cpu:4.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--web", type=Path, help="a web-like encode to use instead of generating one")
    ap.add_argument("--all-p", type=Path, help="an all-P-frame encode to use instead of generating one")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for label, given, bframes in (("web-like", args.web, 3), ("all-P", args.all_p, 0)):
            if given is None:
                given = Path(tmp) / f"{label}.mp4"
                print(f"encoding {args.seconds} s 720p {label} (x264 medium, bframes={bframes}) ...", flush=True)
                make_video(given, args.seconds, bframes)
            videos[label] = given
        for label, video in videos.items():
            report(label, video, bench(video, args.threads, args.repeat), args.threads)


if __name__ == "__main__":
    main()
