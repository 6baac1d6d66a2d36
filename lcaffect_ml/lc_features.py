"""Synthetic live-comment features: the V2LC video tower over an utterance's frames (the
``post_projection`` or ``pre_projection`` output described in ``lcaffect_ml.features``), with the
frames chosen as far apart as V2LC's training clips had them (``training_rate``) or spread over
the utterance (``spread``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .contracts.hashing import sha256_file
from .features import _Runner
from .feature_io import FeatureFileError, Media

log = logging.getLogger(__name__)

LC_SOURCES = ("post_projection", "pre_projection")
LC_FRAME_SAMPLINGS = ("training_rate", "spread")


def lc_frame_spacing(checkpoint_dir: str | os.PathLike) -> tuple[float, str]:
    """(seconds between the frames V2LC was trained on, where that figure came from), from the
    checkpoint's config.json; a checkpoint from before it was recorded: the clip defaults, said."""
    import json

    from .contracts.shards import DEFAULT_FRAMES_PER_SEGMENT, DEFAULT_SEGMENT_S
    from .pretrained import CONFIG_NAME

    path = Path(checkpoint_dir) / CONFIG_NAME
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FeatureFileError(f"{path}: cannot read the V2LC config: {exc}") from exc
    if cfg.get("train_segment_s") and cfg.get("train_frames"):
        return float(cfg["train_segment_s"]) / int(cfg["train_frames"]), "checkpoint"
    log.warning("%s records no training clip timing (a checkpoint from before it was): assuming the clip "
                "defaults, %g s with %d frames", path, DEFAULT_SEGMENT_S, DEFAULT_FRAMES_PER_SEGMENT)
    return DEFAULT_SEGMENT_S / DEFAULT_FRAMES_PER_SEGMENT, "fallback: the clip defaults (not in config.json)"


def lc_frame_indices(times_ms: np.ndarray, num_frames: int, spacing_s: float | None) -> np.ndarray:
    """Which of an utterance's prepared frames (at ``times_ms``, the centres of equal slices of
    it) V2LC sees, ``num_frames`` indices. ``spacing_s`` None: spread over the whole utterance.
    Else the training grid: as many targets ``spacing_s`` apart as fit in the utterance (at most
    ``num_frames``), centred on it, each the nearest prepared frame, looped up to ``num_frames``
    (looping, not repeating the last frame, so no frame dominates the clip)."""
    t = len(times_ms)
    if spacing_s is None:
        return np.linspace(0, t - 1, num_frames).round().astype(np.int64)
    duration_ms = float(times_ms[0] + times_ms[-1])  # slice centres: the first and last mirror each other
    spacing_ms = spacing_s * 1000.0
    n = int(min(num_frames, duration_ms // spacing_ms + 1))
    targets = duration_ms / 2 + (np.arange(n) - (n - 1) / 2) * spacing_ms
    nearest = np.abs(np.asarray(times_ms, dtype=np.float64)[None, :] - targets[:, None]).argmin(1)
    return nearest[np.arange(num_frames) % n]


def effective_fps(times_ms: np.ndarray, indices: np.ndarray) -> float | None:
    """Distinct frames per second of the span the chosen frames cover (None: one frame only)."""
    chosen = np.unique(np.asarray(times_ms)[indices])
    return None if len(chosen) < 2 else float((len(chosen) - 1) * 1000.0 / (chosen[-1] - chosen[0]))


class SyntheticLCFeaturizer:
    """The V2LC video tower over an utterance's frames: the synthetic live-comment features."""

    input = "media"  # frames and their times (``extract_features._run_pass``)

    def __init__(self, checkpoint_dir: str | os.PathLike, source: str = "post_projection",
                 device: torch.device | str = "cpu", precision: str = "fp32", frame_sampling: str = "training_rate"):
        from .pretrained import WEIGHTS_NAME
        from .v2lc import V2LCModel

        if source not in LC_SOURCES:
            raise ValueError(f"lc_source must be one of {LC_SOURCES}, not {source!r}")
        if frame_sampling not in LC_FRAME_SAMPLINGS:
            raise ValueError(f"lc_frame_sampling must be one of {LC_FRAME_SAMPLINGS}, not {frame_sampling!r}")
        self.checkpoint_dir, self.source, self.frame_sampling = Path(checkpoint_dir), source, frame_sampling
        self.run = _Runner(torch.device(device), precision)
        self.model = V2LCModel.from_pretrained(self.checkpoint_dir, map_location=self.run.device).eval()
        self.sha256 = sha256_file(self.checkpoint_dir / WEIGHTS_NAME)  # the V2LC data version
        self.spacing_s, self.spacing_from = (lc_frame_spacing(self.checkpoint_dir) if frame_sampling == "training_rate"
                                             else (None, "spread over each utterance"))
        self.fps: list[float] = []  # per utterance featurised, for the record

    @property
    def dim(self) -> int:
        if self.source == "post_projection":
            return int(self.model.config.embed_dim)
        return int(self.model.video.config.hidden_size)

    @property
    def length(self) -> int:
        return 1 if self.source == "post_projection" else 1 + self.model.num_frames

    def spec(self) -> dict[str, Any]:
        cfg = self.model.config
        return {"checkpoint": str(self.checkpoint_dir.resolve()), "sha256": self.sha256,
                "lc_source": self.source, "dim": self.dim, "length": self.length,
                "video_encoder": cfg.video_encoder, "embed_dim": cfg.embed_dim,
                "num_frames": self.model.num_frames, "image_size": self.model.image_size,
                "frame_sampling": self.sampling_record()}

    def sampling_record(self) -> dict[str, Any]:
        """How the frames were chosen, and the frame rate they had (median over utterances)."""
        return {"mode": self.frame_sampling, "spacing_s": self.spacing_s, "spacing_from": self.spacing_from,
                "effective_fps": round(float(np.median(self.fps)), 3) if self.fps else None}

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 → (B, length, dim)."""
        model = self.model
        with self.run.infer():
            if self.source == "post_projection":
                return model.encode_video(frames, projected=True, normalize=True).float()[:, None]
            hidden = model.video(pixel_values=model.preprocess_frames(frames)).last_hidden_state.float()
        b, n = hidden.shape[0], model.num_frames
        # TimeSformer lays its patch tokens out patch-major, frame-minor: (patches, frames)
        per_frame = hidden[:, 1:].reshape(b, -1, n, hidden.shape[-1]).mean(1)
        return torch.cat([hidden[:, :1], per_frame], dim=1)

    def frames_of(self, item: Media | np.ndarray) -> np.ndarray:
        """The frames V2LC sees of one prepared utterance (``frame_sampling``); a bare uint8 array
        (T, H, W, 3) is taken as the caller chose it."""
        if isinstance(item, np.ndarray):
            return item
        idx = lc_frame_indices(item.frame_times_ms, self.model.num_frames, self.spacing_s)
        if (fps := effective_fps(item.frame_times_ms, idx)) is not None:
            self.fps.append(fps)
        return item.frames[idx]

    def __call__(self, media: Sequence[Media | np.ndarray]) -> list[np.ndarray]:
        """Clips of the same shape go through in one batch (the prepared media usually share one)."""
        clips = [self.frames_of(m) for m in media]
        out: list[np.ndarray | None] = [None] * len(clips)
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(clips):
            groups.setdefault(c.shape, []).append(i)
        for idx in groups.values():
            frames = torch.from_numpy(np.stack([clips[i] for i in idx])).to(self.run.device)
            feats = self._encode(frames).cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = feats[j]
        return out  # type: ignore[return-value]
