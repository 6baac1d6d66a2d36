"""What each modality's encoder is given, beyond the utterance itself: the text that precedes it
(dialogue context) and the benchmarks' released feature files (``lcaffect_ml.released``).

``lcaffect_ml.extract_features`` calls these with its configuration (``ExtractConfig``).
"""

from __future__ import annotations

import os
from typing import Any

from .feature_io import Utterance
from .options import ConfigError


def released_map(value: Any) -> dict[str, str]:
    """``released_features`` as modality -> file (one file stands for all three modalities)."""
    from .released import MODALITIES

    if not value:
        return {}
    if isinstance(value, (str, os.PathLike)):
        return {m: str(value) for m in MODALITIES}
    if not isinstance(value, dict) or not set(value) <= set(MODALITIES):
        raise ConfigError(f"released_features must be a file or a mapping of {MODALITIES} to files, not {value!r}")
    return {m: str(p) for m, p in value.items() if p}


def used_context(cfg) -> bool:
    """Context enters the text features: asked for, and the text is encoded here (a released
    text feature file holds the utterance alone)."""
    return bool(cfg.context) and int(cfg.context_turns) > 0 and "text" not in (cfg.released_features or {})


def context_turns(cfg, u: Utterance) -> list[str]:
    """The turns of context an utterance's text feature sees: the last ``context_turns``, never more."""
    if not used_context(cfg):
        return []
    return [t for t in u.context if t.strip()][-int(cfg.context_turns):]


def text_input(cfg, u: Utterance, sep: str) -> str | tuple[str, str] | list[str]:
    """The utterance alone, or (utterance, its context most recent first, joined by ``sep``); with
    ``text_pooling: turns`` the list [utterance, context turns most recent first]."""
    turns = context_turns(cfg, u)
    if cfg.text_pooling == "turns":
        return [u.text, *reversed(turns)]
    return (u.text, f" {sep} ".join(reversed(turns))) if turns else u.text


def released_featurizers(cfg) -> dict[str, Any]:
    """modality -> ``ReleasedFeaturizer`` for the modalities read from released files (one read per file)."""
    from .released import ReleasedFeaturizer

    cache: dict = {}
    return {m: ReleasedFeaturizer(m, path, cache) for m, path in cfg.released_features.items()}
