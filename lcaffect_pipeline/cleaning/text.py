"""Text normalisation and the near-duplicate key (Arrow kernels; Python only over unique strings)."""

from __future__ import annotations

import functools
import logging
import re
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import CleaningConfig

log = logging.getLogger(__name__)

# RE2 patterns (Arrow kernels). Line breaks become a space so that "a\nb" does not become "ab".
_LINE_BREAKS = r"[\t\n\r\x0b\x0c\x{85}\x{2028}\x{2029}]"
_INVISIBLE = r"[\p{Cc}\x{200b}\x{2060}\x{feff}]"  # C0/C1 controls incl. NUL, zero-width marks
_SPACES = r"[\s\p{Z}]+"
_HAN = r"\p{Han}"
_KANA = r"[\p{Hiragana}\p{Katakana}]"
_NOT_KEY = r"[\p{P}\p{S}\p{Z}\s]+"  # what a near-duplicate key ignores
_NOT_LETTER = r"[^\p{L}]+"

# ---------------------------------------------------------------- text normalisation


@functools.lru_cache(maxsize=1)
def _opencc_t2s():
    import opencc  # imported here: keeps `import lcaffect_pipeline.cleaning` light

    return opencc.OpenCC("t2s")


def t2s_convert(strings: Sequence[str]) -> list[str]:
    """OpenCC traditional-to-simplified over many strings with one call.

    One ``convert`` per row costs about three times as much as one call over the strings joined
    by newlines (OpenCC's phrases never span a line break); if the line count ever differs the
    strings are converted one by one instead.
    """
    cc = _opencc_t2s()
    single = [i for i, s in enumerate(strings) if "\n" in s]
    joined = [s for s in strings if "\n" not in s] if single else list(strings)
    out = cc.convert("\n".join(joined)).split("\n") if joined else []
    if len(out) != len(joined):
        log.warning("OpenCC changed the line count of a joined batch; converting one by one")
        out = [cc.convert(s) for s in joined]
    if not single:
        return out
    it = iter(out)
    return [cc.convert(s) if "\n" in s else next(it) for s in strings]


def _repeat_rule(max_repeat: int, unit_max: int) -> re.Pattern:
    # A unit of 1..unit_max characters (shortest first) followed by max_repeat more copies.
    # Python's re, since RE2 has no back-references.
    return re.compile(rf"(.{{1,{unit_max}}}?)\1{{{max_repeat},}}", re.DOTALL)


def compress_repeats(strings: Sequence[str], max_repeat: int = 3, unit_max: int = 4) -> list[str]:
    """Cut every run of a unit repeated more than ``max_repeat`` times to ``max_repeat`` copies:
    "哈哈哈哈哈" -> "哈哈哈", "2333333" -> "2333", "wwwwww" -> "www", "hahahaha" -> "hahaha"."""
    rule = _repeat_rule(max_repeat, unit_max)
    min_len = max_repeat + 1  # a shorter string cannot hold such a run

    def repl(m: re.Match) -> str:
        return m.group(1) * max_repeat

    return [rule.sub(repl, s) if len(s) >= min_len else s for s in strings]


def _by_unique(text: pa.Array, fn) -> pa.Array:
    """Apply a Python function over the unique strings of ``text`` only, then expand back."""
    enc = pc.dictionary_encode(text)
    values = fn(enc.dictionary)
    return values.take(enc.indices)


def _np_mask(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def normalise_text(text: pa.Array, config: CleaningConfig | None = None, t2s_rows: np.ndarray | None = None) -> pa.Array:
    """The cleaned form of each text (see the module docstring for the steps and their order).

    ``t2s_rows`` says which rows may get the traditional-to-simplified conversion (default:
    all rows); the caller derives it from ``platform`` and ``config.t2s_platforms``.
    """
    cfg = config or CleaningConfig()
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    text = pc.fill_null(text.cast(pa.string()), "")
    if cfg.strip_control:
        text = pc.replace_substring_regex(text, _LINE_BREAKS, " ")
        text = pc.replace_substring_regex(text, _INVISIBLE, "")
    if cfg.nfkc:
        text = pc.utf8_normalize(text, "NFKC")
    if cfg.trim_whitespace:
        text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, _SPACES, " "))
    if t2s_rows is None:
        t2s_rows = np.ones(len(text), dtype=bool)
    want_t2s = cfg.t2s and bool(t2s_rows.any())
    if not cfg.max_repeat and not want_t2s:
        return text

    enc = pc.dictionary_encode(text)
    values = enc.dictionary.to_pylist()
    if cfg.max_repeat:
        values = compress_repeats(values, cfg.max_repeat, cfg.repeat_unit_max)
    plain = pa.array(values, pa.string())
    if not want_t2s:
        return plain.take(enc.indices)
    chinese = _np_mask(pc.and_not(pc.match_substring_regex(plain, _HAN), pc.match_substring_regex(plain, _KANA)))
    idx = np.flatnonzero(chinese)
    if idx.size == 0:
        return plain.take(enc.indices)
    simplified = list(values)
    for i, s in zip(idx.tolist(), t2s_convert([values[i] for i in idx.tolist()])):
        simplified[i] = s
    simp = pa.array(simplified, pa.string()).take(enc.indices)
    if t2s_rows.all():
        return simp
    return pc.if_else(pa.array(t2s_rows), simp, plain.take(enc.indices))


def near_duplicate_key(text: pa.Array, config: CleaningConfig | None = None) -> pa.Array:
    """The near-duplicate key of each (already normalised) text: lower case, punctuation,
    symbols and spaces out, every repeated run cut to one copy ("哈哈哈!" and "哈哈" share the key
    "哈"). A text that is only punctuation keeps its punctuation ("???" and "??" share "?")."""
    cfg = config or CleaningConfig()
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    low = pc.utf8_lower(text)
    stripped = pc.replace_substring_regex(low, _NOT_KEY, "")
    base = pc.if_else(pc.greater(pc.utf8_length(stripped), 0), stripped, pc.replace_substring_regex(low, _SPACES, ""))
    runs = re.compile(rf"(.{{1,{cfg.repeat_unit_max}}}?)\1+", re.DOTALL)

    def squeeze(values: pa.Array) -> pa.Array:
        return pa.array([runs.sub(r"\1", s) if len(s) > 1 else s for s in values.to_pylist()], pa.string())

    return _by_unique(base, squeeze)
