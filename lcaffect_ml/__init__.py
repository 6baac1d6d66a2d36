"""The PyTorch side of LCAffect: the V2LC encoder, its loss, data, evaluation and training programs.

Runs without Dagster (only ``lcaffect_ml.pipes`` talks to it, through ``dagster_pipes``) and never
imports ``lcaffect_pipeline``. Names are resolved lazily so ``import lcaffect_ml`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "V2LCConfig": "v2lc",
    "V2LCModel": "v2lc",
    "V2LCOutput": "v2lc",
    "multi_positive_infonce": "losses",
    "v2lc_loss": "losses",
    "retrieval_metrics": "retrieval",
    "metrics_from_similarity": "retrieval",
    "SegmentStream": "data",
    "ShardSpec": "data",
    "load_shard_index": "data",
    "split_by_video": "data",
    "write_synthetic_shards": "synthetic",
    "build_char_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "TrainConfig": "train_v2lc",
    "pipes_session": "pipes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
