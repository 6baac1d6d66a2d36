"""The live-comment arms of the downstream ablation: one per V2LC variant a task is evaluated with.

The ``v2lc_encoder`` asset may hold several named encoders (``lcaffect_pipeline.v2lc_runs``
variants, e.g. ``zh`` and ``bilingual``). A task is evaluated with the variants
``DownstreamResource.lc_variants_json`` lists for it, by default all of them, its primary arm (the
first listed, else the encoder's first variant) first. Folders under ``downstream/{task}/``
(each holds one folder per version, named by a hash of the utterance table version, the V2LC run
and the extraction options; a new version is seeded from the last one's base features):

    features/              the encoder's first variant: base (text, acoustic, visual) and its LC features
    features-{variant}/    every other variant: the same base features, seeded from the arm
                           extracted first so that extraction computes only this variant's LC features

A folder is named by its variant, not by the task's order, so listing the arms in another order
moves nothing and recomputes nothing.

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


def features_folder(variant: str, encoder: dict[str, Any]) -> str:
    """The folder name, under the task's folder, of ``variant``'s features: ``features`` for the
    encoder's first variant (and an encoder value from before variants)."""
    primary = encoder.get("variant") or variant
    return PRIMARY_FOLDER if variant == primary else f"{PRIMARY_FOLDER}-{variant}"


def seed_base_features(first_dir, arm_dir) -> bool:
    """Copy the base features of the arm extracted first into another arm's folder when that
    folder's base features are missing or others, so extraction there reuses them (its cache is
    keyed by content) and computes only the LC features. Returns whether it copied."""
    primary, arm = lake.as_path(first_dir), lake.as_path(arm_dir)
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


def base_arm(folders: dict[str, str]) -> str:
    """The arm the without-LC fusion trains on (all arms share its base features): the one whose
    folder name sorts first, ``features`` where present, so reordering the arms retrains nothing."""
    # folders are {arm folder}/{version}: the arm folder decides, its version only breaks ties
    return min(folders, key=lambda n: (lake.as_path(folders[n]).parent.name, lake.as_path(folders[n]).name, n))
