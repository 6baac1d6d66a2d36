"""Extract the downstream features of one dataset: text, acoustic, visual and synthetic live comments.

Run::

    python -m lcaffect_ml.extract_features --config features.yaml [--set key=value ...]

Writes, in ``output_dir`` (``lcaffect_ml.contracts.tables`` §3): ``base_features.safetensors`` (``text``, ``audio``,
``visual`` and their ``*_len``), ``lc_features.safetensors`` (``lc``, ``lc_len``) and
``features.json`` (``utterance_ids``, ``skipped``, ``dims``, versions, models). Rows follow the
utterance table's order; utterances without prepared media (``media_npz`` null) or whose npz is
unreadable are left out and listed in ``skipped`` with a reason in ``skip_reasons`` (never a row
of zeros standing in for missing media). Utterances whose video has no audio track keep their
row with ``audio_len = 0`` and are listed in ``no_audio``.

Caching: the base features are keyed by a hash of the utterance table's feature inputs (ids,
texts, media paths and each media file's size and mtime) and the base model options; the LC
features by the V2LC checkpoint's data version (sha256 of ``model.safetensors``), ``lc_source``
and the media. A run whose keys match the files on disk recomputes nothing; a new V2LC
checkpoint recomputes only ``lc_features.safetensors``. Each safetensors file carries its key as
metadata ``version`` (see ``features.load_features``, which checks them against ``features.json``).

Options: a YAML or JSON mapping (``--set key=value`` overrides one, the value parsed as YAML),
each documented where ``ExtractConfig`` declares it; ``--help`` lists them with their defaults.

Exit status: 0 done; 2 bad config or unreadable utterance table/checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .features import (FEATURES_CODE_VERSION, TEXT_POOLINGS, TINY, TINY_TEXT, TINY_VISION, AudioFeaturizer,
                       TextFeaturizer, VisualFeaturizer, pad_sequences)
from .feature_io import local_weights_digest
from .contracts.tables import BASE_FILE, LC_FILE, META_FILE
from .feature_io import (FeatureFileError, MediaFormatError, Utterance, digest, load_media, media_fingerprint,
                         read_utterances)
from .lc_features import LC_FRAME_SAMPLINGS, LC_SOURCES, SyntheticLCFeaturizer, lc_frame_spacing
from .contracts.hashing import sha256_file
from .contracts.tables import MAX_CONTEXT_TURNS
from .fusion import BASE_MODALITIES, LC_MODALITY, MODALITIES, check_base_modalities
from .feature_inputs import context_turns, released_featurizers, released_map, text_input, used_context
from .hub import require as require_models
from .options import build, opt
from .pipes import TrainingReporter, pipes_metadata, pipes_session
from .lake_folder import RunFolder, local_inputs, run_folder
from .devices import RUNTIME_KEYS, resolve_device, runtime_info
from .program import program_main
from .trainutil import (atomic_write_json, CheckpointFormatError, resolve_precision)
from .options import ConfigError
from .atomic import atomic_file

log = logging.getLogger("lcaffect_ml.extract_features")


@dataclass
class ExtractConfig:
    utterances: str = opt(help="utterance table (Parquet, lcaffect_ml.contracts.tables §1)")
    output_dir: str = opt(help="the dataset's features folder")
    v2lc_checkpoint: str | None = opt(None, "folder written by V2LCModel.save_pretrained (a V2LC run's output_dir); "
                                      "needed when modalities include lc")
    modalities: list = opt(help="the modalities extracted: text, audio, visual (at least one of them) and lc; "
                           "without audio, visual and lc no media are read, so utterances whose media are missing "
                           "keep their text features", factory=lambda: list(MODALITIES))
    text_model: str = opt(TINY, '"tiny" or a hub name/local path (hfl/chinese-roberta-wwm-ext, roberta-base)',
                          section="Encoders")
    audio_model: str = opt(TINY, '"tiny" (log-mel) or a hub name/local path (facebook/wav2vec2-base, '
                           "facebook/hubert-base-ls960)")
    vision_model: str = opt(TINY, '"tiny" or a hub name/local path (openai/clip-vit-base-patch32, '
                            "google/vit-base-patch16-224-in21k)")
    text_max_length: int = opt(128, "tokens per utterance, context included", low=1)
    text_pooling: str = opt("tokens", '"tokens": the token-level hidden states (the fusion model attends over '
                            'them) | "mean": their masked mean, one vector per utterance (the sentence embedding of '
                            'sentence encoders such as all-MiniLM-L6-v2; much faster to fuse) | "turns": one such '
                            "vector for the utterance and one for each context turn, each encoded alone (the fusion "
                            "model attends over the dialogue)", choices=TEXT_POOLINGS)
    text_layers_below_top: int = opt(0, "0: the text encoder's output; k > 0: its token-level hidden states k "
                                     "layers below the top (text_pooling tokens), for a fusion model that "
                                     "fine-tunes the encoder's top k layers (train_fusion's text_tune_layers)",
                                     low=0)
    context: bool = opt(True, "the text before the utterance (MELD's earlier turns of its dialogue, MUStARD's "
                        "context utterances: the table's `context`) enters the text modality, as the second "
                        "sentence of a pair after the utterance, most recent turn first, so truncation drops the "
                        "oldest; false: the utterance alone", section="Dialogue context")
    context_turns: int = opt(5, "at most this many turns of context, the most recent ones", low=0, high=MAX_CONTEXT_TURNS)
    released_features: Any = opt(None, "features the benchmark releases, in place of the encoders: a mapping "
                                 "modality (text | audio | visual) -> file, or one file for all three (an MMSA "
                                 "pickle); layouts in lcaffect_ml.released (MMSA / CH-SIMS v2 pickle, MUStARD "
                                 "audio_features.p, MELD's feature pickles), read by an unpickler that admits only "
                                 "NumPy arrays and plain containers. Utterances the file lacks are skipped with that "
                                 "reason; the live-comment features still come from the videos",
                                 section="Released features")
    max_audio_frames: int = opt(64, "acoustic steps after window-mean pooling", section="Encoder details", low=1)
    n_mels: int = opt(80, "log-mel bands of the tiny acoustic features", low=1)
    lc_source: str = opt("post_projection", '"post_projection" (the V2LC space, length 1) or "pre_projection" '
                         "(CLS + per-frame tokens)", choices=LC_SOURCES)
    lc_frame_sampling: str = opt("training_rate", '"training_rate": the frames V2LC sees are as far apart as in its '
                                 "training clips (its config.json; 1 s for 8 frames over 8 s), centred on the "
                                 "utterance, looped when it is shorter than the clip; \"spread\": spread over the "
                                 "whole utterance (2.5 s: 3.2 fps). Recorded in features.json (models.v2lc.frame_sampling)", choices=LC_FRAME_SAMPLINGS)
    seed: int = opt(0, "initialisation seed of the tiny text/vision stand-ins")
    batch_size: int = opt(16, "utterances per forward pass", section="Running", low=1)
    device: str = opt("auto", '"auto", "cuda" or "cpu"')
    precision: str = opt("auto", '"auto" (bf16 on CUDA), "bf16" or "fp32"')
    progress: bool = opt(True, "tqdm progress bar")
    pipes_asset_key: str | None = opt(None, "asset key to report under Dagster Pipes")
    comment_bank: str | None = opt(None, "optional Parquet with a `text` column (the clean live-comment corpus): "
                                   "the nearest real comments to the first utterances' synthetic features go into "
                                   "features.json and the materialisation", section="Nearest real comments")
    nearest_k: int = opt(5, "nearest comments listed per utterance", low=1)
    nearest_examples: int = opt(8, "utterances given their nearest comments")
    comment_bank_limit: int = opt(200_000, "the bank is capped at this many unique comments")

    def __post_init__(self) -> None:
        self.released_features = released_map(self.released_features)  # also when built directly

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractConfig":
        cfg = build(cls, data)
        try:
            base = check_base_modalities([m for m in cfg.modalities if m != LC_MODALITY], "modalities (besides lc)")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg.modalities = base + ([LC_MODALITY] if LC_MODALITY in cfg.modalities else [])
        if LC_MODALITY in cfg.modalities and not cfg.v2lc_checkpoint:
            raise ConfigError("v2lc_checkpoint is needed for the lc modality")
        if cfg.text_layers_below_top and cfg.text_pooling != "tokens":
            raise ConfigError(f"text_layers_below_top needs text_pooling tokens (the layers above read every "
                              f"token), not {cfg.text_pooling!r}")
        return cfg


def hub_models(options: dict[str, Any], used_by: str = "extract_features") -> list:
    """The pretrained models (``lcaffect_ml.hub.ModelRef``) extraction with ``options`` (an
    ``ExtractConfig`` as a dict, or the pipeline's per-task options) loads: each modality's encoder
    it extracts unless it is the tiny stand-in or a released feature file replaces it."""
    from .hub import ModelRef

    defaults = {f.name: f.default for f in dataclasses.fields(ExtractConfig)}
    released = released_map(options.get("released_features"))
    wanted = options.get("modalities") or MODALITIES
    refs = []
    for key, modality in (("text_model", "text"), ("audio_model", "audio"), ("vision_model", "visual")):
        name = options.get(key, defaults[key])
        if name != TINY and modality not in released and modality in wanted:
            refs.append(ModelRef(name, f"{used_by}.{key}"))
    return refs


# ----------------------------------------------------------------------------- cache keys


def _base_key(cfg: ExtractConfig, utts: Sequence[Utterance], precision: str, released: dict[str, Any]) -> str:
    """Everything the base features depend on; labels and splits deliberately left out."""
    def model(name: str, **options: Any) -> dict[str, Any]:
        return {"name": name, "weights": local_weights_digest(name), **options}

    def source(modality: str, spec: dict[str, Any]) -> dict[str, Any]:
        if modality in released:  # a released file replaces the encoder: its bytes are what matters
            return {"released": released[modality].sha256}
        return spec

    base = [m for m in cfg.modalities if m in BASE_MODALITIES]
    return digest({
        "code": FEATURES_CODE_VERSION, "precision": precision,
        **({"modalities": base} if base != list(BASE_MODALITIES) else {}),  # all three: the key it always had
        "table": [[u.utterance_id, u.text, u.media_npz, media_fingerprint(u.media_npz)] for u in utts],
        "context": [context_turns(cfg, u) for u in utts] if used_context(cfg) else None,
        "text": source("text", model(cfg.text_model, max_length=cfg.text_max_length,
                                     **({"pooling": cfg.text_pooling} if cfg.text_pooling != "tokens" else {}),
                                     **({"layers_below_top": cfg.text_layers_below_top}
                                        if cfg.text_layers_below_top else {}),
                                     tiny=[cfg.seed, TINY_TEXT] if cfg.text_model == TINY else None)),
        "audio": source("audio", model(cfg.audio_model, max_frames=cfg.max_audio_frames,
                                       n_mels=cfg.n_mels if cfg.audio_model == TINY else None)),
        "vision": source("visual", model(cfg.vision_model,
                                         tiny=[cfg.seed, TINY_VISION] if cfg.vision_model == TINY else None)),
    })


def _lc_key(v2lc_sha256: str, cfg: ExtractConfig, utts: Sequence[Utterance], precision: str) -> str:
    """The V2LC data version, how its frames are chosen and the media: not the texts nor the base models."""
    sampling = [cfg.lc_frame_sampling, lc_frame_spacing(cfg.v2lc_checkpoint)[0]
                if cfg.lc_frame_sampling == "training_rate" else None]
    return digest({"code": FEATURES_CODE_VERSION, "precision": precision, "v2lc": v2lc_sha256,
                   "lc_source": cfg.lc_source, "lc_frame_sampling": sampling,
                   "media": [[u.utterance_id, u.media_npz, media_fingerprint(u.media_npz)] for u in utts]})


def _file_version(path: Path) -> str | None:
    """The ``version`` metadata of a features file, None when absent or unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("version")
    except Exception:  # absent, truncated or foreign: treated as a cache miss
        return None


def _previous(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------- extraction


def _run_pass(rows: Sequence[Utterance], featurizers: dict[str, Any], batch_size: int, progress: bool,
              desc: str, text_of=lambda u: u.text, media: bool = True) -> tuple[list[str], dict[str, str], dict[str, list]]:
    """Load each utterance's media once (``media``: the featurizers need them) and run the given
    featurizers over it, batch by batch.

    Returns the ids that were featurised, ``{id: reason}`` for the unreadable ones (logged, the
    batch goes on), and ``{modality: [array per kept id]}``.
    """
    from tqdm.auto import tqdm

    kept: list[str] = []
    bad: dict[str, str] = {}
    outputs: dict[str, list] = {name: [] for name in featurizers}
    with tqdm(total=len(rows), desc=desc, unit="utt", dynamic_ncols=True, disable=not progress) as bar:
        for start in range(0, len(rows), batch_size):
            batch, loaded = [], []
            for u in rows[start:start + batch_size]:
                try:
                    loaded.append(load_media(u.media_npz) if media else None)
                    batch.append(u)
                except MediaFormatError as exc:
                    log.warning("skipping utterance %s: %s", u.utterance_id, exc)
                    bad[u.utterance_id] = str(exc)
            if batch:
                inputs = {"text": [text_of(u) for u in batch], "ids": [u.utterance_id for u in batch]}
                if media:
                    inputs.update(audio=[m.audio for m in loaded], visual=[m.frames for m in loaded], media=loaded)
                for name, featurize in featurizers.items():  # a released file's reads ids, V2LC the media
                    outputs[name].extend(featurize(inputs[getattr(featurize, "input", name)]))
                kept.extend(u.utterance_id for u in batch)
            bar.update(len(rows[start:start + batch_size]))
    return kept, bad, outputs


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], version: str) -> str:
    """Atomically write a features file carrying its version; returns the file's sha256.

    One metadata key only: safetensors writes a metadata map in hash order, and identical features
    should give identical bytes (the file hash is the reported data version).
    """
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"version": version})
    return sha256_file(path)


