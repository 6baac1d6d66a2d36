#!/usr/bin/env python3
"""Render the generated parts of docs/ARCHITECTURE.md and README.md from the code.

    .venv/bin/python scripts/architecture_doc.py           # rewrite the generated blocks
    .venv/bin/python scripts/architecture_doc.py --check   # exit 1 when a block is stale

The asset graph comes from the ``Definitions`` (every asset, its group and its dependencies),
the module layers from the imports of every module, the list of long modules from their line
counts. Only the text between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` is
rewritten; the rest of each document is written by hand.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
README = ROOT / "README.md"
LONG = 450
PACKAGES = ("lcaffect_ml", "lcaffect_pipeline")

# Layers, lowest first: a module may import its own layer and the layers below it.
LAYERS = (
    ("contracts", ("lcaffect_ml.contracts", "lcaffect_ml.atomic")),
    ("lcaffect_ml", ("lcaffect_ml",)),
    ("pipeline (plain)", ("lcaffect_pipeline",)),
    ("defs (Dagster)", ("lcaffect_pipeline.defs",)),
    ("code location", ("lcaffect_pipeline.definitions", "lcaffect_pipeline.defs.fetch_models")),
)

# Why a module over LONG lines stays one module (a check fails for a long module missing here).
LONG_REASONS = {
    "lcaffect_pipeline.defs.resources": "every resource a run configures, each option declared once for the UI "
                                        "and `-c` files (its default, bounds and help owned by its dataclass)",
    "lcaffect_ml.train_fusion": "the fusion trainer (one run: epochs, checkpoints, early stopping, the "
                                "permuted-LC control) with its aggregation and command line; its input side "
                                "is `fusion_data.py`",
    "lcaffect_ml.train_v2lc": "the V2LC training program: one training loop with resume, its evaluation and "
                              "command line; the configuration, each option documented for `--help`, is `train_v2lc_config.py`",
    "lcaffect_ml.data": "`SegmentStream`, one resumable, deterministic sampler (slots, epochs, shuffle "
                        "buffer, per-video cap) and the index reader it needs",
    "lcaffect_pipeline.downstream.datasets": "the three benchmark loaders and the checks they share on "
                                             "untrusted folders (typed errors naming file and row, ids and media "
                                             "kept inside the folder) with the media policy; each loader is short",
    "lcaffect_ml.extract_features": "the feature extraction program: one pass per modality choice with its two "
                                    "caches (base, LC), its report and command line; the encoders are `features.py`",
}

# The plain function each asset's definition wraps (checked importable), for the assets that are
# not per-video stages: those declare theirs (``per_video_asset``'s ``stage_function`` metadata).
WORK = {
    "video_catalogue": ("lcaffect_pipeline.corpus", "load_catalogue"),
    "corpus_catalog": ("lcaffect_pipeline.corpus", "build_corpus_catalog"),
    "training_shards": ("lcaffect_pipeline.shards", "write_shard_index"),
    "v2lc_encoder": ("lcaffect_ml.train_v2lc", "train"),
    "{task}_utterances": ("lcaffect_pipeline.downstream.datasets", "load_dataset"),
    "{task}_features": ("lcaffect_ml.extract_features", "extract"),
    "{task}_fusion_with_lc": ("lcaffect_ml.train_fusion", "train"),
    "{task}_fusion_without_lc": ("lcaffect_ml.train_fusion", "train"),
    "ablation_report": ("lcaffect_pipeline.downstream.runs", "write_ablation"),
    "human_eval_kit": ("lcaffect_pipeline.human_eval.kit", "build_kit"),
    "human_eval_report": ("lcaffect_pipeline.human_eval.ratings", "report"),
}
TASK = re.compile(r"^(chsims2|meld|mustard)_")


# ------------------------------------------------------------------------------ the code


def _setup_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def asset_graph() -> list[tuple[str, str, list[str], str, str | None]]:
    """(asset, group, sorted dependencies, defining file:line, its declared stage function or None)
    for every asset, sorted by name."""
    _setup_path()
    from lcaffect_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    out = []
    for key in graph.get_all_asset_keys():
        node, name = graph.get(key), key.to_user_string()
        assets_def = graph.assets_def_for_key(key)
        stage = assets_def.specs_by_key[key].metadata.get("stage_function")
        out.append((name, node.group_name, sorted(p.to_user_string() for p in node.parent_keys),
                    _defined_at(assets_def, name), getattr(stage, "value", stage)))
    return sorted(out)


def _defined_at(assets_def, name: str) -> str:
    node = assets_def.node_def
    fn = getattr(getattr(node, "compute_fn", None), "decorated_fn", None)
    if fn is not None:
        path, line = inspect.getsourcefile(fn), inspect.getsourcelines(fn)[1]
    else:  # a graph-backed (fan-out) asset: the module-level name it is bound to in defs/
        path, line = _bound_in_defs(name)
    return f"{Path(path).resolve().relative_to(ROOT).as_posix()}:{line}"


def _bound_in_defs(name: str) -> tuple[str, int]:
    for path in sorted((ROOT / "lcaffect_pipeline" / "defs").glob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith(f"{name} = "):
                return str(path), i
    raise LookupError(f"asset {name}: no definition found in lcaffect_pipeline/defs")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def layer_of(module: str) -> int:
    best, index = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    return index


def imports_of(module: str, path: Path) -> set[str]:
    """The project modules ``module`` imports (absolute and relative, at any depth in the file)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                base = ".".join(up[: len(up) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def layer_edges() -> dict[tuple[int, int], int]:
    """(importing layer, imported layer) -> number of module imports, between different layers."""
    mods = modules()
    edges: dict[tuple[int, int], int] = {}
    for name, path in mods.items():
        a = layer_of(name)
        for target in imports_of(name, path):
            if target not in mods:
                continue
            b = layer_of(target)
            if a != b:
                edges[(a, b)] = edges.get((a, b), 0) + 1
    return edges


def long_modules() -> list[tuple[str, int]]:
    return sorted(((name, len(path.read_text().splitlines())) for name, path in modules().items()
                   if len(path.read_text().splitlines()) > LONG), key=lambda t: -t[1])


def work_of(asset: str, stage: str | None = None) -> tuple[str, str]:
    if stage:
        module, fn = stage.rsplit(".", 1)
        return module, fn
    return WORK.get(asset) or WORK[TASK.sub("{task}_", asset)]


# ------------------------------------------------------------------------------ rendering


def render_graph(assets) -> str:
    lines = ["```mermaid", "flowchart LR"]
    groups: dict[str, list[str]] = {}
    for name, group, *_ in assets:
        groups.setdefault(group, []).append(name)
    for group in sorted(groups, key=lambda g: ["corpus", "clips", "model", "downstream", "evaluation"].index(g)
                        if g in ("corpus", "clips", "model", "downstream", "evaluation") else 9):
        lines.append(f"  subgraph {group}")
        lines += [f"    {n}" for n in groups[group]]
        lines.append("  end")
    lines += [f"  {dep} --> {name}" for name, _, deps, *_ in assets for dep in deps]
    return "\n".join(lines + ["```"])


def render_layers(edges) -> str:
    lines = ["```mermaid", "flowchart BT"]
    lines += [f"  L{i}[\"{label}\"]" for i, (label, _) in enumerate(LAYERS)]
    lines += [f"  L{a} -->|{n}| L{b}" for (a, b), n in sorted(edges.items())]
    return "\n".join(lines + ["```"])


def render_long(long) -> str:
    rows = ["| module | lines | why it stays one module |", "|---|---:|---|"]
    rows += [f"| `{m}` | {n} | {LONG_REASONS.get(m, '**no reason given: split it**')} |" for m, n in long]
    return "\n".join(rows)


def render_table(assets) -> str:
    rows = ["| asset | group | definition | the work (plain function) |", "|---|---|---|---|"]
    for name, group, _, where, stage in assets:
        module, fn = work_of(name, stage)
        rows.append(f"| `{name}` | {group} | `{where.rsplit(':', 1)[0]}` | `{module}.{fn}` |")
    return "\n".join(rows)


def blocks() -> dict[Path, dict[str, str]]:
    assets = asset_graph()
    return {DOC: {"asset-graph": render_graph(assets), "layers": render_layers(layer_edges()),
                  "long-modules": render_long(long_modules())},
            README: {"asset-table": render_table(assets)}}


def fill(text: str, name: str, body: str, where: Path) -> str:
    pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.S)
    if not pattern.search(text):
        raise LookupError(f"{where}: no <!-- generated:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def rendered() -> dict[Path, str]:
    out = {}
    for path, parts in blocks().items():
        text = path.read_text()
        for name, body in parts.items():
            text = fill(text, name, body, path)
        out[path] = text
    return out


def main(argv: list[str]) -> int:
    texts = rendered()
    if "--check" in argv:
        stale = [str(p) for p, t in texts.items() if p.read_text() != t]
        if stale:
            print(f"stale: {', '.join(stale)}: run scripts/architecture_doc.py", file=sys.stderr)
            return 1
        return 0
    _setup_path()
    from lcaffect_pipeline.lake import atomic_write_bytes

    for path, text in texts.items():
        atomic_write_bytes(path, text.encode())
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
