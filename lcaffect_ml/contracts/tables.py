"""The tables and files the downstream programs read: what the pipeline writes for them.

1. The utterance table (Parquet, ``UTTERANCES_SCHEMA``): one row per utterance of every dataset,
   written by ``lcaffect_pipeline.downstream``; ``lcaffect_ml.extract_features`` reads
   ``EXTRACT_COLUMNS``, ``lcaffect_ml.train_fusion`` reads ``FUSION_COLUMNS`` (of which
   ``FUSION_REQUIRED`` must be present). ``lcaffect_pipeline.schema`` re-exports the schema.
   ``context`` holds the text that precedes an utterance (MUStARD's context utterances, MELD's
   earlier turns of the same dialogue, oldest first); ``fold`` the official test fold, if any.
2. Prepared media (``media_npz``): an uncompressed ``np.savez`` with ``MEDIA_ARRAYS``: ``frames``
   uint8 ``(T, S, S, 3)``, ``frame_times_ms`` int64 ``(T,)``, ``audio`` float32 mono at
   ``SAMPLE_RATE`` (length 0 when the video has no audio) and ``sr``.
3. The features folder: ``BASE_FILE`` (``text``, ``audio``, ``visual`` and their ``*_len``),
   ``LC_FILE`` (``lc``, ``lc_len``) and ``META_FILE`` (``utterance_ids`` in row order, versions,
   dims), written by ``lcaffect_ml.extract_features`` and read by ``lcaffect_ml.train_fusion``.
"""

from __future__ import annotations

import pyarrow as pa

DOWNSTREAM_TASKS = ("chsims2", "meld", "mustard")

UTTERANCES_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),  # one of DOWNSTREAM_TASKS
        pa.field("utterance_id", pa.string(), nullable=False),  # unique within the dataset
        pa.field("split", pa.string(), nullable=False),  # train / valid / test (official)
        pa.field("text", pa.string(), nullable=False),
        pa.field("label", pa.float64(), nullable=False),  # regression target or class index
        pa.field("label_name", pa.string()),  # class name (emotion, sarcastic/not)
        pa.field("extra_labels", pa.string()),  # JSON: label_T/A/V, MELD sentiment, ...
        pa.field("speaker", pa.string()),
        pa.field("show", pa.string()),  # MUStARD show (speaker-independent protocol)
        pa.field("context", pa.list_(pa.string())),  # preceding text: MUStARD context, MELD earlier turns
        pa.field("media_path", pa.string()),  # the official media file for this utterance
        pa.field("media_status", pa.string(), nullable=False),  # ok | missing | unreadable
        pa.field("media_npz", pa.string()),  # prepared frames + 16 kHz audio (npz)
        # the official cross-validation fold that tests this utterance (MUStARD's split_indices.p / .json);
        # null where the dataset ships no folds
        pa.field("fold", pa.int32()),
    ],
    metadata={"lcaffect.table": "utterances", "lcaffect.schema_version": "2"},
)

MEDIA_OK = "ok"  # media_status of a row whose media could be prepared
# The most earlier turns a row's ``context`` holds: MELD's loader caps while collecting, so one long
# dialogue costs rows x this, not rows squared (an 8,000-turn dialogue reached 5.7 GiB);
# ``ExtractConfig.context_turns`` may not ask for more.
MAX_CONTEXT_TURNS = 32
EXTRACT_COLUMNS = ("utterance_id", "text", "media_npz", "media_status")
FUSION_REQUIRED = ("utterance_id", "split", "label", "media_status")
FUSION_COLUMNS = ("dataset", *FUSION_REQUIRED, "show", "fold", "extra_labels")

# The evaluation protocol of each task, the one default of the command line and of Dagster:
# CH-SIMS v2 and MELD have an official train/valid/test split; MUStARD's default is its
# speaker-dependent 5-fold cross-validation (the official folds of split_indices.p / .json where the
# dataset folder has them), the setting MUStARD's authors report first.
DEFAULT_PROTOCOLS = {"chsims2": "official", "meld": "official", "mustard": "speaker_dependent"}

SAMPLE_RATE = 16_000
MEDIA_ARRAYS = ("frames", "frame_times_ms", "audio", "sr")

BASE_FILE = "base_features.safetensors"
LC_FILE = "lc_features.safetensors"
META_FILE = "features.json"