def _padded(name: str, seqs: list, dim: int) -> dict[str, torch.Tensor]:
    values, lengths = pad_sequences(seqs, dim)
    return {name: values, f"{name}_len": lengths}


def extract(cfg: ExtractConfig, reporter: TrainingReporter | None = None,
            folder: RunFolder | None = None) -> dict[str, Any]:
    """Extract (or reuse) one dataset's features; returns a summary (also written to features.json),
    published to ``folder``'s lake URL where it has one."""
    reporter = reporter or TrainingReporter()
    folder = folder or RunFolder(Path(cfg.output_dir))
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    require_models(hub_models(vars(cfg)))  # before any utterance is read: an offline node fails here
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_modalities = [m for m in cfg.modalities if m in BASE_MODALITIES]
    want_lc = LC_MODALITY in cfg.modalities
    ckpt = Path(cfg.v2lc_checkpoint) if want_lc else None
    if ckpt is not None and not (ckpt / "model.safetensors").is_file():
        raise CheckpointFormatError(f"{ckpt}: no model.safetensors (a V2LC save_pretrained folder is needed)")

    utts = read_utterances(cfg.utterances)
    released = released_featurizers(cfg)
    needs_media = want_lc or base_modalities != ["text"]
    skip_reasons = _skip_reasons(utts, released, needs_media)
    rows = [u for u in utts if u.utterance_id not in skip_reasons]
    prev = _previous(out_dir)
    base_key = _base_key(cfg, utts, precision, released)
    v2lc_sha = sha256_file(ckpt / "model.safetensors") if want_lc else None
    lc_key = _lc_key(v2lc_sha, cfg, rows, precision) if want_lc else None
    base_hit = prev.get("base_version") == base_key and _file_version(out_dir / BASE_FILE) == base_key
    lc_hit = want_lc and prev.get("lc_version") == lc_key and _file_version(out_dir / LC_FILE) == lc_key
    log.info("%d utterances (%d left out); modalities %s; base features %s, LC features %s", len(utts),
             len(skip_reasons), cfg.modalities, "cached" if base_hit else "to compute",
             "not asked for" if not want_lc else "cached" if lc_hit else "to compute")

    def make_lc() -> SyntheticLCFeaturizer:
        return SyntheticLCFeaturizer(ckpt, cfg.lc_source, device=device, precision=precision,
                                     frame_sampling=cfg.lc_frame_sampling)

    meta: dict[str, Any] = {k: prev[k] for k in ("utterance_ids", "dims", "models", "base_sha256", "lc_sha256",
                                                 "context") if k in prev and base_hit}
    meta.setdefault("dims", {})
    meta.setdefault("models", {})
    lc_outputs, lc_featurizer = None, None
    if not base_hit:
        lc_featurizer = make_lc() if want_lc and not lc_hit else None  # shares the media reads of the base pass
        lc_outputs = _base_pass(cfg, meta, utts, rows, skip_reasons, base_modalities, released, lc_featurizer,
                                needs_media, base_key, device, precision)
        if lc_hit and meta["utterance_ids"] != prev.get("utterance_ids"):
            lc_hit = False  # the rows changed under cached LC features: recompute them
    else:
        meta["skip_reasons"] = prev.get("skip_reasons", skip_reasons)
    if not want_lc:
        meta["lc_sha256"] = None
    elif lc_hit:
        meta["lc_sha256"] = prev["lc_sha256"]
        meta["dims"]["lc"], meta["models"]["v2lc"] = prev["dims"]["lc"], prev["models"]["v2lc"]
    else:
        lc_featurizer = lc_featurizer or make_lc()
        if lc_outputs is None:
            lc_outputs = _lc_pass(cfg, utts, meta["utterance_ids"], lc_featurizer, v2lc_sha)
        meta["dims"]["lc"] = lc_featurizer.dim
        meta["models"]["v2lc"] = lc_featurizer.spec()
        meta["lc_sha256"] = _write_tensors(out_dir / LC_FILE, _padded("lc", lc_outputs, lc_featurizer.dim), lc_key)
    _describe(cfg, meta, utts, prev, base_key, lc_key, v2lc_sha, device, precision,
              base_recomputed=not base_hit, lc_recomputed=lc_outputs is not None)
    # features.json last: a reader sees the new ids only once both tensor files are in place
    atomic_write_json(out_dir / META_FILE, meta)
    log.info("features for %d utterances (%d skipped) in %s: base %s, LC %s", len(meta["utterance_ids"]),
             len(meta["skipped"]), out_dir, "recomputed" if meta["base_recomputed"] else "cached",
             "not asked for" if not want_lc else "recomputed" if meta["lc_recomputed"] else "cached")
    folder.publish(last=(META_FILE,))  # before the report: what it names is in the lake
    _report(reporter, meta, folder.location(out_dir))
    return meta


