"""One factory for per-video assets: plan → one step per chunk of videos → collect.

Why fan-out inside one run rather than one dynamic partition per video (README, "Per-video
work: fan-out inside one run, not partitions", weighs both; docs/ARCHITECTURE.md shows the
graph): the README command, the daily refresh and a re-run of one video each stay one run
(``dagster job execute`` has no partition flag, and thousands of partitions would mean
thousands of runs per refresh). Each chunk is a step, so the multiprocess executor runs
chunks in parallel here and ``k8s_job_executor`` runs each as its own pod at scale.
Incrementality comes from the per-video state in the lake (``stages.run_stage``): a video
whose inputs hash the same as last time is skipped. Per-video status is a metadata table.
"""


import re
from typing import Any, Callable

import dagster as dg

from .. import stages, versions
from ..corpus import load_catalogue_from_lake
from .resources import LakeResource, RunScope

# stage_fn(video, prev, *, root, **kwargs) -> VideoResult: the plain per-video stage (clips, corpus)
StageFn = Callable[..., stages.VideoResult]
# stage_args(context, upstreams: {asset name: manifest}) -> (video -> stage_fn's other keyword
# arguments), called once per chunk (a crawl session, the upstream results keyed by video id)
StageArgs = Callable[..., Callable[[dict], dict[str, Any]]]
# finish(context, manifest) -> metadata dict (the manifest already has per-video results)
FinishFn = Callable[..., dict[str, Any]]


def _mapping_key(i: int) -> str:
    return f"chunk_{i:05d}"


def per_video_asset(
    *,
    name: str,
    stage: str,
    upstream: str | tuple[str, ...],
    stage_fn: StageFn,
    stage_args: StageArgs,
    finish: FinishFn,
    description: str,
    code_version: str,
    group_name: str,
    kinds: set[str],
    work_resources: set[str] = frozenset(),
    pool: str | None = None,
    automation_condition: dg.AutomationCondition | None = None,
    table: str | None = None,
) -> dg.AssetsDefinition:
    """Build the graph-backed asset ``name`` over the catalogue's videos.

    With ``table`` (a ``lcaffect_pipeline.tables`` name), each video's ``output_hash`` names the
    content-addressed file its stage wrote, and the collect step commits them as the table's next
    version (recorded in the manifest as ``table_version``)."""

    names = (upstream,) if isinstance(upstream, str) else tuple(upstream)
    plan = _plan_op(name, names)
    work_op = _work_op(name, stage, stage_fn, stage_args, work_resources, pool)
    collect = _collect_op(name, stage, finish, table)

    def chain(**inputs):
        chunks, manifests = plan(**inputs)
        return collect(chunks.map(lambda c: work_op(c, manifests)).collect(), manifests)

    if len(names) == 1:
        def compose(a):
            return chain(**{names[0]: a})
    elif len(names) == 2:
        def compose(a, b):
            return chain(**{names[0]: a, names[1]: b})
    else:
        raise ValueError("per_video_asset takes one or two upstream assets")

    compose.__name__ = name
    return dg.graph_asset(
        compose,
        name=name,
        description=description,
        code_version=code_version,
        group_name=group_name,
        kinds=kinds,
        owners=["team:lcaffect-data"],
        ins={arg: dg.AssetIn(key=n) for arg, n in zip("ab", names)},
        automation_condition=automation_condition,
        metadata={"stage_function": f"{stage_fn.__module__}.{stage_fn.__qualname__}"},
    )


