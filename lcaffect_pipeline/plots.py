"""Small PNG plots for asset metadata (matplotlib, headless)."""

from __future__ import annotations

import base64
import io

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def density_png(offsets_ms: np.ndarray, bin_s: float = 10.0, title: str = "Comment density over video time") -> bytes:
    """Histogram of comment offsets (comments per ``bin_s`` seconds of video time)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    seconds = np.asarray(offsets_ms, dtype=np.float64) / 1000.0
    if seconds.size:
        top = max(bin_s, float(np.nanmax(seconds)))
        ax.hist(seconds, bins=np.arange(0, top + bin_s, bin_s), color="#3b7dd8")
    ax.set_xlabel("video time (s)")
    ax.set_ylabel(f"comments / {bin_s:g} s")
    return _finish(plt, fig, ax, title)


def _finish(plt, fig, ax, title: str) -> bytes:
    """Title, tight layout, PNG bytes; the figure is closed."""
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def ablation_png(rows: list[dict], title: str = "Headline metric without and with live-comment features") -> bytes:
    """Grouped bars per task of the headline metric (``ablation.ablation_rows``): without LC, with
    LC and the LC-permuted control, mean ± std over seeds."""
    plt = _figure()
    head = [r for r in rows if r["headline"]]
    fig, ax = plt.subplots(figsize=(7, 3), dpi=90)
    arms = (("without", "std_without", "without LC", "#9aa5b1"), ("with", "std_with", "with LC", "#3b7dd8"),
            ("permuted", None, "LC permuted (control)", "#e0a030"))
    x = np.arange(len(head))
    for i, (key, std, label, colour) in enumerate(arms):
        values = [r[key] if r[key] is not None else np.nan for r in head]
        errors = [r[std] for r in head] if std else None
        ax.bar(x + (i - 1) * 0.27, values, 0.27, yerr=errors, label=label, color=colour, capsize=3)
    several = {r["task"] for r in head if sum(h["task"] == r["task"] for h in head) > 1}  # tasks with several LC variants
    ax.set_xticks(x, [f"{r['task']}\n{r['metric']}" + (f"\nLC {r.get('lc_variant')}" if r["task"] in several else "")
                      for r in head])
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    return _finish(plt, fig, ax, title)


def markdown_image(png: bytes, alt: str) -> str:
    """A PNG inlined as a data URL: the Dagster UI renders it in the asset's metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def png_from_array(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
