"""Clips assets: videos → probes → audio; segments (with comments and frames) → training shards."""

import dagster as dg

from .. import clips, plots, stages
from ..clips import shards_dir
from ..lake import combine_hashes, read_parquet
from .fanout import keyed, per_video_asset
from .resources import ClipsResource, LakeResource

GROUP = "clips"
OWNERS = ["team:lcaffect-data"]


def _runner(stage, make_fn):
    """A fan-out work function running ``make_fn(context, upstreams)(video, prev)`` per video."""

    def work(context, chunk, upstreams):
        root = context.resources.lake.path()
        return stages.run_stage(root, stage, chunk, make_fn(context, root, upstreams), force=context.resources.scope.force)

    return work


def _fetch(context, root, up):
    opts = context.resources.clips.options()
    return lambda video, prev: clips.fetch_video(video, prev, root=root, opts=opts)


def _probe(context, root, up):
    fetched = keyed(up["videos"])
    return lambda video, prev: clips.probe_one(video, prev, root=root, video_hash=(fetched.get(video["video_id"]) or {}).get("output_hash"))


def _audio(context, root, up):
    probes = keyed(up["video_probes"])
    return lambda video, prev: clips.audio_one(video, prev, root=root, probe=probes.get(video["video_id"]))


def _segment(context, root, up):
    probes, comments = keyed(up["video_probes"]), keyed(up["clean_comments"])
    opts = context.resources.clips.options()
    return lambda video, prev: clips.segment_one(
        video, prev, root=root, probe=probes.get(video["video_id"]),
        comments_hash=(comments.get(video["video_id"]) or {}).get("output_hash"), opts=opts)


def _no_metadata(context, manifest, upstreams):
    return {}


def _probe_finish(context, manifest, upstreams):
    done = [r for r in manifest["results"].values() if r.get("output_hash") and r["status"] != "failed"]
    hours = sum(float(r["metrics"].get("duration_s") or 0) for r in done) / 3600
    return {"hours": dg.MetadataValue.float(round(hours, 4)), "decodable": len(done)}


def _segments_finish(context, manifest, upstreams):
    done = [r for r in manifest["results"].values() if r["status"] == "done"]
    meta = {"segments": sum(r["rows"] for r in manifest["results"].values() if r.get("output_hash"))}
    if done:
        sheet = clips.contact_sheet(context.resources.lake.path(), done[0]["video_id"])
        if sheet is not None:
            meta["contact_sheet"] = dg.MetadataValue.md(f"{done[0]['video_id']}\n\n" + plots.markdown_image(plots.png_from_array(sheet), "sampled frames"))
        meta["frames_bytes_written"] = sum(r["metrics"].get("frames_bytes", 0) for r in done)
    return meta


videos = per_video_asset(
    name="videos", stage="videos", upstream="video_catalogue", work=_runner("videos", _fetch), finish=_no_metadata,
    work_resources={"clips"}, description="The catalogue's videos in the lake (local copies or yt-dlp downloads, capped at max_height).",
    code_version="1", group_name=GROUP, kinds={"python", "video"})

video_probes = per_video_asset(
    name="video_probes", stage="video_probes", upstream="videos", work=_runner("video_probes", _probe), finish=_probe_finish,
    description="ffprobe of every video (duration, fps, size, audio); undecodable videos are reported and excluded.",
    code_version="1", group_name=GROUP, kinds={"python", "ffmpeg"})

audio = per_video_asset(
    name="audio", stage="audio", upstream="video_probes", work=_runner("audio", _audio), finish=_no_metadata,
    description="16 kHz mono WAV of each video's audio track, for the acoustic features.",
    code_version="1", group_name=GROUP, kinds={"python", "ffmpeg"})

segments = per_video_asset(
    name="segments", stage="segments", upstream=("video_probes", "clean_comments"), work=_runner("segments", _segment),
    finish=_segments_finish, work_resources={"clips"},
    description="8-second segments with up to K selected live comments and sampled frames, written as each video's WebDataset shards.",
    code_version="1", group_name=GROUP, kinds={"python", "parquet"})


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"webdataset"},
    owners=OWNERS,
    ins={"segs": dg.AssetIn("segments")},
    description="The training shard index (shards/index.json) over every video's shards; rebuilt per video only where its segments changed.",
)
def training_shards(context: dg.AssetExecutionContext, lake: LakeResource, segs: dict) -> dg.Output:
    from ..shards import update_shard_index

    index_path = shards_dir(lake.path()) / "index.json"
    entries = update_shard_index(shards_dir(lake.path()))
    samples = sum(e.get("samples", 0) for e in entries)
    version = combine_hashes({e["url"]: e.get("sha256", "") for e in entries})
    return dg.Output(
        {"index": str(index_path), "shards": len(entries), "samples": samples, "data_version": version},
        data_version=dg.DataVersion(version),
        metadata={
            "index": dg.MetadataValue.path(str(index_path)),
            "shards": len(entries),
            "samples": samples,
            "bytes": dg.MetadataValue.int(sum(e.get("bytes", 0) for e in entries)),
        },
    )


@dg.asset_check(asset=training_shards, description="Every segment has frames of the declared shape and the shard index matches the segments table "
                 "(the samples read back for the videos the last segments run wrote; every other shard against the index)")
def shards_match_segments(lake: LakeResource, clips: ClipsResource) -> dg.AssetCheckResult:
    import pyarrow as pa

    from ..shards import verify_shards

    files = sorted((lake.path() / "segments").glob("*.parquet")) if (lake.path() / "segments").exists() else []
    if not files:
        return dg.AssetCheckResult(passed=False, metadata={"segments": 0, "reason": "no segments to check"})
    table = pa.concat_tables([read_parquet(f) for f in files])
    # Reading every shard back on every run would cost a pass over the whole corpus of frames
    # (hundreds of GB at the paper's scale) even when nothing changed: the shards written by the
    # last segments run are read, the others were read when they were written.
    written = _written_by_last_segments_run(lake.path())
    problems = verify_shards(table, shards_dir(lake.path()), deep_videos=written)
    problems += [f"{r['video_id']}#{r['segment_index']}: {len(r['frame_times_ms'])} frames, declared {clips.frames_per_segment}"
                 for r in table.select(["video_id", "segment_index", "frame_times_ms"]).to_pylist()
                 if len(r["frame_times_ms"]) != clips.frames_per_segment]
    read_back = table.num_rows if written is None else sum(v in written for v in table.column("video_id").to_pylist())
    return dg.AssetCheckResult(passed=not problems, metadata={"segments": table.num_rows, "segments_read_back": read_back,
                                                              "problems": "\n".join(problems[:20])})


def _written_by_last_segments_run(root) -> set[str] | None:
    """Videos whose segments the last ``segments`` materialisation wrote (None: unknown, read all)."""
    import json

    path = root / "_manifests" / "segments.json"
    try:
        results = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return None
    return {vid for vid, r in results.items() if r.get("status") == "done"}


ASSETS = [videos, video_probes, audio, segments, training_shards]
CHECKS = [shards_match_segments]
