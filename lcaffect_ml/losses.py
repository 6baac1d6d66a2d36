"""Symmetric multi-positive InfoNCE for V2LC: a segment's live comments are its positives.

A batch holds ``Nv`` segments (videos) and ``Nc`` comments, each comment belonging to one segment
(``comment_segment[i]``); a segment has one or more comments. With ``s = logit_scale * v · c``:

* comment → video: each comment is a query over all ``Nv`` videos, the target is its own segment
  (a standard cross-entropy, as in CLIP).
* video → comment: each video is a query over all ``Nc`` comments, and all of its own comments
  are positives. ``positives="sum"`` (default) maximises the probability mass on the positive set,
  ``-log Σ_{p∈P} softmax(s)_p`` (the "log of summed softmax"): comments of the same segment
  never act as negatives for their own video, they share the numerator. ``positives="mean"``
  averages ``-log softmax(s)_p`` over the positives (SupCon's L_out form), which asks every
  comment to score high rather than any one.
* The loss is the mean of the two directions, each averaged over its queries (videos without a
  comment, possible only in hand-made inputs, are left out of the video → comment mean).

With exactly one comment per segment both reduce to CLIP's symmetric cross-entropy.
Under DDP the embeddings of every rank are gathered *with gradients*
(``all_gather_with_grad``) so that each rank sees the global batch's
negatives, as open_clip's ``gather_with_grad`` does; each rank computes the same global loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class ContrastiveLoss(NamedTuple):
    loss: torch.Tensor
    v2c: torch.Tensor
    c2v: torch.Tensor


def multi_positive_infonce(logits: torch.Tensor, comment_segment: torch.Tensor,
                           positives: str = "sum") -> ContrastiveLoss:
    """``logits``: (Nv, Nc) scaled similarities; ``comment_segment``: (Nc,) in ``[0, Nv)``."""
    if logits.ndim != 2 or comment_segment.shape != (logits.shape[1],):
        raise ValueError(f"logits {tuple(logits.shape)} and comment_segment {tuple(comment_segment.shape)} disagree")
    if positives not in ("sum", "mean"):
        raise ValueError(f"positives must be 'sum' or 'mean', not {positives!r}")
    logits = logits.float()  # log-sum-exp in fp32 even under bf16 autocast
    n_videos = logits.shape[0]
    c2v = F.cross_entropy(logits.t(), comment_segment)
    is_pos = comment_segment.unsqueeze(0) == torch.arange(n_videos, device=logits.device).unsqueeze(1)
    has_pos = is_pos.any(dim=1)
    log_denominator = torch.logsumexp(logits, dim=1)
    if positives == "sum":
        log_numerator = torch.logsumexp(logits.masked_fill(~is_pos, float("-inf")), dim=1)
    else:
        log_numerator = (logits * is_pos).sum(1) / is_pos.sum(1).clamp_min(1)
    per_video = (log_denominator - log_numerator)[has_pos]
    v2c = per_video.mean()
    return ContrastiveLoss((v2c + c2v) / 2, v2c, c2v)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0; the backward sums the gradients back
    (reduce-scatter), which is what a loss computed identically on every rank needs."""
    import torch.distributed as dist

    try:  # torch >= 2.10 deprecates torch.distributed.nn.functional.all_gather in favour of this
        from torch.distributed._functional_collectives import all_gather_single
    except ImportError:
        import torch.distributed.nn.functional as dist_nn

        return torch.cat(dist_nn.all_gather(x.contiguous()), dim=0)
    return all_gather_single(x.contiguous(), 0, dist.group.WORLD)


def gather_batch(video: torch.Tensor, comments: torch.Tensor, comment_segment: torch.Tensor):
    """All ranks' embeddings (with gradients) and global segment indices (padding stays -1)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    videos = all_gather_with_grad(video)
    all_comments = all_gather_with_grad(comments)
    segs = [torch.empty_like(comment_segment) for _ in range(world)]
    dist.all_gather(segs, comment_segment.contiguous())
    per_rank = video.shape[0]  # all_gather needs equal shapes, so every rank has this many segments
    segs = [torch.where(s >= 0, s + r * per_rank, s) for r, s in enumerate(segs)]
    return videos, all_comments, torch.cat(segs)


def v2lc_loss(video_embeds: torch.Tensor, comment_embeds: torch.Tensor, comment_segment: torch.Tensor,
              logit_scale: torch.Tensor, positives: str = "sum", gather: bool = True) -> ContrastiveLoss:
    """The V2LC loss on model outputs; rows with ``comment_segment == -1`` are padding and dropped."""
    if gather and _distributed():
        video_embeds, comment_embeds, comment_segment = gather_batch(video_embeds, comment_embeds, comment_segment)
    keep = comment_segment >= 0
    comment_embeds, comment_segment = comment_embeds[keep], comment_segment[keep]
    logits = logit_scale * video_embeds.float() @ comment_embeds.float().t()
    return multi_positive_infonce(logits, comment_segment, positives)
