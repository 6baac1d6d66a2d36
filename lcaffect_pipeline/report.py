"""Print where a run's results are and the headline figures: ``python -m lcaffect_pipeline.report LAKE``."""

from __future__ import annotations

import sys
from pathlib import Path

from . import lake, versions


def headline(root: str | Path) -> str:
    """The lake's headline: a folder, or an object store's URL (``s3://bucket/prefix``)."""
    root = lake.as_path(root)
    root = lake.as_path(lake.local_path(root, "the report").resolve()) if lake.is_local(root) else root
    lines = [f"Lake: {root}"]
    if corpus := versions.latest(root, "corpus_catalog"):
        lines.append(f"Corpus: {corpus['videos']} videos, {corpus['hours']:.2f} hours, {corpus['comments']} clean comments -> {corpus['path']}")
    for name in ("raw_comments", "clean_comments"):
        if m := versions.latest(root, name):
            lines.append(f"{name}: {m['rows']} rows; {m['done']} videos processed, {m['skipped']} unchanged, {m['failed']} failed")
            for vid, reason in list(m.get("failures", {}).items())[:10]:
                lines.append(f"  failed {vid}: {reason}")
    if segs := versions.latest(root, "segments"):
        lines.append(f"segments: {segs['rows']} segments over {segs['videos']} videos ({segs['failed']} failed) -> {root / 'shards' / 'index.json'}")
    if (encoder := versions.latest(root, "v2lc_encoder")) and (m := encoder.get("metrics")):
        ratio = m["v2c_r1"] / m["chance_r1"] if m.get("chance_r1") else float("nan")
        lines.append(
            f"V2LC encoder: held-out video->comment R@1 {m['v2c_r1']:.3f} vs chance {m['chance_r1']:.3f} ({ratio:.1f}x), "
            f"comment->video R@1 {m['c2v_r1']:.3f}; {int(m['steps'])} steps at {m['clips_per_s']:.1f} clips/s -> {encoder['output_dir']}"
        )
    if kit := versions.latest(root, "human_eval_kit"):
        lines.append(f"Human evaluation kit: {kit['items']} held-out clips -> {kit['page']} (rating files into {kit['ratings_dir']})")
    ablation = root / "ablation.md"
    if ablation.exists():
        lines += ["Ablation (synthetic live-comment features; mean ± std over seeds):", ablation.read_text().rstrip()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(headline(argv[0] if argv else "lake"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