def _skip_reasons(utts: list, released: dict, needs_media: bool) -> dict[str, str]:
    """Why each utterance left out is left out: no prepared media (when media are read), or absent
    from a released feature file."""
    reasons = {u.utterance_id: f"no prepared media (media_status={u.media_status or 'unknown'})"
               for u in utts if u.media_npz is None} if needs_media else {}
    for m, featurizer in released.items():  # an utterance the released file lacks has no features
        for u in utts:
            if u.utterance_id not in featurizer.features and u.utterance_id not in reasons:
                reasons[u.utterance_id] = f"not in the released {m} features {featurizer.path}"
    return reasons


def _base_pass(cfg: ExtractConfig, meta: dict, utts: list, rows: list, skip_reasons: dict, base_modalities: list,
               released: dict, lc_featurizer, needs_media: bool, base_key: str, device, precision: str):
    """Compute and write the base features into ``meta`` (and the LC outputs too when
    ``lc_featurizer`` is given, from the same media reads); returns those LC outputs or None. With
    ``needs_media`` an utterance whose media cannot be read is left out, as the LC pass would."""
    log.info("computing base features (%s) for %d utterances on %s (%s)",
             ", ".join(f"{m} {_model_name(cfg, m)}" for m in base_modalities), len(rows), device, precision)
    featurizers = _base_featurizers(cfg, base_modalities, released, utts, device, precision)
    if lc_featurizer is not None:
        featurizers[LC_MODALITY] = lc_featurizer
    sep = getattr(getattr(featurizers.get("text"), "tokenizer", None), "sep_token", None) or "|"
    kept, bad, outputs = _run_pass(rows, featurizers, cfg.batch_size, cfg.progress, "features",
                                   lambda u: text_input(cfg, u, sep), media=needs_media)
    if not kept:
        raise FeatureFileError(f"{cfg.utterances}: no utterance has readable prepared media")
    tensors: dict[str, torch.Tensor] = {}
    for name in base_modalities:
        meta["dims"][name] = featurizers[name].dim
        meta["models"][name] = featurizers[name].spec()
        tensors.update(_padded(name, outputs[name], featurizers[name].dim))
    meta["base_sha256"] = _write_tensors(Path(cfg.output_dir) / BASE_FILE, tensors, base_key)
    meta["utterance_ids"], meta["skip_reasons"] = kept, {**skip_reasons, **bad}
    by_id = {u.utterance_id: u for u in utts}
    meta["context"] = {"used": used_context(cfg), "max_turns": int(cfg.context_turns) if used_context(cfg) else 0,
                       "utterances_with_context": sum(bool(context_turns(cfg, by_id[i])) for i in kept)}
    return outputs.get(LC_MODALITY)


