"""Incremental refresh cost: with N demo videos processed, adding one more and re-materialising
the corpus and clips assets should cost no more than 1.5x processing that one video alone.

    python bench/bench_incremental.py [--n 20]

Prints both times and their ratio (measured in the same run; the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dagster as dg

from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS
from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS
from lcaffect_pipeline.defs.resources import (
    CatalogueResource, CleaningResource, ClipsResource, CrawlerResource, DownstreamResource, LakeJsonIOManager,
    LakeResource, RunScope, V2LCTrainingResource,
)
from lcaffect_pipeline.demo_world import generate_demo_world


def resources(root: Path, catalogue: Path) -> dict:
    lake = LakeResource(root=str(root), author_salt="bench")
    return {"lake": lake, "scope": RunScope(), "catalogue": CatalogueResource(path=str(catalogue)),
            "crawler": CrawlerResource(min_interval_s=0), "cleaning": CleaningResource(),
            "clips": ClipsResource(size=64, frames_per_segment=8), "io_manager": LakeJsonIOManager(lake=lake),
            "v2lc_training": V2LCTrainingResource(), "downstream": DownstreamResource()}


def materialise(root: Path, catalogue: Path) -> float:
    start = time.perf_counter()
    assert dg.materialize([*CORPUS, *CLIPS], resources=resources(root, catalogue)).success
    return time.perf_counter() - start


def one_video_catalogue(world: Path, index: int, dest: Path) -> Path:
    import yaml

    entry = yaml.safe_load((world / "catalogue.yaml").read_text())["videos"][index]
    entry = {**entry, "source": str(world / entry["source"]), "video": str(world / entry["video"])}
    dest.write_text(yaml.safe_dump({"videos": [entry]}, allow_unicode=True))
    return dest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lake = tmp / "lake"
        materialise(lake, generate_demo_world(tmp / "world", args.n))  # N videos processed
        catalogue = generate_demo_world(tmp / "world", args.n + 1)  # one more; the others byte-identical
        added = materialise(lake, catalogue)
        alone = materialise(tmp / "lake_one", one_video_catalogue(catalogue.parent, args.n, tmp / "one.yaml"))
    print(f"adding video {args.n + 1} to {args.n} processed: {added:.2f} s")
    print(f"processing that one video alone:          {alone:.2f} s")
    print(f"ratio: {added / alone:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
