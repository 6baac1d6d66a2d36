"""Score raters' exports against a kit's key: agreement (Krippendorff's alpha) and how the synthetic
set fares against the control and the real comments, with bootstrap intervals over clips.

A rating file that cannot be read, rates another kit or holds a value outside the page's choices
is rejected whole, with the file and the reason; the other raters' files still count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lcaffect_ml.feature_io import digest

from .. import lake
from .kit import KEY_FILE, LETTERS, RATINGS_DIR, ROLES
from .page import SCORES

BOOTSTRAP = 2000  # resamples of the clips for each interval
# What the report counts, per (rater, clip): name -> (what it compares, in words)
RATES = {
    "synthetic_beats_control": "the synthetic set scored above the control",
    "synthetic_ties_real": "the synthetic set scored the same as the real comments",
    "synthetic_at_least_real": "the synthetic set scored at least as high as the real comments",
    "chose_real": "the real comments were picked as the best fit",
    "chose_synthetic": "the synthetic set was picked as the best fit",
    "chose_control": "the control was picked as the best fit",
}


class RatingFileError(ValueError):
    """A rating file that is not a valid export of this kit (the message names the file)."""


def read_key(kit_dir) -> dict[str, Any]:
    return json.loads((lake.as_path(kit_dir) / KEY_FILE).read_text())


def read_rating_file(path, key: Mapping[str, Any]) -> dict[str, Any]:
    """One rater's export as ``{"rater", "file", "items": {item: {"best": role, "scores": {role: n}}}}``
    with the letters turned into roles by the key; ``RatingFileError`` naming the file and why."""
    roles_of = {int(it["item"]): it["sets"] for it in key["items"]}
    try:
        doc = json.loads(lake.as_path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RatingFileError(f"{path}: not a JSON rating export ({exc})") from exc
    if not isinstance(doc, dict) or "kit_id" not in doc:
        raise RatingFileError(f"{path}: no kit_id: not a rating export of the page")
    if doc["kit_id"] != key["kit_id"]:
        raise RatingFileError(f"{path}: rates kit {doc['kit_id']!r}, not this kit {key['kit_id']!r}")
    rater = doc.get("rater")
    if not isinstance(rater, str) or not rater.strip():
        raise RatingFileError(f"{path}: no rater name")
    if not isinstance(doc.get("ratings"), list):
        raise RatingFileError(f"{path}: `ratings` is not a list")
    items: dict[int, dict[str, Any]] = {}
    for entry in doc["ratings"]:
        n, rating = _entry(path, entry, roles_of)
        if n in items:
            raise RatingFileError(f"{path}: clip {n} is rated twice")
        if rating["best"] is not None or rating["scores"]:
            items[n] = rating
    if not items:
        raise RatingFileError(f"{path}: rates no clip")
    return {"rater": rater.strip(), "file": str(path), "items": items}


def _entry(path, entry: Any, roles_of: Mapping[int, Mapping[str, str]]) -> tuple[int, dict[str, Any]]:
    n = entry.get("item") if isinstance(entry, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or n not in roles_of:
        raise RatingFileError(f"{path}: {entry!r} does not name a clip of the kit (1-{len(roles_of)})")
    best, scores = entry.get("best"), entry.get("scores") or {}
    if best is not None and best not in LETTERS:
        raise RatingFileError(f"{path}: clip {n}: best {best!r} is not one of {', '.join(LETTERS)}")
    if not isinstance(scores, dict) or any(k not in LETTERS or v not in SCORES or isinstance(v, bool)
                                           for k, v in scores.items()):
        raise RatingFileError(f"{path}: clip {n}: scores {scores!r} are not sets {'/'.join(LETTERS)} rated "
                              f"{SCORES[0]}-{SCORES[-1]}")
    roles = roles_of[n]
    return n, {"best": roles[best] if best else None, "scores": {roles[k]: int(v) for k, v in scores.items()}}


def load_ratings(folder, key: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ``*.json`` in ``folder`` read: (raters, one error line per rejected file)."""
    raters, errors, seen = [], [], {}
    for path in sorted(lake.as_path(folder).glob("*.json"), key=lambda p: p.name):
        try:
            rater = read_rating_file(path, key)
        except RatingFileError as exc:
            errors.append(str(exc))
            continue
        if rater["rater"] in seen:
            errors.append(f"{path}: rater {rater['rater']!r} is already counted from {seen[rater['rater']]}")
            continue
        seen[rater["rater"]] = path
        raters.append(rater)
    return raters, errors


def agreement(raters: Sequence[Mapping[str, Any]], items: Sequence[int]) -> dict[str, Any]:
    """Krippendorff's alpha of the best-fit choice (nominal: which role was picked) and of the
    1-5 scores (ordinal, one unit per clip and set); None with the reason where it is undefined."""
    choice = [[_code(r["items"].get(n, {}).get("best")) for n in items] for r in raters]
    scores = [[float(r["items"].get(n, {}).get("scores", {}).get(role, math.nan)) for n in items for role in ROLES]
              for r in raters]
    return {"alpha_choice": _alpha(choice, "nominal"), "alpha_scores": _alpha(scores, "ordinal")}


