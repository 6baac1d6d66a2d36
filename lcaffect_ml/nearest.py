"""The nearest real live comments to a segment's synthetic live-comment feature.

V2LC puts a segment's video embedding near the embeddings of the comments viewers wrote on it, so
reading off the corpus comments closest to a video's (post-projection) embedding shows what the
"synthetic live comment" of any video says, including videos that never had comments (the
downstream utterances). The bank is the corpus encoded once by the V2LC *comment* tower; a query is
a top-k cosine search against it (exact, a matrix product: a bank of 10^5-10^6 comments fits in
memory; a FAISS index would only pay off beyond that).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .trainutil import autocast


def unique_texts(texts: Sequence[str]) -> list[str]:
    """Non-empty texts, first occurrence kept: corpora repeat the same short comments ("哈哈哈",
    "2333") thousands of times, and duplicates would fill a top-k with one comment."""
    return list(dict.fromkeys(t for t in texts if t and t.strip()))


@torch.no_grad()
def build_comment_bank(model, texts: Sequence[str], batch_size: int = 256, dedupe: bool = True,
                       precision: str = "fp32") -> tuple[torch.Tensor, list[str]]:
    """Encode comments with the V2LC comment tower (projected, L2-normalised).

    Returns ``(embeddings (M, D) float32 on the CPU, texts)``: row i embeds ``texts[i]``; with
    ``dedupe`` the texts are the unique non-empty inputs in first-seen order.
    """
    if model.tokenizer is None:
        raise ValueError("this V2LCModel has no tokenizer: cannot encode comments")
    bank_texts = unique_texts(texts) if dedupe else list(texts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(bank_texts), batch_size):
            enc = model.tokenizer(bank_texts[start:start + batch_size], padding="longest", truncation=True,
                                  max_length=model.config.text_max_length, return_tensors="pt",
                                  return_token_type_ids=False)
            with autocast(device, precision):
                emb = model.encode_text(enc["input_ids"].to(device), enc["attention_mask"].to(device))
            chunks.append(F.normalize(emb.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    dim = int(model.config.embed_dim)
    return (torch.cat(chunks) if chunks else torch.zeros((0, dim))), bank_texts


def nearest_comments(video_embeds: torch.Tensor, bank_embeds: torch.Tensor, bank_texts: Sequence[str],
                     k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k bank comments per query by cosine similarity, best first: ``[[(text, score), ...], ...]``.

    Queries and bank are (re-)normalised here, so raw projections work as well as V2LC's outputs.
    """
    if bank_embeds.ndim != 2 or video_embeds.ndim != 2 or video_embeds.shape[1] != bank_embeds.shape[1]:
        raise ValueError(f"need (B, D) queries and an (M, D) bank, got {tuple(video_embeds.shape)} "
                         f"and {tuple(bank_embeds.shape)}")
    if len(bank_texts) != bank_embeds.shape[0]:
        raise ValueError(f"{len(bank_texts)} texts for {bank_embeds.shape[0]} bank embeddings")
    k = min(int(k), bank_embeds.shape[0])
    if k <= 0:
        return [[] for _ in range(video_embeds.shape[0])]
    sim = F.normalize(video_embeds.float(), dim=-1) @ F.normalize(bank_embeds.float(), dim=-1).T
    scores, idx = sim.topk(k, dim=1)
    return [[(bank_texts[j], float(s)) for s, j in zip(row_s.tolist(), row_i.tolist())]
            for row_s, row_i in zip(scores, idx)]


def nearest_comments_for_media(checkpoint_dir: str | os.PathLike, comment_texts: Sequence[str],
                               media: Sequence[str | os.PathLike | np.ndarray], k: int = 5,
                               batch_size: int = 64, device: str | torch.device = "cpu",
                               precision: str = "fp32", frame_sampling: str = "training_rate") -> list[list[tuple[str, float]]]:
    """Load a V2LC checkpoint, encode the comment corpus, and return the top-k real comments for
    each example; an example is a prepared media npz (``lcaffect_ml.contracts.tables`` §2; its frames chosen by
    ``frame_sampling`` as the features' are) or uint8 frames (T, H, W, 3), taken as they are.

    For asset metadata ("what does this video's synthetic live comment say?").
    """
    from .feature_io import load_media
    from .lc_features import SyntheticLCFeaturizer

    lc = SyntheticLCFeaturizer(checkpoint_dir, "post_projection", device=device, precision=precision,
                               frame_sampling=frame_sampling)
    bank, texts = build_comment_bank(lc.model, comment_texts, batch_size=batch_size, precision=precision)
    clips = [m if isinstance(m, np.ndarray) else load_media(Path(m)) for m in media]
    results: list[list[tuple[str, float]]] = []
    for start in range(0, len(clips), batch_size):
        emb = np.stack([e[0] for e in lc(clips[start:start + batch_size])])
        results.extend(nearest_comments(torch.from_numpy(emb), bank, texts, k))
    return results
