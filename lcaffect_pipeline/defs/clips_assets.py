"""Clips assets: videos → probes → audio; segments (with comments and frames) → training shards."""

import dagster as dg

from .. import clips, plots, tables, versions
from ..clips import shards_dir
from ..lake import as_path, combine_hashes
from .fanout import keyed, per_video_asset
from .resources import ClipsResource, LakeResource

GROUP = "clips"
OWNERS = ["team:lcaffect-data"]


def _fetch_args(context, up):
    opts = context.resources.clips.options()
    return lambda video: {"opts": opts}


def _probe_args(context, up):
    fetched = keyed(up["videos"])
    return lambda video: {"fetched": fetched.get(video["video_id"])}


def _audio_args(context, up):
    probes = keyed(up["video_probes"])
    return lambda video: {"probe": probes.get(video["video_id"])}


def _segment_args(context, up):
    probes, comments = keyed(up["video_probes"]), keyed(up["clean_comments"])
    opts = context.resources.clips.options()
    return lambda video: {"probe": probes.get(video["video_id"]), "opts": opts,
                          "comments_hash": (comments.get(video["video_id"]) or {}).get("output_hash")}


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
        sheet = clips.contact_sheet(context.resources.lake.path(), done[0]["video_id"], done[0]["output_hash"])
        if sheet is not None:
            meta["contact_sheet"] = dg.MetadataValue.md(f"{done[0]['video_id']}\n\n" + plots.markdown_image(plots.png_from_array(sheet), "sampled frames"))
        meta["frames_bytes_written"] = sum(r["metrics"].get("frames_bytes", 0) for r in done)
    return meta


videos = per_video_asset(
    name="videos", stage="videos", upstream="video_catalogue", stage_fn=clips.fetch_video, stage_args=_fetch_args, finish=_no_metadata,
    work_resources={"clips"}, description="The catalogue's videos in the lake (local copies or yt-dlp downloads, capped at max_height).",
    code_version="1", group_name=GROUP, kinds={"python", "video"})

video_probes = per_video_asset(
    name="video_probes", stage="video_probes", upstream="videos", stage_fn=clips.probe_one, stage_args=_probe_args, finish=_probe_finish,
    description="ffprobe of every video (duration, fps, size, audio); undecodable videos are reported and excluded.",
    code_version="1", group_name=GROUP, kinds={"python", "ffmpeg"})

audio = per_video_asset(
    name="audio", stage="audio", upstream="video_probes", stage_fn=clips.audio_one, stage_args=_audio_args, finish=_no_metadata,
    description="16 kHz mono WAV of each video's audio track, for the acoustic features.",
    code_version="1", group_name=GROUP, kinds={"python", "ffmpeg"})

segments = per_video_asset(
    name="segments", stage="segments", upstream=("video_probes", "clean_comments"), stage_fn=clips.segment_one, stage_args=_segment_args,
    finish=_segments_finish, work_resources={"clips"}, table="segments",
    description="8-second segments with up to K selected live comments and sampled frames (the Delta table `segments`), "
                "written as each video's WebDataset shards in a folder per version of its inputs (never overwritten).",
    code_version="1", group_name=GROUP, kinds={"python", "parquet"})


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"webdataset"},
    owners=OWNERS,
    ins={"segs": dg.AssetIn("segments")},
    description="The training shard index over the shard folders the segments materialisation names, one per video: "
                "a content-addressed shards/index-{sha16}.json (shards/index.json is a copy of the latest).",
)
def training_shards(context: dg.AssetExecutionContext, lake: LakeResource, segs: dict) -> dg.Output:
    from ..shards import write_shard_index

    root = lake.path()
    # The segments materialisation names each video's shard version: older folders stay in the
    # lake for the indexes (and models) that name them, and are not in this index.
    folders = [f for r in segs["results"].values() if r.get("output_hash") and (f := clips.shard_folder_of(root, r))]
    index_path, entries = write_shard_index(shards_dir(root), folders)
    samples = sum(e.get("samples", 0) for e in entries)
    version = combine_hashes({e["url"]: e.get("sha256", "") for e in entries})
    value = {"index": str(index_path), "shards": len(entries), "samples": samples, "data_version": version,
             "segments_version": (segs.get("table_version") or {}).get("segments"),
             "reads": versions.reads({"segments": segs})}
    return dg.Output(
        value,
        data_version=dg.DataVersion(version),
        metadata={
            "index": dg.MetadataValue.path(str(index_path)),
            "shards": len(entries),
            "samples": samples,
            "bytes": dg.MetadataValue.int(sum(e.get("bytes", 0) for e in entries)),
            **({"segments_version": value["segments_version"]} if value["segments_version"] is not None else {}),
            "lineage": dg.MetadataValue.md(versions.lineage_markdown(root, value, "training_shards")),
        },
    )


@dg.asset_check(asset=training_shards, description="Every segment has frames of the declared shape and the shard index matches the segments table "
                 "(the samples read back for the videos the last segments run wrote; every other shard against the index)")
def shards_match_segments(lake: LakeResource, clips: ClipsResource) -> dg.AssetCheckResult:
    from ..shards import verify_shards
    from lcaffect_ml.contracts.shards import INDEX_NAME

    try:
        table = tables.read(lake.path(), "segments")
    except tables.VersionError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"segments": 0, "reason": f"no segments to check: {exc}"})
    if not table.num_rows:
        return dg.AssetCheckResult(passed=False, metadata={"segments": 0, "reason": "no segments to check"})
    latest = versions.latest(lake.path(), "training_shards") or {}
    index_name = as_path(latest["index"]).name if latest.get("index") else INDEX_NAME  # the index this run wrote
    # Reading every shard back on every run would cost a pass over the whole corpus of frames
    # (hundreds of GB at the paper's scale) even when nothing changed: the shards written by the
    # last segments run are read, the others were read when they were written.
    written = _written_by_last_segments_run(lake.path())
    problems = verify_shards(table, shards_dir(lake.path()), deep_videos=written, index_name=index_name)
    problems += [f"{r['video_id']}#{r['segment_index']}: {len(r['frame_times_ms'])} frames, declared {clips.frames_per_segment}"
                 for r in table.select(["video_id", "segment_index", "frame_times_ms"]).to_pylist()
                 if len(r["frame_times_ms"]) != clips.frames_per_segment]
    read_back = table.num_rows if written is None else sum(v in written for v in table.column("video_id").to_pylist())
    return dg.AssetCheckResult(passed=not problems, metadata={"segments": table.num_rows, "segments_read_back": read_back,
                                                              "index": index_name, "problems": "\n".join(problems[:20])})


def _written_by_last_segments_run(root) -> set[str] | None:
    """Videos whose segments the last ``segments`` materialisation wrote (None: unknown, read all)."""
    import json

    path = root / versions.MANIFESTS / "segments.json"
    try:
        results = json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return None
    return {vid for vid, r in results.items() if r.get("status") == "done"}


ASSETS = [videos, video_probes, audio, segments, training_shards]
CHECKS = [shards_match_segments]
