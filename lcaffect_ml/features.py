"""Per-utterance features for the downstream tasks (CH-SIMS v2, MELD, MUStARD).

Four modalities, each a padded sequence per utterance (``lcaffect_ml.contracts.tables`` §3: ``base_features.safetensors``
and ``lc_features.safetensors``, rows in the order of ``features.json["utterance_ids"]``):

* text: token-level last hidden states of a BERT-style encoder. A hub name or local path
  (``hfl/chinese-roberta-wwm-ext`` for CH-SIMS v2, ``roberta-base``/``bert-base-uncased`` for MELD
  and MUStARD) is loaded with ``AutoTokenizer``/``AutoModel``; ``"tiny"`` builds a small
  ``BertModel`` in code (fixed seed) over a character tokenizer trained offline on the dataset's own
  texts (``lcaffect_ml.tokenizer.build_char_tokenizer``).
* acoustic: hidden states over time of a speech model (wav2vec 2.0, HuBERT, WavLM: any
  ``AutoModel`` that takes raw 16 kHz ``input_values``), or for ``"tiny"`` an 80-band log-mel
  spectrogram (25 ms Hann window, 10 ms hop, Slaney mel scale; ``transformers.audio_utils``, since
  torchaudio is not a dependency). Either is mean-pooled over contiguous windows to at most
  ``max_audio_frames`` steps, so an utterance of any length costs a bounded sequence.
  An utterance whose video has no audio track (``audio`` of length 0) gets ``audio_len = 0``.
* visual: one vector per sampled frame from an image model (``AutoModel``: the image embedding of
  CLIP/SigLIP-style models, else ``pooler_output``, else [CLS]); ``"tiny"`` is a randomly
  initialised 2-layer ViT built with a fixed seed (its features are a deterministic random
  projection of the frames, a stand-in that exercises every shape without any download).
* synthetic live comments: the V2LC *video* tower over ``num_frames`` of the utterance's prepared
  frames (resized to its ``image_size`` by ``V2LCModel.preprocess_frames``), chosen by
  ``lc_frame_indices``: ``training_rate`` (default) at the frame spacing V2LC was trained with
  (``train_segment_s / train_frames`` of its config.json, 1 s for 8 frames over 8 s), centred on
  the utterance, each target the nearest prepared frame, looped to ``num_frames`` when the
  utterance is shorter than the training clip (a 2.5-s MELD line: 3 frames, looped) and the centred
  window of ``num_frames`` spacings when it is longer; ``spread``: ``num_frames`` spread over the
  whole utterance whatever its length (2.5 s -> 3.2 fps, a time scale V2LC never saw).
  ``post_projection`` (default) is the L2-normalised projected embedding as a length-1 sequence:
  that is the space the contrastive loss aligned with real live comments, so it is the paper's
  "synthetic live comment" and the vector ``nearest.py`` reads comments back from.
  ``pre_projection`` keeps more detail: TimeSformer's [CLS] followed by the mean patch token of
  each frame (1 + num_frames tokens of the encoder width), for a fusion model that learns its own
  projection; the full patch grid (1 + 8x196 tokens for the base model) would be ~5 MB per
  utterance, too much to store for MELD.

Every extractor runs in eval mode under ``torch.no_grad`` (bf16 autocast on CUDA when asked) and
returns float32 NumPy arrays, one per utterance.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .feature_io import local_weights_digest
from .contracts.tables import SAMPLE_RATE

log = logging.getLogger(__name__)

# Bump when a change here alters the features computed from the same inputs (invalidates caches).
FEATURES_CODE_VERSION = "1"
TINY = "tiny"
# The tiny stand-in encoders: small enough to run in tests, fixed so that cached features stay valid.
TINY_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TINY_VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=2, intermediate_size=64)


# ------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def seeded_init(seed: int):
    """Build a randomly initialised module reproducibly without touching the global RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def pool_frames(x: np.ndarray, max_frames: int) -> np.ndarray:
    """Mean over contiguous windows so a (L, D) sequence has at most ``max_frames`` steps."""
    if x.shape[0] <= max_frames:
        return x
    pooled = F.adaptive_avg_pool1d(torch.from_numpy(np.ascontiguousarray(x.T))[None], max_frames)
    return pooled[0].T.contiguous().numpy()