def _code(role: str | None) -> float:
    return float(ROLES.index(role)) if role else math.nan


def _alpha(data: list[list[float]], level: str) -> dict[str, Any]:
    import krippendorff

    if len(data) < 2:
        return {"value": None, "why": "needs two raters or more"}
    try:
        value = float(krippendorff.alpha(reliability_data=np.array(data, dtype=float), level_of_measurement=level))
    except ValueError as exc:  # e.g. every rating the same value: no disagreement to expect
        return {"value": None, "why": str(exc)}
    return {"value": None, "why": "no clip was rated by two raters"} if math.isnan(value) else {"value": value}


def outcomes(rater: Mapping[str, Any], n: int) -> dict[str, bool]:
    """What one rater's rating of clip ``n`` counts towards (only what it rated)."""
    rating = rater["items"].get(n)
    if rating is None:
        return {}
    s, out = rating["scores"], {}
    if "synthetic" in s and "control" in s:
        out["synthetic_beats_control"] = s["synthetic"] > s["control"]
    if "synthetic" in s and "real" in s:
        out["synthetic_ties_real"] = s["synthetic"] == s["real"]
        out["synthetic_at_least_real"] = s["synthetic"] >= s["real"]
    if rating["best"]:
        out.update({f"chose_{role}": rating["best"] == role for role in ROLES})
    return out


def rates(raters: Sequence[Mapping[str, Any]], items: Sequence[int], seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each of ``RATES`` over all (rater, clip) pairs, with a 95 % percentile bootstrap interval
    that resamples clips (the raters share clips, so pairs are not independent)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(items), size=(BOOTSTRAP, len(items)))
    out = {}
    for name in RATES:
        hits = np.array([sum(o[name] for r in raters if name in (o := outcomes(r, n))) for n in items], dtype=float)
        counts = np.array([sum(name in outcomes(r, n) for r in raters) for n in items], dtype=float)
        if counts.sum() == 0:
            out[name] = {"rate": None, "n": 0}
            continue
        boot = hits[draws].sum(1) / np.maximum(counts[draws].sum(1), 1)
        boot = boot[counts[draws].sum(1) > 0]
        out[name] = {"rate": float(hits.sum() / counts.sum()), "low": float(np.percentile(boot, 2.5)),
                     "high": float(np.percentile(boot, 97.5)), "n": int(counts.sum())}
    return out


def mean_scores(raters: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    by_role = {role: [r_["scores"][role] for r in raters for r_ in r["items"].values() if role in r_["scores"]]
               for role in ROLES}
    return {role: (float(np.mean(v)) if v else None) for role, v in by_role.items()}


def report(kit_dir, seed: int = 0) -> dict[str, Any]:
    """Read the kit's key and its ``ratings/`` folder and write ``reports/{version}/report.{json,md}``
    (version: the key and the accepted files' content). Returns the report (with ``errors``)."""
    key = read_key(kit_dir)
    raters, errors = load_ratings(lake.as_path(kit_dir) / RATINGS_DIR, key)
    items = [int(it["item"]) for it in key["items"]]
    doc = {"kit_id": key["kit_id"], "items": len(items), "raters": [r["rater"] for r in raters],
           "files": [Path(r["file"]).name for r in raters], "rejected": errors,
           **agreement(raters, items), "rates": rates(raters, items, seed) if raters else {},
           "mean_scores": mean_scores(raters)}
    version = digest([key["kit_id"], [(r["rater"], r["items"]) for r in raters], errors])[:16]
    out = lake.as_path(kit_dir) / "reports" / version
    if not (out / "report.md").exists():  # written last: the same ratings again reuse the report
        lake.atomic_write_bytes(out / "report.json", json.dumps(doc, ensure_ascii=False, indent=1).encode())
        lake.atomic_write_bytes(out / "report.md", markdown(doc).encode())
    return {**doc, "version": version, "report_dir": str(out)}


def markdown(doc: Mapping[str, Any]) -> str:
    def alpha(a):
        return f"{a['value']:.3f}" if a.get("value") is not None else f"undefined ({a['why']})"

    lines = [f"# Human evaluation, kit {doc['kit_id']}", "",
             f"{len(doc['raters'])} rater(s) over {doc['items']} clips: {', '.join(doc['raters']) or 'none yet'}.", "",
             f"Krippendorff's alpha, best-fit choice (nominal): {alpha(doc['alpha_choice'])}",
             f"Krippendorff's alpha, 1-5 scores (ordinal): {alpha(doc['alpha_scores'])}", "",
             "| measure | rate | 95 % interval (bootstrap over clips) | ratings |", "|---|---:|---|---:|"]
    for name, text in RATES.items():
        r = doc["rates"].get(name) or {}
        cell = f"{r['rate']:.3f} | {r['low']:.3f}–{r['high']:.3f}" if r.get("rate") is not None else "– | –"
        lines.append(f"| {text} | {cell} | {r.get('n', 0)} |")
    lines += ["", "Mean score: " + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} –"
                                             for k, v in doc["mean_scores"].items())]
    if doc["rejected"]:
        lines += ["", "Rejected rating files:", *[f"- {e}" for e in doc["rejected"]]]
    return "\n".join(lines) + "\n"