def _plan_op(name: str, names: tuple[str, ...]):
    @dg.op(name=f"{name}_plan", ins={n: dg.In() for n in names},
           out={"chunks": dg.DynamicOut(), "upstream": dg.Out()},
           description=f"Split the catalogue into chunks for {name}; pass the upstream manifests on")
    def plan(context: dg.OpExecutionContext, lake: LakeResource, scope: RunScope, **manifests):
        # upstream manifests arrive as of scope.as_of_json (the IO manager); the catalogue is read here
        videos = load_catalogue_from_lake(lake.path(), scope.as_of().get("catalogue"))
        if scope.videos:
            wanted = set(scope.videos)
            missing = wanted - {v["video_id"] for v in videos}
            if missing:
                raise dg.Failure(f"videos not in the catalogue: {', '.join(sorted(missing))}")
            videos = [v for v in videos if v["video_id"] in wanted]
        chunks = scope.chunks(len(videos))
        context.log.info(f"{name}: {len(videos)} videos in {len(chunks)} chunk(s)")
        yield dg.Output(dict(manifests), "upstream")
        for i, (start, end) in enumerate(chunks):
            yield dg.DynamicOutput(videos[start:end], mapping_key=_mapping_key(i), output_name="chunks")

    return plan


def _work_op(name: str, stage: str, stage_fn: StageFn, stage_args: StageArgs, work_resources, pool: str | None):
    @dg.op(name=f"{name}_work", description=f"Process one chunk of videos for {name}",
           required_resource_keys={"lake", "scope", *work_resources}, pool=pool)
    def work_op(context: dg.OpExecutionContext, chunk, upstream_manifest):
        root, args = context.resources.lake.path(), stage_args(context, upstream_manifest)
        results = stages.run_stage(root, stage, chunk, lambda video, prev: stage_fn(video, prev, root=root, **args(video)),
                                   force=context.resources.scope.force)
        for r in results:
            if r.status == "failed":
                context.log.warning(f"{name}: {r.video_id} failed: {r.reason}")
        return [r.to_dict() for r in results]

    return work_op


def _collect_op(name: str, stage: str, finish: FinishFn, table: str | None):
    @dg.op(name=f"{name}_collect", description=f"Merge per-video results of {name} into one materialisation")
    def collect(context: dg.OpExecutionContext, lake: LakeResource, scope: RunScope, results, upstream_manifest):
        new = {r["video_id"]: r for chunk in results for r in chunk}
        verdict = failure_verdict(name, new, scope.max_failed_share)
        if verdict:  # the good videos' outputs and states stay; the run says what went wrong
            raise dg.Failure(description=verdict, metadata={"per_video": dg.MetadataValue.md(per_video_summary(new))})
        manifest = merge_manifest(lake.path(), stage, new, scoped=bool(scope.videos))
        manifest["reads"] = versions.reads(upstream_manifest)
        if table:
            manifest["table_version"] = {table: commit_table(lake.path(), table, manifest, context.run_id)}
        table_path = write_per_video_table(lake.path(), stage, manifest["results"])
        metadata = {
            "videos": manifest["videos"],
            "done": manifest["done"],
            "skipped": manifest["skipped"],
            "failed": manifest["failed"],
            "rows": dg.MetadataValue.int(manifest["rows"]),
            "per_video": dg.MetadataValue.md(per_video_summary(manifest["results"])),
            "per_video_table": dg.MetadataValue.path(str(table_path)),
            "lineage": dg.MetadataValue.md(versions.lineage_markdown(lake.path(), manifest, name)),
            **finish(context, manifest, upstream_manifest),
        }
        return dg.Output(manifest, data_version=dg.DataVersion(manifest["data_version"]), metadata=metadata)

    return collect


def merge_manifest(root, stage: str, new: dict[str, dict], *, scoped: bool) -> dict[str, Any]:
    """This run's results, plus the last state of videos a scoped run did not touch."""
    results = dict(new)
    if scoped:
        for video in load_catalogue_from_lake(root):
            vid = video["video_id"]
            if vid not in results and (prev := stages.load_state(root, stage, vid)):
                results[vid] = {**prev, "status": "skipped"}
    summary = stages.summarise([stages.VideoResult(**r) for r in results.values()])
    return {"stage": stage, **summary, "results": results}


