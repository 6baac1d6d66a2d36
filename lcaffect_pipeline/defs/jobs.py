"""The jobs: named asset selections a user launches (``dagster job execute -j NAME``)."""

import dagster as dg

# Runs that hold GPU steps carry this tag; configs/instance/dagster.postgres.yaml caps how many
# such runs the queue lets through at once (the `gpu` pool caps their steps).
GPU_RUN_TAGS = {"lcaffect/gpu": "true"}

corpus_job = dg.define_asset_job(
    "corpus_job",
    selection=dg.AssetSelection.groups("corpus"),
    description="Crawl, parse and clean the live-comment corpus for the catalogue, and rebuild the DuckDB catalog.",
)

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Everything, from the catalogue to the ablation report and the human evaluation kit (the README's "
                "main command); human_eval_job re-reads the ratings once raters have sent them.",
    tags=GPU_RUN_TAGS,
)

clips_job = dg.define_asset_job(
    "clips_job",
    selection=dg.AssetSelection.groups("clips"),
    description="Videos to training clips: download, probe, audio, segments and shards (needs the corpus).",
)

pretrain_job = dg.define_asset_job(
    "pretrain_job",
    selection=dg.AssetSelection.assets("v2lc_encoder"),
    description="Pretrain the V2LC encoder on the current training shards (a GPU step).",
    tags=GPU_RUN_TAGS,
)

downstream_job = dg.define_asset_job(
    "downstream_job",
    selection=dg.AssetSelection.groups("downstream"),
    description="Features and fusion with and without live-comment features for every configured task, and the ablation report.",
    tags=GPU_RUN_TAGS,
)

reproduce_job = dg.define_asset_job(
    "reproduce_job",
    selection=dg.AssetSelection.assets("segments", "training_shards", "v2lc_encoder"),
    description="Re-cut segments and shards and train V2LC on the table versions that scope.as_of_json names "
                "(configs/reproduce.example.yaml); the corpus is not refreshed.",
    tags=GPU_RUN_TAGS,
)

human_eval_job = dg.define_asset_job(
    "human_eval_job",
    selection=dg.AssetSelection.groups("evaluation"),
    description="The human evaluation: build (or reuse) the rating kit from the encoder's held-out clips, and report "
                "agreement and synthetic-vs-control rates over the rating files in the kit's ratings/ folder.",
)

JOBS = [corpus_job, reproduce_job, clips_job, pretrain_job, downstream_job, human_eval_job, full_pipeline]
