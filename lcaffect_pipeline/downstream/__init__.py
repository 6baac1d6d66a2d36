"""Downstream benchmarks (CH-SIMS v2, MELD, MUStARD), pipeline side.

* ``datasets``: loaders from the folders their authors distribute to one ``UTTERANCES_SCHEMA``
  table, and the missing-media policy (``check_media``);
* ``protocols``: what the loaders record of each benchmark's protocol (MUStARD's official folds,
  MELD's dialogue context);
* ``media``: ``prepare_media`` writes one npz of frames + 16 kHz audio per utterance;
* ``demo``: small stand-ins in the official layouts whose labels depend partly on the video.
"""

from .datasets import (
    MELD_EMOTIONS,
    DatasetError,
    MediaReport,
    check_media,
    load_chsims2,
    load_dataset,
    load_meld,
    load_mustard,
    repair_text,
)
from .demo_datasets import SCENE_SPLITS, demo_label, generate_demo_downstream, text_cue
from .media import PrepareReport, decode_audio, npz_path, prepare_media

__all__ = [
    "MELD_EMOTIONS", "DatasetError", "MediaReport", "check_media", "load_chsims2", "load_dataset", "load_meld",
    "load_mustard", "repair_text", "SCENE_SPLITS", "demo_label", "generate_demo_downstream", "text_cue",
    "PrepareReport", "decode_audio", "npz_path", "prepare_media",
]
