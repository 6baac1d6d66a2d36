"""The clips side at scale: ``clips_job`` over N local videos against the same per-video work in
one plain Python process, in the same run.

One real video is rendered once from a fixture (``../shared/fixtures/video/big_buck_bunny_0_30.webm``,
looped to ``--seconds`` and re-encoded as H.264 ``--height``p + AAC, x264 ``medium``: what yt-dlp
fetches under the pipeline's ``max_height`` 360 cap), then copied N times with distinct video ids,
each with a copy of a real 973-comment Bilibili XML. Then:

0. ``corpus_job`` (the comments ``segments`` needs; timed apart, not part of the comparison);
1. in-process, one video after the other: copy into a lake + hash (what ``videos`` does), probe,
   16 kHz WAV, ``segment_video_stream`` (segment plan + comments in DuckDB) and
   ``write_shard_stream`` (decode + shards), the segments table's file: the functions the assets call;
2. ``dagster job execute -j clips_job`` from the shell, a fresh ``DAGSTER_HOME``;
3. the same command again with nothing changed (the no-op refresh).

Prints both times and their ratio, the no-op time, the peak memory (largest process of the runs),
the event log size, the in-process time (and CPU time) per video split into fetch, probe, audio,
comments, decode and shard writing, the lake's bytes per video, and the job's step times added
up per op (where the job's time went). Target: the job costs the in-process work plus a fixed
start-up, nothing per video; ``--max-concurrent 1`` runs the job's steps one at a time, on equal
terms with the one-process loop. docs/OPERATIONS.md scales these figures to the
paper's 829 hours. Default: 40 videos of 60 s, a few minutes on 2 busy cores.

    python bench/bench_clips_scale.py [--n 40] [--seconds 60] [--height 360] [--max-concurrent 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "fixtures"
VIDEO_FIXTURE = SHARED / "video" / "big_buck_bunny_0_30.webm"
COMMENTS_FIXTURE = SHARED / "bilibili" / "xml" / "2170097.xml"
CODE_LOCATION = ["-m", "lcaffect_pipeline.definitions"]
PARTS = ("fetch", "probe", "audio", "comments", "decode", "shards")


def render_video(dest: Path, seconds: float, height: int) -> Path:
    """The fixture looped to ``seconds``, H.264 (x264 medium, B-frames as web encodes have) + AAC."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(VIDEO_FIXTURE),
                    "-t", str(seconds), "-vf", f"scale=-2:{height}", "-c:v", "libx264", "-preset", "medium",
                    "-crf", "28", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(dest)],
                   check=True, capture_output=True)
    return dest


def make_world(folder: Path, n: int, video: Path) -> Path:
    (folder / "comments").mkdir(parents=True)
    (folder / "source_videos").mkdir()
    xml = COMMENTS_FIXTURE.read_bytes()
    lines = ["video_id,platform,source,language,video"]
    for i in range(n):
        vid = f"v{i:05d}"
        (folder / "comments" / f"{vid}.xml").write_bytes(xml)
        shutil.copy(video, folder / "source_videos" / f"{vid}.mp4")
        lines.append(f"{vid},bilibili,{folder / 'comments' / f'{vid}.xml'},zh,{folder / 'source_videos' / f'{vid}.mp4'}")
    catalogue = folder / "catalogue.csv"
    catalogue.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return catalogue


class _Timed:
    """An iterator whose ``next()`` time (the decoding, for a frame stream) is added up."""

    def __init__(self, it):
        self.it, self.seconds = iter(it), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self.it)
        finally:
            self.seconds += time.perf_counter() - t0


