"""Print where a run's results are and the headline figures: ``python -m lcaffect_pipeline.report LAKE``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _manifest(root: Path, name: str) -> dict | None:
    path = root / "_manifests" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def headline(root: str | Path) -> str:
    root = Path(root).resolve()
    lines = [f"Lake: {root}"]
    if corpus := _manifest(root, "corpus_catalog"):
        lines.append(f"Corpus: {corpus['videos']} videos, {corpus['hours']:.2f} hours, {corpus['comments']} clean comments -> {corpus['path']}")
    for name in ("raw_comments", "clean_comments"):
        if m := _manifest(root, name):
            lines.append(f"{name}: {m['rows']} rows; {m['done']} videos processed, {m['skipped']} unchanged, {m['failed']} failed")
            for vid, reason in list(m.get("failures", {}).items())[:10]:
                lines.append(f"  failed {vid}: {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(headline(argv[0] if argv else "lake"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