def _describe(cfg: ExtractConfig, meta: dict, utts: list, prev: dict, base_key: str, lc_key: str | None,
              v2lc_sha: str | None, device, precision: str, *, base_recomputed: bool, lc_recomputed: bool) -> None:
    """The rest of features.json: what was read and skipped, the versions, the runtime, the
    utterances without audio and the nearest real comments."""
    kept = meta["utterance_ids"]
    meta.update({
        "utterances": str(Path(cfg.utterances).resolve()), "n_utterances_table": len(utts),
        "modalities": list(cfg.modalities), "skipped": [u.utterance_id for u in utts if u.utterance_id in meta["skip_reasons"]],
        "base_version": base_key, "lc_version": lc_key, "lc_source": cfg.lc_source, "v2lc_sha256": v2lc_sha,
        **runtime_info(device, precision), "code_version": FEATURES_CODE_VERSION,
        "data_version": digest([meta["base_sha256"], meta["lc_sha256"]]),
        "base_recomputed": base_recomputed, "lc_recomputed": lc_recomputed,
    })
    out_dir = Path(cfg.output_dir)
    if "audio" not in cfg.modalities:
        meta["no_audio"] = []
    elif base_recomputed or "no_audio" not in prev:
        meta["no_audio"] = _no_audio(out_dir, kept)
    else:
        meta["no_audio"] = prev["no_audio"]
    if cfg.comment_bank and LC_MODALITY in cfg.modalities:
        meta["nearest_version"], meta["nearest_comments"] = _nearest(cfg, utts, kept, lc_key, prev, device, precision)