def in_process(folder: Path, job_lake: Path, n: int) -> dict[str, float]:
    """The clips work of every video in this process; seconds per part, summed over videos."""
    from lcaffect_pipeline import lake, tables, versions
    from lcaffect_pipeline.clips import ClipOptions, clean_comments
    from lcaffect_pipeline.segments import segment_video_stream
    from lcaffect_pipeline.shards import referenced_folders, write_shard_index, write_shard_stream
    from lcaffect_ml.contracts.shards import version_dir_name
    from lcaffect_pipeline.videos import copy_local_video
    from lcaffect_pipeline.probe import probe_video
    from lcaffect_pipeline.probe import extract_audio

    opts, out, folders = ClipOptions(), folder / "in_process_lake", set()
    cleaned = versions.latest(job_lake, "clean_comments")["results"]
    parts = dict.fromkeys(PARTS, 0.0)

    def timed(part, fn, *args, **kwargs):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        parts[part] += time.perf_counter() - t0
        return value

    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    for i in range(n):
        vid = f"v{i:05d}"
        source = folder / "source_videos" / f"{vid}.mp4"
        have = timed("fetch", lambda: (lake.file_hash(source), copy_local_video(source, out / "videos", vid))[1])
        timed("fetch", lake.file_hash, have.path)
        probe = timed("probe", probe_video, have.path)
        timed("audio", extract_audio, have.path, out / "audio" / f"{vid}.wav", probe=probe)
        comments = timed("comments", clean_comments, job_lake, {"video_id": vid, "platform": "bilibili"},
                         cleaned[vid]["output_hash"])
        table, stacks = timed("comments", segment_video_stream, have.path, comments, segment_s=opts.segment_s,
                              comments_per_segment=opts.comments_per_segment, frames_per_segment=opts.frames_per_segment,
                              size=opts.size, video_id=vid, probe=probe)
        frames = _Timed(stacks)
        version = version_dir_name(lake.file_hash(have.path))  # the asset's: a hash of all its inputs
        table = timed("shards", write_shard_stream, table, frames, out / "shards", vid, max_shard_bytes=opts.max_shard_bytes,
                      version=version)
        timed("shards", tables.write, out, "segments", table, vid)
        folders |= referenced_folders(table.column("shard").to_pylist())
        parts["shards"] -= frames.seconds
        parts["decode"] += frames.seconds
    timed("shards", write_shard_index, out / "shards", folders)
    return {"total": time.perf_counter() - t0, "cpu": _cpu_seconds() - cpu0, **parts}


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (ffmpeg, ffprobe)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_job(job: str, config: Path, home: Path) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).parent / "dagster"), "job", "execute", *CODE_LOCATION, "-j", job, "-c", str(config)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{job} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def step_seconds(home: Path, job: str) -> dict[str, float]:
    """Wall seconds of the latest ``job`` run's steps, added up per op (``segments_work`` is every
    chunk of segments): where the run's time went."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=1)[0]
        totals: dict[str, float] = {}
        for step in instance.get_run_step_stats(run.run_id):
            op = step.step_key.split("[")[0].rsplit(".", 1)[-1]
            if step.start_time and step.end_time:
                totals[op] = totals.get(op, 0.0) + step.end_time - step.start_time
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="videos (default 40)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each video (default 60 s)")
    ap.add_argument("--height", type=int, default=360, help="picture height (default 360, the download cap)")
    ap.add_argument("--max-concurrent", type=int, help="steps at once in the job (default: the CPU count); "
                    "1 compares it with the in-process loop on equal terms")
    ap.add_argument("--keep", help="work in this (new or empty) folder and leave it there, for a look at the lake")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    for need in (VIDEO_FIXTURE, COMMENTS_FIXTURE):
        if not need.is_file():
            sys.exit(f"{need} is absent (../shared/fixtures)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        video = render_video(folder / "one.mp4", args.seconds, args.height)
        catalogue = make_world(folder, args.n, video)
        home = folder / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        job_lake = folder / "lake"
        config = folder / "run.yaml"
        config.write_text(json.dumps({"resources": {
            "catalogue": {"config": {"path": str(catalogue)}},
            "lake": {"config": {"root": str(job_lake), "author_salt": "bench"}},
            "crawler": {"config": {"min_interval_s": 0.0}}},
            **({"execution": {"config": {"multiprocess": {"max_concurrent": args.max_concurrent}}}}
               if args.max_concurrent else {})}))
        corpus = run_job("corpus_job", config, home)
        work = in_process(folder, job_lake, args.n)
        first = run_job("clips_job", config, home)
        steps = step_seconds(home, "clips_job")
        noop = run_job("clips_job", config, home)
        noop_steps = step_seconds(home, "clips_job")
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        events_mib = folder_mib(home / "storage") if (home / "storage").exists() else folder_mib(home)
        sizes = {part: folder_mib(job_lake / part) / args.n for part in ("videos", "audio", "shards")}
    total = work["total"]
    per_video = {k: round(1000 * v / args.n) for k, v in work.items()}
    result = {"videos": args.n, "seconds_each": args.seconds, "height": args.height, "codec": "h264+aac",
              "corpus_job_s": corpus, "in_process_s": total, "clips_job_s": first, "ratio": first / total,
              "overhead_s": first - total, "noop_s": noop, "peak_rss_mib": peak_mib, "event_log_mib": events_mib,
              "in_process_ms_per_video": per_video, "lake_mib_per_video": {k: round(v, 2) for k, v in sizes.items()},
              "clips_job_step_s": {k: round(v, 1) for k, v in steps.items()},
              "noop_step_s": {k: round(v, 1) for k, v in noop_steps.items()}}
    print(f"{args.n} videos of {args.seconds:g} s, {args.height}p H.264+AAC ({args.n * args.seconds / 3600:.2f} h); "
          f"corpus_job first {corpus:.1f} s")
    print(f"in-process {total:.1f} s; clips_job {first:.1f} s ({first / total:.2f}x, {first - total:+.1f} s); "
          f"no-op re-run {noop:.1f} s; peak RSS {peak_mib:.0f} MiB; event log {events_mib:.1f} MiB")
    print("in-process per video (ms): " + ", ".join(f"{k} {per_video[k]}" for k in ("total", "cpu", *PARTS))
          + " (cpu: CPU time, ffmpeg's included; decoders use several threads)")
    print("lake per video (MiB): " + ", ".join(f"{k} {v:.2f}" for k, v in sizes.items()))
    for name, times in (("clips_job", steps), ("no-op", noop_steps)):
        print(f"{name} steps (s, chunks added up): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
