"""Retrieval evaluation of V2LC in both directions (as LiveBot and CLIP4Clip report it).

Pure functions over embedding or similarity matrices. The evaluation pool is every held-out
segment (``Nv`` videos) and every live comment attached to them (``Nc`` comments, each
belonging to exactly one segment).

* video → comment (``v2c_*``): a segment queries all ``Nc`` comments; its comments form a set of
  positives, and its rank is the rank of its *best-ranked* own comment, counting only other
  segments' comments ahead of it (a hit at k if any of its comments is within the top k).
* comment → video (``c2v_*``): a comment queries all ``Nv`` segments; its one positive is its own
  segment.
* Ties are counted against the query (a negative scoring equal to the best positive ranks ahead),
  so collapsed, constant embeddings score the worst rank, never a lucky one.
* Recalls are fractions in [0, 1]; ``*_medr`` is the median rank (1 = best), ``*_meanr`` the mean.
* ``chance_r1 = 1 / Nv``: the expected R@1 of a random ranking, which is the same in both
  directions (comment → video: one right segment in Nv; video → comment: the expected share of a
  segment's own comments among all comments, mean_j |P_j| / Nc = 1 / Nv since every comment
  belongs to one segment).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

DEFAULT_KS = (1, 5, 10)


def best_positive_ranks(sim: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's best positive among (that positive + all negatives).

    ``sim``: (Nq, Ncand) scores, higher is better; ``positive``: (Nq, Ncand) bool, at least one
    True per row.
    """
    if sim.shape != positive.shape:
        raise ValueError(f"sim {tuple(sim.shape)} and positive {tuple(positive.shape)} differ")
    if not bool(positive.any(dim=1).all()):
        raise ValueError("every query needs at least one positive candidate")
    sim = sim.float()
    best = sim.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
    ahead = ((sim >= best) & ~positive).sum(dim=1)
    return ahead + 1


def summarise_ranks(ranks: torch.Tensor, prefix: str, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    ranks = ranks.float()
    out = {f"{prefix}_r{k}": float((ranks <= k).double().mean()) for k in ks}  # float64: exact k/n
    out[f"{prefix}_medr"] = float(ranks.quantile(0.5))  # the mean of the middle two when even
    out[f"{prefix}_meanr"] = float(ranks.mean())
    return out


def metrics_from_similarity(sim: torch.Tensor, comment_segment: torch.Tensor,
                            ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Both directions from a (Nv, Nc) segment × comment similarity matrix."""
    n_videos, n_comments = sim.shape
    comment_segment = torch.as_tensor(comment_segment, device=sim.device).long()
    if comment_segment.shape != (n_comments,):
        raise ValueError(f"comment_segment has shape {tuple(comment_segment.shape)}, expected ({n_comments},)")
    if n_comments and (comment_segment.min() < 0 or comment_segment.max() >= n_videos):
        raise ValueError("comment_segment values must index rows of sim")
    own = comment_segment.unsqueeze(0) == torch.arange(n_videos, device=sim.device).unsqueeze(1)
    has_comment = own.any(dim=1)
    if not bool(has_comment.any()):
        raise ValueError("no segment has a comment: nothing to evaluate")
    metrics = summarise_ranks(best_positive_ranks(sim[has_comment], own[has_comment]), "v2c", ks)
    metrics.update(summarise_ranks(best_positive_ranks(sim.t(), own.t()), "c2v", ks))
    metrics["chance_r1"] = 1.0 / n_videos
    metrics["eval_segments"] = int(n_videos)
    metrics["eval_comments"] = int(n_comments)
    return metrics


def retrieval_metrics(video_embeds: torch.Tensor, comment_embeds: torch.Tensor, comment_segment: torch.Tensor,
                      ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Cosine-similarity retrieval metrics for (Nv, D) segment and (Nc, D) comment embeddings."""
    v = F.normalize(video_embeds.float(), dim=-1)
    c = F.normalize(comment_embeds.float(), dim=-1)
    return metrics_from_similarity(v @ c.t(), comment_segment, ks)


def retrieval_by_group(video_embeds: torch.Tensor, comment_embeds: torch.Tensor, comment_segment: torch.Tensor,
                       segment_group: Sequence[str | None], ks: Sequence[int] = DEFAULT_KS) -> dict[str, dict[str, float]]:
    """``retrieval_metrics`` within each group of segments (a platform, a language): each group is
    its own pool, so its ``chance_r1`` is 1 / its segments. Groups of one segment, or without a
    name, are left out (a pool of one has nothing to rank)."""
    comment_segment = torch.as_tensor(comment_segment).long()
    out = {}
    for group in sorted({g for g in segment_group if g is not None}):
        rows = torch.tensor([i for i, g in enumerate(segment_group) if g == group], dtype=torch.long)
        if len(rows) < 2:
            continue
        renumber = torch.full((len(segment_group),), -1, dtype=torch.long)
        renumber[rows] = torch.arange(len(rows))
        keep = renumber[comment_segment] >= 0
        if not bool(keep.any()):
            continue
        out[group] = retrieval_metrics(video_embeds[rows], comment_embeds[keep], renumber[comment_segment[keep]], ks)
    return out