def commit_table(root, table: str, manifest: dict[str, Any], run_id: str) -> int:
    """Commit every video's current output (this run's and the kept ones) as ``table``'s next
    version; a run that changed nothing keeps the current version."""
    from .. import tables

    done = {vid: r for vid, r in manifest["results"].items() if r.get("output_hash")}
    return tables.commit(root, table, {vid: r["output_hash"] for vid, r in done.items()}, operation=manifest["stage"],
                         info={"dagster_run": run_id}, rows={vid: r["rows"] for vid, r in done.items() if r.get("rows") is not None})


def failure_verdict(name: str, results: dict[str, dict], max_failed_share: float) -> str | None:
    """Why this batch fails its run (all videos failed, or more than ``max_failed_share`` of
    them), with the reasons grouped by error type; None when it may go on. One bad video among
    many is not a verdict: it stays visible in the per-video table."""
    failed = {vid: r for vid, r in results.items() if r["status"] == "failed"}
    if not failed or (len(failed) < len(results) and len(failed) / len(results) <= max_failed_share):
        return None
    groups: dict[str, list[str]] = {}
    for vid in sorted(failed):
        groups.setdefault(error_type(failed[vid].get("reason")), []).append(vid)
    lines = [f"{name}: {len(failed)} of {len(results)} videos failed "
             f"(scope.max_failed_share allows {max_failed_share:.0%}); by error type:"]
    for kind, vids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        more = f" and {len(vids) - 5} more" if len(vids) > 5 else ""
        lines.append(f"- {kind} x{len(vids)} ({', '.join(vids[:5])}{more}): e.g. {(failed[vids[0]].get('reason') or '')[:300]}")
    return "\n".join(lines)


def error_type(reason: str | None) -> str:
    """``"TypeError: ..."`` -> ``"TypeError"`` (stages.run_stage writes reasons that way)."""
    head = (reason or "").split(":", 1)[0].strip()
    return head if re.fullmatch(r"[A-Za-z_][\w.]*", head) else "error"


def per_video_summary(results: dict[str, dict], failures: int = 50, slowest: int = 10) -> str:
    """What the UI shows of a batch: the counts, the failures with their reasons, the slowest
    videos. One row per video would be unreadable and heavy in the event log at corpus scale;
    the full table is a Parquet file (``write_per_video_table``)."""
    counts = {s: sum(r["status"] == s for r in results.values()) for s in ("done", "skipped", "failed")}
    lines = [f"**{len(results)} videos**: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed", ""]
    failed = sorted(vid for vid, r in results.items() if r["status"] == "failed")
    if failed:
        lines += ["| failed video | reason |", "|---|---|"]
        lines += [f"| {vid} | {_cell(results[vid].get('reason'))} |" for vid in failed[:failures]]
        if len(failed) > failures:
            lines.append(f"| … {len(failed) - failures} more | (full table: per_video_table) |")
        lines.append("")
    worked = sorted((r for r in results.values() if r["status"] == "done"), key=lambda r: -(r.get("seconds") or 0))
    if worked:
        lines += ["| slowest video | seconds | rows |", "|---|---:|---:|"]
        lines += [f"| {r['video_id']} | {r.get('seconds', 0)} | {r.get('rows', 0)} |" for r in worked[:slowest]]
    return "\n".join(lines)


def _cell(text: str | None) -> str:
    return re.sub(r"[|\n]", " ", text or "")[:160]


def write_per_video_table(root, stage: str, results: dict[str, dict]):
    """Every video's status, rows, seconds and reason as ``_reports/{stage}.parquet`` in the lake."""
    import pyarrow as pa

    from .. import lake

    rows = [{"video_id": vid, "status": r["status"], "rows": int(r.get("rows") or 0),
             "seconds": float(r.get("seconds") or 0.0), "reason": r.get("reason")} for vid, r in sorted(results.items())]
    schema = pa.schema([("video_id", pa.string()), ("status", pa.string()), ("rows", pa.int64()),
                        ("seconds", pa.float64()), ("reason", pa.string())])
    path = lake.under(root, "_reports", stage, ext=".parquet")
    lake.write_parquet(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def keyed(manifest: dict[str, Any]) -> dict[str, dict]:
    return manifest.get("results", {}) if manifest else {}

