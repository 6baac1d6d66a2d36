"""The live-comment arms of the downstream ablation: one per V2LC variant a task is evaluated with.

The ``v2lc_encoder`` asset may hold several named encoders (``lcaffect_pipeline.models``
variants, e.g. ``zh`` and ``bilingual``). A task is evaluated with the variants
``DownstreamResource.lc_variants_json`` lists for it, by default all of them, its primary (the
encoder's first variant, or the first listed) first. Folders under ``downstream/{task}/``:

    features/              the primary arm: base (text, acoustic, visual) and its LC features
    features-{variant}/    every other arm: the same base features, seeded from features/ so that
                           extraction computes only this variant's LC features

The without-LC fusion runs on the primary arm's base features; the with-LC fusion trains once per arm.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from lcaffect_ml.contracts.tables import BASE_FILE, META_FILE

from .. import lake

PRIMARY_FOLDER = "features"


class ArmError(ValueError):
    """A task asks for a V2LC variant the encoder asset does not hold."""


def encoder_arms(encoder: dict[str, Any], wanted: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``[(variant, V2LC run folder)]`` for a task: ``wanted`` in its order, or every variant of the
    encoder's value with its primary first. An encoder value from before variants is one arm."""
    variants = encoder.get("variants") or {encoder.get("variant") or "default": {"output_dir": encoder["output_dir"]}}
    primary = encoder.get("variant") or next(iter(variants))
    names = list(wanted) if wanted else [primary, *sorted(n for n in variants if n != primary)]
    if missing := [n for n in names if n not in variants]:
        raise ArmError(f"V2LC variant(s) {missing} asked for, but v2lc_encoder holds {sorted(variants)}")
    return [(n, variants[n]["output_dir"]) for n in dict.fromkeys(names)]


def features_folder(index: int, variant: str) -> str:
    """The folder name, under the task's folder, of arm number ``index`` (0: the primary)."""
    return PRIMARY_FOLDER if index == 0 else f"{PRIMARY_FOLDER}-{variant}"


def seed_base_features(primary_dir, arm_dir) -> bool:
    """Copy the primary arm's base features into another arm's folder when that folder's base
    features are missing or older, so extraction there reuses them (its cache is keyed by content)
    and computes only the LC features. Returns whether it copied."""
    primary, arm = lake.as_path(primary_dir), lake.as_path(arm_dir)
    source_meta = primary / META_FILE
    if not (source_meta.exists() and (primary / BASE_FILE).exists()):
        return False
    base = json.loads(source_meta.read_text()).get("base_version")
    own = json.loads((arm / META_FILE).read_text()).get("base_version") if (arm / META_FILE).exists() else None
    if own == base and (arm / BASE_FILE).exists():
        return False  # already the same base: keep this arm's LC cache
    lake.atomic_write_bytes(arm / BASE_FILE, (primary / BASE_FILE).read_bytes())
    lake.atomic_write_bytes(arm / META_FILE, source_meta.read_bytes())  # last: it names the base version
    return True
