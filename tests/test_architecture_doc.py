"""docs/ARCHITECTURE.md and README's asset table are what scripts/architecture_doc.py renders from
the code, and what they show holds: layers only import downward, every long module says why."""

from __future__ import annotations

import importlib
import importlib.util

from conftest import ROOT


def _script():
    spec = importlib.util.spec_from_file_location("architecture_doc", ROOT / "scripts" / "architecture_doc.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_generated_blocks_are_current() -> None:
    script = _script()
    for path, text in script.rendered().items():
        assert path.read_text() == text, f"{path} is stale: run scripts/architecture_doc.py"


def test_layers_import_only_downward() -> None:
    script = _script()
    upward = {(a, b): n for (a, b), n in script.layer_edges().items() if b > a}
    assert upward == {}, [(script.LAYERS[a][0], script.LAYERS[b][0]) for a, b in upward]
    # the check can fail: an import from the training side into the pipeline is an upward edge
    assert script.layer_of("lcaffect_ml.data") < script.layer_of("lcaffect_pipeline.shards")
    assert script.layer_of("lcaffect_ml.contracts.shards") < script.layer_of("lcaffect_ml.data")


def test_every_long_module_says_why_and_every_asset_names_its_work() -> None:
    script = _script()
    assert all(m in script.LONG_REASONS for m, _ in script.long_modules())
    assets = script.asset_graph()
    assert {a for a, *_ in assets} >= {"raw_comments", "meld_features", "ablation_report"}
    per_video = {"raw_comments", "clean_comments", "videos", "video_probes", "audio", "segments"}
    assert {a for a, *_, stage in assets if stage} == per_video  # declared by the asset, no hand-kept entry
    assert not per_video & set(script.WORK)
    for name, _, _, where, stage in assets:
        module, fn = script.work_of(name, stage)
        assert callable(getattr(importlib.import_module(module), fn)), (name, module, fn)
        path, line = where.rsplit(":", 1)
        assert (ROOT / path).is_file() and int(line) > 0