@functools.lru_cache(maxsize=8)
def _mel_filters(sr: int, n_mels: int, n_fft: int) -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=sr / 2, sampling_rate=sr, norm="slaney", mel_scale="slaney")


def log_mel(audio: np.ndarray, sr: int = SAMPLE_RATE, n_mels: int = 80, win_ms: float = 25.0,
            hop_ms: float = 10.0) -> np.ndarray:
    """(frames, n_mels) log10 mel power spectrogram; frames = 1 + len(audio) // hop (centred)."""
    from transformers.audio_utils import optimal_fft_length, spectrogram, window_function

    win, hop = int(sr * win_ms / 1000), int(sr * hop_ms / 1000)
    n_fft = optimal_fft_length(win)
    if audio.size == 0:
        return np.zeros((0, n_mels), dtype=np.float32)
    if audio.size < win:  # centring reflects half a window: pad very short clips with silence
        audio = np.pad(audio, (0, win - audio.size))
    spec = spectrogram(audio.astype(np.float64), window_function(win, "hann"), frame_length=win,
                       hop_length=hop, fft_length=n_fft, power=2.0, mel_filters=_mel_filters(sr, n_mels, n_fft),
                       log_mel="log10", mel_floor=1e-10)
    return spec.T.astype(np.float32)


def pad_sequences(seqs: Sequence[np.ndarray], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, Lmax, D) float32 zero-padded (Lmax >= 1, so empty sequences still have a shape) and
    (N,) int64 lengths."""
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    width = max([1, *lengths.tolist()])
    out = torch.zeros((len(seqs), width, dim), dtype=torch.float32)
    for i, s in enumerate(seqs):
        if s.shape[0]:
            out[i, : s.shape[0]] = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32))
    return out, lengths


class _Runner:
    """Device, precision and no-grad for an encoder; every output comes back as float32 CPU."""

    def __init__(self, device: torch.device, precision: str):
        self.device, self.precision = device, precision

    @contextlib.contextmanager
    def infer(self):
        from .trainutil import autocast

        with torch.no_grad(), autocast(self.device, self.precision):
            yield


# --------------------------------------------------------------------------------- text


TEXT_POOLINGS = ("tokens", "mean", "turns")


class TextFeaturizer:
    """Token-level hidden states (L_i, Dt) per utterance, [CLS]/[SEP] (or <s>/</s>) included; with
    ``pooling="mean"`` their masked mean as one token (1, Dt): the sentence embedding of encoders
    trained for it (sentence-transformers' all-MiniLM-L6-v2 pools so), and a sequence a fusion
    model reads in a fraction of the time; with ``pooling="turns"`` one such sentence embedding per
    dialogue turn (1 + n, Dt), the utterance first, then its context most recent first, each turn
    encoded alone (as a sentence encoder was trained) and each distinct sentence once.

    ``layers_below_top`` k > 0 takes the token-level hidden states k layers below the top (the input
    of the encoder's last k layers) instead of its output: the fusion model then fine-tunes those k
    layers (``FusionTrainConfig.text_tune_layers``) while the frozen rest is computed once here."""

    def __init__(self, name: str, texts: Iterable[str], max_length: int = 128, seed: int = 0,
                 device: torch.device | str = "cpu", precision: str = "fp32", pooling: str = "tokens",
                 layers_below_top: int = 0):
        if pooling not in TEXT_POOLINGS:
            raise ValueError(f"text pooling must be one of {TEXT_POOLINGS}, not {pooling!r}")
        if layers_below_top and pooling != "tokens":
            raise ValueError(f"hidden states below the top layer are token-level: pooling must be tokens, "
                             f"not {pooling!r}")
        self.name, self.max_length, self.seed, self.pooling = name, int(max_length), int(seed), pooling
        self.layers_below_top = int(layers_below_top)
        self.run = _Runner(torch.device(device), precision)
        if name == TINY:
            from transformers import BertConfig, BertModel

            from .tokenizer import build_char_tokenizer

            self.tokenizer = build_char_tokenizer(list(texts), model_max_length=self.max_length)
            cfg = BertConfig(vocab_size=len(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
                             max_position_embeddings=self.max_length, **TINY_TEXT)
            with seeded_init(self.seed):
                self.model = BertModel(cfg, add_pooling_layer=False)
        else:
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(name)
            self.model = AutoModel.from_pretrained(name)
        self.model.to(self.run.device).eval()
        if not 0 <= self.layers_below_top <= self.model.config.num_hidden_layers:
            raise ValueError(f"{name} has {self.model.config.num_hidden_layers} layers: layers_below_top "
                             f"{self.layers_below_top} is out of range")

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def spec(self) -> dict[str, Any]:
        spec = {"name": self.name, "max_length": self.max_length, "dim": self.dim, "pooling": self.pooling}
        if self.layers_below_top:
            spec["layers_below_top"] = self.layers_below_top
        if self.name == TINY:
            spec.update(seed=self.seed, config=TINY_TEXT, vocab_size=len(self.tokenizer))
        elif weights := local_weights_digest(self.name):
            spec["weights"] = weights
        return spec

    def __call__(self, texts: Sequence[str | tuple[str, str] | list[str]]) -> list[np.ndarray]:
        """One (L_i, Dt) array per item: a text, or a pair (utterance, context) encoded as the
        tokenizer's sentence pair with the utterance first (its [CLS] leads); when the pair is too
        long, tokens come off the end of the longer part, so the oldest context goes first. With
        ``pooling="turns"`` an item is the list of its turns, and each gives one row."""
        if self.pooling == "turns":
            return self._turns([[t] if isinstance(t, str) else list(t) for t in texts])
        pairs = [i for i, t in enumerate(texts) if isinstance(t, tuple)]
        singles = [i for i, t in enumerate(texts) if not isinstance(t, tuple)]
        out: list[np.ndarray | None] = [None] * len(texts)
        for group, args in ((singles, ([texts[i] for i in singles],)),
                            (pairs, ([texts[i][0] for i in pairs], [texts[i][1] for i in pairs]))):
            if group:
                for i, x in zip(group, self._encode(*args)):
                    out[i] = x
        return out  # type: ignore[return-value]

    def _turns(self, items: list[list[str]]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(t for turns in items for t in turns))
        vectors = dict(zip(unique, (x[0] for x in self._encode(unique, pool=True))))
        return [np.stack([vectors[t] for t in turns]) for turns in items]

    def _encode(self, texts: list[str], contexts: list[str] | None = None, pool: bool = False) -> list[np.ndarray]:
        enc = self.tokenizer(texts, contexts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        ids = enc["input_ids"].to(self.run.device)
        mask = enc["attention_mask"].to(self.run.device)
        with self.run.infer():
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=self.layers_below_top > 0)
            hidden = out.hidden_states[-1 - self.layers_below_top] if self.layers_below_top else out.last_hidden_state
        if pool or self.pooling == "mean":
            hidden = ((hidden.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1))[:, None]
            return list(hidden.cpu().numpy())
        hidden = hidden.float().cpu().numpy()
        return [hidden[i, : int(n)] for i, n in enumerate(mask.sum(1).tolist())]


# -------------------------------------------------------------------------------- audio


class AudioFeaturizer:
    """Acoustic frames (La_i <= max_frames, Da) per utterance; (0, Da) for a silent video."""

    def __init__(self, name: str, max_frames: int = 64, n_mels: int = 80, device: torch.device | str = "cpu",
                 precision: str = "fp32"):
        self.name, self.max_frames, self.n_mels = name, int(max_frames), int(n_mels)
        self.run = _Runner(torch.device(device), precision)
        if name != TINY:
            from transformers import AutoFeatureExtractor, AutoModel

            self.extractor = AutoFeatureExtractor.from_pretrained(name)
            self.model = AutoModel.from_pretrained(name).to(self.run.device).eval()

    @property
    def dim(self) -> int:
        return self.n_mels if self.name == TINY else int(self.model.config.hidden_size)

    def spec(self) -> dict[str, Any]:
        spec = {"name": self.name, "max_frames": self.max_frames, "dim": self.dim}
        if self.name == TINY:
            spec.update(kind="log_mel", n_mels=self.n_mels, win_ms=25.0, hop_ms=10.0)
        elif weights := local_weights_digest(self.name):
            spec["weights"] = weights
        return spec

    def one(self, audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        if audio.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.name == TINY:
            return pool_frames(log_mel(audio, sr, self.n_mels), self.max_frames)
        # one clip per forward pass: wav2vec2-base normalises without an attention mask, so padding
        # a batch would change every clip's features with its neighbours' lengths
        min_len = 400  # the convolutional front end's receptive field (25 ms)
        if audio.size < min_len:
            audio = np.pad(audio, (0, min_len - audio.size))
        inputs = self.extractor(audio, sampling_rate=sr, return_tensors="pt")
        inputs = {k: v.to(self.run.device) for k, v in inputs.items()}
        with self.run.infer():
            hidden = self.model(**inputs).last_hidden_state[0]
        return pool_frames(hidden.float().cpu().numpy(), self.max_frames)

    def __call__(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.one(a) for a in clips]


# ------------------------------------------------------------------------------- visual


class VisualFeaturizer:
    """One vector per sampled frame: (T_i, Dv) per utterance."""

    def __init__(self, name: str, seed: int = 0, device: torch.device | str = "cpu", precision: str = "fp32"):
        self.name, self.seed = name, int(seed)
        self.run = _Runner(torch.device(device), precision)
        if name == TINY:
            from transformers import ViTConfig, ViTModel

            with seeded_init(self.seed):
                self.model = ViTModel(ViTConfig(**TINY_VISION), add_pooling_layer=False)
            self.processor = None
        else:
            from transformers import AutoImageProcessor, AutoModel

            self.processor = AutoImageProcessor.from_pretrained(name)
            self.model = AutoModel.from_pretrained(name)
        self.model.to(self.run.device).eval()
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:  # CLIP-style projections differ from hidden_size: measure once
            probe = np.zeros((1, 32, 32, 3), dtype=np.uint8)
            self._dim = int(self._encode([probe]).shape[-1])
        return self._dim

    def spec(self) -> dict[str, Any]:
        spec = {"name": self.name, "dim": self.dim}
        if self.name == TINY:
            spec.update(seed=self.seed, config=TINY_VISION, normalise="0.5/0.5")
        elif weights := local_weights_digest(self.name):
            spec["weights"] = weights
        return spec

    def _pixels(self, clips: Sequence[np.ndarray]) -> torch.Tensor:
        if self.processor is not None:  # the model's own resizing/cropping/normalisation
            return self.processor(images=[f for c in clips for f in c], return_tensors="pt")["pixel_values"]
        size, out = TINY_VISION["image_size"], []
        for c in clips:
            x = torch.from_numpy(c).permute(0, 3, 1, 2).float() / 255.0
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append((x - 0.5) / 0.5)
        return torch.cat(out)

    def _encode(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        pixels = self._pixels(clips).to(self.run.device)
        with self.run.infer():
            if hasattr(self.model, "get_image_features"):  # CLIP/SigLIP: the image embedding
                out = self.model.get_image_features(pixel_values=pixels)
                feats = out if isinstance(out, torch.Tensor) else out.pooler_output
            else:
                out = self.model(pixel_values=pixels)
                pooled = getattr(out, "pooler_output", None)
                feats = pooled if pooled is not None else out.last_hidden_state[:, 0]
        return feats.float().cpu().numpy()

    def __call__(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """All frames of a batch of utterances in one forward pass, split back per utterance."""
        if not clips:
            return []
        feats = self._encode(clips)
        return np.split(feats, np.cumsum([c.shape[0] for c in clips])[:-1])