def _model_name(cfg: ExtractConfig, modality: str) -> str:
    return {"text": cfg.text_model, "audio": cfg.audio_model, "visual": cfg.vision_model}[modality]


def _base_featurizers(cfg: ExtractConfig, modalities: list[str], released: dict[str, Any],
                      utts: Sequence[Utterance], device: torch.device, precision: str) -> dict[str, Any]:
    """A released file's reader, else the encoder, for each base modality asked for."""
    build = {
        "text": lambda: TextFeaturizer(cfg.text_model, [t for u in utts for t in (u.text, *context_turns(cfg, u))],
                                       cfg.text_max_length, cfg.seed, device, precision, cfg.text_pooling,
                                       cfg.text_layers_below_top),
        "audio": lambda: AudioFeaturizer(cfg.audio_model, cfg.max_audio_frames, cfg.n_mels, device, precision),
        "visual": lambda: VisualFeaturizer(cfg.vision_model, cfg.seed, device, precision),
    }
    return {m: released.get(m) or build[m]() for m in modalities}


def _lc_pass(cfg: ExtractConfig, utts: Sequence[Utterance], kept: list[str], featurizer: SyntheticLCFeaturizer,
             v2lc_sha: str) -> list:
    """The synthetic live-comment features alone (the base features were cached)."""
    log.info("computing synthetic live-comment features (V2LC %s, %s) for %d utterances", v2lc_sha[:12],
             cfg.lc_source, len(kept))
    by_id = {u.utterance_id: u for u in utts}
    _, bad, outputs = _run_pass([by_id[i] for i in kept], {LC_MODALITY: featurizer}, cfg.batch_size, cfg.progress,
                                "lc features")
    if bad:
        raise MediaFormatError(f"media changed since the base features were extracted: {bad}")
    return outputs[LC_MODALITY]


