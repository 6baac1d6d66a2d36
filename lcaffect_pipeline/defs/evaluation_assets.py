"""The human evaluation: the rating kit built from the encoder's held-out clips, and the report
over the raters' exports. The work is in ``lcaffect_pipeline.human_eval``."""

import dagster as dg

from .. import lake, versions
from ..human_eval import kit as human_kit
from ..human_eval import ratings as human_ratings
from .resources import HumanEvalResource, LakeResource

GROUP = "evaluation"


def video_files(videos: dict) -> dict[str, str]:
    """Each video's file in the lake, from the ``videos`` value (paths relative to the lake or resolved)."""
    return {vid: r["metrics"]["path"] for vid, r in (videos.get("results") or {}).items()
            if r.get("status") == "done" and (r.get("metrics") or {}).get("path")}


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"html", "pytorch"},
    owners=["team:lcaffect-ml"],
    ins={"encoder": dg.AssetIn("v2lc_encoder"), "videos": dg.AssetIn("videos")},
    deps=["segments", "clean_comments"],
    description="A blinded, seeded rating kit: held-out clips, each with its real comments, the comments retrieved by its "
                "synthetic feature and a control set, shuffled per clip; one self-contained HTML page, the key kept apart.",
)
def human_eval_kit(context: dg.AssetExecutionContext, lake: LakeResource, human_eval: HumanEvalResource,
                   encoder: dict, videos: dict):
    root = lake.path()
    files = {vid: str(lake_file(root, p)) for vid, p in video_files(videos).items()}
    try:
        value = human_kit.build_kit(root, encoder, files, human_eval.options())
    except human_kit.KitError as exc:
        raise dg.Failure(f"human evaluation kit: {exc}") from exc
    value["reads"] = versions.reads({"v2lc_encoder": encoder, "videos": videos})
    context.log.info(f"kit {value['kit_id']}: give raters the folder {value['page'].rsplit('/', 1)[0]}; "
                     f"put their exports into {value['ratings_dir']}")
    return dg.Output(value, data_version=dg.DataVersion(value["kit_id"]), metadata={
        "kit_id": value["kit_id"], "items": value["items"], "variant": value["variant"], "reused": value["reused"],
        "bank_size": value["bank_size"], "held_out_videos": value["held_out_videos"],
        "page": dg.MetadataValue.path(value["page"]), "ratings_dir": dg.MetadataValue.path(value["ratings_dir"])})


def lake_file(root, path: str):
    """A path the ``videos`` value names: relative to the lake, or already resolved by the IO manager."""
    return lake.as_path(path) if lake.is_store_url(path) or path.startswith("/") else lake.as_path(root) / path


@dg.asset(
    group_name=GROUP,
    code_version="1",
    kinds={"python"},
    owners=["team:lcaffect-ml"],
    ins={"kit": dg.AssetIn("human_eval_kit")},
    description="Agreement (Krippendorff's alpha) and how often the synthetic set beats the control and ties with the real "
                "comments, with bootstrap intervals, from every rating file in the kit's ratings/ folder.",
)
def human_eval_report(context: dg.AssetExecutionContext, human_eval: HumanEvalResource, kit: dict):
    doc = human_ratings.report(kit["kit_dir"], seed=human_eval.seed)
    for error in doc["rejected"]:
        context.log.warning(f"rating file rejected: {error}")
    if doc["rejected"] and not doc["raters"]:
        raise dg.Failure("no rating file could be read:\n" + "\n".join(doc["rejected"]))
    if not doc["raters"]:
        context.log.info(f"no ratings yet: put the raters' exports into {kit['ratings_dir']} and run again")
    rates = {f"{k}": v["rate"] for k, v in doc["rates"].items() if v.get("rate") is not None}
    value = {k: doc[k] for k in ("kit_id", "version", "report_dir", "raters", "rejected", "alpha_choice", "alpha_scores",
                                 "rates", "mean_scores")}
    value["reads"] = versions.reads({"human_eval_kit": kit})
    return dg.Output(value, data_version=dg.DataVersion(doc["version"]), metadata={
        "raters": len(doc["raters"]), "rejected_files": len(doc["rejected"]),
        "alpha_choice": doc["alpha_choice"].get("value"), "alpha_scores": doc["alpha_scores"].get("value"), **rates,
        "report": dg.MetadataValue.md(human_ratings.markdown(doc))})


ASSETS = [human_eval_kit, human_eval_report]
