"""Corpus assets: video catalogue → raw comments → clean comments → corpus catalog."""


import duckdb
import dagster as dg

from .. import corpus, plots, tables, versions
from ..lake import combine_hashes
from .fanout import keyed, per_video_asset
from .launch_checks import check_run
from .resources import (CatalogueResource, DownstreamResource, LakeResource, RunScope,
                        V2LCTrainingResource)

GROUP = "corpus"
OWNERS = ["team:lcaffect-data"]


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"yaml", "parquet"},
    owners=OWNERS,
    description="The videos to crawl (YAML or CSV: source, platform, language, genre), or the generated offline demo. "
                "The first step of a run: it checks that every model the run will load is on this machine and "
                "that any GPU asked for is usable (README, 'Models and devices').",
)
def video_catalogue(context: dg.AssetExecutionContext, lake: LakeResource, catalogue: CatalogueResource,
                    v2lc_training: V2LCTrainingResource, downstream: DownstreamResource) -> dg.Output:
    check_run(context, v2lc_training, downstream)  # before hours of crawling and clipping
    tables.check_readable_tables(lake.path())  # a damaged log fails here, not at the commit after the work
    path = catalogue.path
    if catalogue.demo:
        from ..demo_world import generate_demo_world

        path = str(generate_demo_world(lake.path("demo_world"), n_videos=catalogue.demo_videos,
                                       segments=catalogue.demo_segments, world=catalogue.demo_world))
    if not path:
        raise dg.Failure("no catalogue: set resources.catalogue.config.path (or demo: true)")
    table = corpus.load_catalogue(path)
    digest, version = corpus.write_catalogue(lake.path(), table, path)
    platforms = table.group_by("platform").aggregate([("video_id", "count")]).to_pylist()
    return dg.Output(
        {"path": str(tables.table_path(lake.path(), "catalogue")), "videos": table.num_rows, "source": path,
         "data_version": digest, "table_version": {"catalogue": version}},
        data_version=dg.DataVersion(digest),
        metadata={
            "videos": table.num_rows,
            "table_version": version,
            "source": dg.MetadataValue.path(path),
            "per_platform": {p["platform"]: p["video_id_count"] for p in platforms},
        },
    )


def _fetch_args(context, upstream):
    lake_r: LakeResource = context.resources.lake
    scope: RunScope = context.resources.scope
    config = context.resources.crawler.source_config()
    args = {"crawl": config, "session": config.session(), "refresh": scope.refresh, "salt": lake_r.salt()}
    return lambda video: args  # one session per chunk: the per-host spacing holds across its videos


def _clean_args(context, upstream):
    raw, config = keyed(upstream["raw_comments"]), context.resources.cleaning.options_dict()
    return lambda video: {"raw_hash": (raw.get(video["video_id"]) or {}).get("output_hash"), "config": config}


def _density_metadata(root, table: str) -> dict:
    files = sorted(tables.files(root, table).values())
    if not files:
        return {}
    con = corpus.connect(root)
    try:
        offsets = con.execute("SELECT offset_ms FROM read_parquet(?)", [files]).fetchnumpy()["offset_ms"]
    except duckdb.Error:
        return {}
    finally:
        con.close()
    return {"density": dg.MetadataValue.md(plots.markdown_image(plots.density_png(offsets), "comment density"))}


def _raw_finish(context, manifest, upstream):
    bad = sum(r.get("metrics", {}).get("bad_elements", 0) for r in manifest["results"].values())
    return {"bad_elements_skipped": bad, **_density_metadata(context.resources.lake.path(), "raw_comments")}


def _clean_finish(context, manifest, upstream):
    drops: dict[str, int] = {}
    for r in manifest["results"].values():
        if r["status"] == "done":
            for k, v in r.get("metrics", {}).get("drops", {}).items():
                drops[k] = drops.get(k, 0) + v
    meta = {f"dropped_{k}": dg.MetadataValue.int(v) for k, v in drops.items()}
    return {**meta, **_density_metadata(context.resources.lake.path(), "clean_comments")}


raw_comments = per_video_asset(
    name="raw_comments",
    stage="raw_comments",
    upstream="video_catalogue",
    stage_fn=corpus.fetch_and_parse,
    stage_args=_fetch_args,
    finish=_raw_finish,
    work_resources={"crawler"},
    table="raw_comments",
    description="Every comment that parses, per video, in the one comment schema (fetched incrementally; a re-crawl that brings nothing new keeps the data version).",
    code_version="1",
    group_name=GROUP,
    kinds={"python", "parquet"},
)

clean_comments = per_video_asset(
    name="clean_comments",
    stage="clean_comments",
    upstream="raw_comments",
    stage_fn=corpus.clean_one,
    stage_args=_clean_args,
    finish=_clean_finish,
    work_resources={"cleaning"},
    table="clean_comments",
    description="Cleaned live comments (code removed, normalised, simplified, deduplicated, language-tagged), per video.",
    code_version="1",
    group_name=GROUP,
    kinds={"duckdb", "parquet"},
)


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"duckdb"},
    owners=OWNERS,
    ins={"clean": dg.AssetIn("clean_comments"), "raw": dg.AssetIn("raw_comments")},
    description="corpus.duckdb: views over the Parquet lake and the dataset card (videos, hours, comments per platform, language, genre).",
)
def corpus_catalog(context: dg.AssetExecutionContext, lake: LakeResource, scope: RunScope, clean: dict, raw: dict) -> dg.Output:
    upstream = {"clean_comments": clean, "raw_comments": raw}  # as of scope.as_of_json (the IO manager)
    durations = {vid: r["metrics"]["duration_s"] for vid, r in keyed(raw).items() if r.get("metrics", {}).get("duration_s")}
    read = {t: (m.get("table_version") or {}).get(t) for t, m in upstream.items()}
    read["catalogue"] = scope.as_of().get("catalogue")
    card = corpus.build_corpus_catalog(lake.path(), durations, read)
    value = {"path": card["path"], "videos": card["videos"], "hours": card["hours"], "comments": card["comments"],
             "read_versions": card["versions"], "reads": versions.reads(upstream)}
    return dg.Output(
        value,
        data_version=dg.DataVersion(combine_hashes({"versions": str(card["versions"]), "card": str(card["card"])})),
        metadata={
            "read_versions": dg.MetadataValue.json(card["versions"]),
            "lineage": dg.MetadataValue.md(versions.lineage_markdown(lake.path(), value, "corpus_catalog")),
            "path": dg.MetadataValue.path(card["path"]),
            "videos": card["videos"],
            "hours": dg.MetadataValue.float(card["hours"]),
            "comments": card["comments"],
            "dataset_card": dg.MetadataValue.md(corpus.card_markdown(card["card"])),
        },
    )


ASSETS = [video_catalogue, raw_comments, clean_comments, corpus_catalog]