def _no_audio(out_dir: Path, kept: list[str]) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(out_dir / BASE_FILE), framework="pt") as fh:
        lengths = fh.get_tensor("audio_len").tolist()
    return [i for i, n in zip(kept, lengths) if n == 0]


def _nearest(cfg: ExtractConfig, utts: Sequence[Utterance], kept: list[str], lc_key: str,
             prev: dict[str, Any], device: torch.device, precision: str) -> tuple[str, list[dict[str, Any]]]:
    """Top-k real comments for the first few utterances, reused while inputs are unchanged."""
    import pyarrow.parquet as pq

    from .nearest import nearest_comments_for_media, unique_texts

    bank_path = Path(cfg.comment_bank)
    version = digest([lc_key, str(bank_path.resolve()), media_fingerprint(str(bank_path)), cfg.nearest_k,
                      cfg.nearest_examples, cfg.comment_bank_limit])
    cached = prev.get("nearest_comments")
    if prev.get("nearest_version") == version and cached is not None:
        return version, cached
    try:
        texts = pq.read_table(bank_path, columns=["text"]).column("text").to_pylist()
    except (OSError, ValueError, KeyError) as exc:
        raise FeatureFileError(f"{bank_path}: cannot read a `text` column ({exc})") from exc
    bank = unique_texts(texts)[: cfg.comment_bank_limit]
    by_id = {u.utterance_id: u for u in utts}
    chosen = [by_id[i] for i in kept[: cfg.nearest_examples]]
    found = nearest_comments_for_media(cfg.v2lc_checkpoint, bank, [u.media_npz for u in chosen], k=cfg.nearest_k,
                                       device=device, precision=precision, frame_sampling=cfg.lc_frame_sampling)
    log.info("nearest live comments for %d utterances from a bank of %d comments", len(chosen), len(bank))
    return version, [{"utterance_id": u.utterance_id, "text": u.text,
                      "comments": [[t, round(s, 4)] for t, s in hits]} for u, hits in zip(chosen, found)]


def _report(reporter: TrainingReporter, meta: dict[str, Any], out_dir: str) -> None:
    """One materialization: counts, dims, versions, paths (and the nearest comments as a table)."""
    if not reporter.active:
        return
    values: dict[str, Any] = {
        "n_utterances": len(meta["utterance_ids"]), "n_skipped": len(meta["skipped"]),
        "n_no_audio": len(meta["no_audio"]), "base_version": meta["base_version"],
        "lc_version": meta["lc_version"] or "not extracted", "v2lc_sha256": meta["v2lc_sha256"] or "not used",
        "lc_source": meta["lc_source"], "modalities": ", ".join(meta["modalities"]),
        **{k: meta[k] for k in RUNTIME_KEYS if k in meta},
        **{f"lc_frames_{k}": v for k, v in ((meta["models"].get("v2lc") or {}).get("frame_sampling") or {}).items()
           if k in ("mode", "effective_fps", "spacing_from") and v is not None},
        "base_recomputed": meta["base_recomputed"], "lc_recomputed": meta["lc_recomputed"],
        "context_turns": int((meta.get("context") or {}).get("max_turns", 0)),
        **{f"dim_{k}": int(v) for k, v in meta["dims"].items()},
        **{f"{k}_model": str(meta["models"][k]["name"]) for k in BASE_MODALITIES if k in meta["models"]},
    }
    stand_ins = [k for k in BASE_MODALITIES if meta["models"].get(k, {}).get("name") == TINY]
    stand_ins += ["v2lc"] if meta["models"].get("v2lc", {}).get("video_encoder") == "tiny" else []
    values["stand_in_encoders"] = ", ".join(stand_ins) or "none"
    metadata = pipes_metadata(values)
    metadata["features_dir"] = {"raw_value": out_dir, "type": "path"}
    if stand_ins:  # random projections built in code: say so where a reader of this asset looks
        metadata["WARNING"] = {"type": "text", "raw_value": f"features from STAND-IN encoders ({', '.join(stand_ins)}): "
                               "random projections for tests and the demo, not real models"}
    if meta.get("nearest_comments"):
        rows = ["| utterance | text | nearest live comments |", "|---|---|---|"]
        for item in meta["nearest_comments"]:
            hits = ", ".join(f"{t} ({s:.2f})" for t, s in item["comments"])
            rows.append(f"| {item['utterance_id']} | {item['text'][:40]} | {hits} |".replace("\n", " "))
        metadata["nearest_comments"] = {"raw_value": "\n".join(rows), "type": "md"}
    reporter.context.report_asset_materialization(metadata=metadata, data_version=meta["data_version"],
                                                  asset_key=reporter.asset_key)


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    return program_main(argv, "lcaffect_ml.extract_features", "Downstream feature extraction", ExtractConfig,
                        _run, errors=(CheckpointFormatError, FeatureFileError))


def _run(cfg: ExtractConfig) -> int:
    # inputs and the features folder may be lake URLs: local copies here (the table with its media,
    # the V2LC run without its checkpoints), the folder published when done
    inputs = {"utterances": cfg.utterances, "v2lc_checkpoint": cfg.v2lc_checkpoint, "comment_bank": cfg.comment_bank}
    with local_inputs(inputs, cfg.output_dir, exclude=("checkpoints",), beside={"utterances": ("media",)}) as local, \
            run_folder(cfg.output_dir, META_FILE) as folder, pipes_session(asset_key=cfg.pipes_asset_key) as reporter:
        meta = extract(dataclasses.replace(cfg, output_dir=str(folder.local), **local), reporter, folder)
    print(json.dumps({k: meta[k] for k in ("data_version", "base_recomputed", "lc_recomputed", "dims")}
                     | {"n_utterances": len(meta["utterance_ids"]), "n_skipped": len(meta["skipped"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
