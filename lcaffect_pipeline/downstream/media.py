"""Media preparation: one ``{out}/{safe id}.npz`` per utterance, frames and 16 kHz audio.

The npz (numpy ``savez``, uncompressed, written atomically) holds the arrays of the prepared-media
contract (``lcaffect_ml.contracts.tables`` §2, ``MEDIA_ARRAYS``):

* ``frames`` uint8 ``(T, S, S, 3)`` RGB at the centres of ``T`` equal slices of the whole
  utterance (``segments.frame_times`` over one span), short side scaled to ``S`` and centre-cropped
  (``frames.sample_frames``: exact, with PyAV or, where ``backend="decord"``, decord);
* ``frame_times_ms`` int64 ``(T,)``;
* ``audio`` float32 ``(N,)`` mono at ``sr`` Hz in [-1, 1], decoded by ffmpeg into memory; ``N`` is
  0 when the video has no audio track (normal for some clips, not an error);
* ``sr`` int;

plus ``prep`` (a JSON string: the source file's hash and the preparation parameters), which makes
the preparation incremental: a file whose ``prep`` matches is kept as it is.

A file that does not decode (video or an audio track that exists) gets ``media_status``
"unreadable", no npz and a logged reason; never an array of zeros. The other files go on.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import lake
from lcaffect_ml.contracts import naming

log = logging.getLogger(__name__)

PREP_VERSION = "1"  # bump when the arrays' meaning changes: every npz is rewritten


@dataclass
class PrepareReport:
    prepared: list[str] = field(default_factory=list)  # written this time
    reused: list[str] = field(default_factory=list)  # already prepared from the same source
    missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # utterance id -> reason

    def to_dict(self) -> dict[str, Any]:
        return {"prepared": len(self.prepared), "reused": len(self.reused), "missing": len(self.missing),
                "unreadable": len(self.unreadable), "first_unreadable": dict(list(self.unreadable.items())[:10])}


def npz_path(out_dir: str | os.PathLike, utterance_id: str) -> Path:
    return lake.local_path(lake.under(out_dir), "media preparation") / f"{naming.safe_name(utterance_id)}.npz"


def prepare_media(table: pa.Table, out_dir: str | os.PathLike, *, frames: int = 8, size: int = 32, sr: int = 16000,
                  workers: int = 1, backend: str = "auto") -> tuple[pa.Table, PrepareReport]:
    """Prepare every utterance whose media file exists; returns the table with ``media_npz`` and
    ``media_status`` set, and the report (prepared, reused, missing, unreadable with reasons).

    Each distinct source file (by content hash) is decoded once per call: utterances sharing a
    file (the demo's hard-linked clips) get the same arrays without decoding it again.
    ``workers`` threads hash and decode in parallel (the work runs in ffmpeg/PyAV, not Python).
    ``backend``: the frame decoder (``frames.sample_frames``: auto | pyav | decord).
    """
    from ..frames import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"unknown frame backend {backend!r}: one of {' | '.join(BACKENDS)}")
    params = {"version": PREP_VERSION, "frames": int(frames), "size": int(size), "sr": int(sr)}
    if backend == "decord":  # auto and pyav decode exactly alike here: their npz stay valid
        params["backend"] = backend
    jobs = [(r["utterance_id"], r["media_path"]) for r in table.select(["utterance_id", "media_path"]).to_pylist()]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checked = list(pool.map(lambda job: _check_one(*job, out_dir, params), jobs))
        pending: dict[str, list[tuple[str, str, Path]]] = {}  # source hash -> utterances to write
        for (uid, media), (outcome, npz, detail) in zip(jobs, checked):
            if outcome == "pending":
                pending.setdefault(detail, []).append((uid, media, Path(npz)))
        written: dict[str, tuple[str, str | None, str]] = {}
        for group_results in pool.map(lambda item: _prepare_group(item[0], item[1], params), pending.items()):
            written.update(group_results)
    outcomes = [written.get(uid, c) for (uid, _), c in zip(jobs, checked)]
    return _with_outcomes(table, jobs, outcomes)


def _with_outcomes(table: pa.Table, jobs, outcomes) -> tuple[pa.Table, PrepareReport]:
    report = PrepareReport()
    statuses = []
    for (uid, _), (outcome, _, detail) in zip(jobs, outcomes):
        if outcome in ("prepared", "reused", "missing"):
            getattr(report, outcome).append(uid)
        else:
            report.unreadable[uid] = detail
        statuses.append({"prepared": "ok", "reused": "ok", "missing": "missing"}.get(outcome, "unreadable"))
    table = _set_column(table, "media_status", pa.array(statuses, pa.string()))
    table = _set_column(table, "media_npz", pa.array([npz for _, npz, _ in outcomes], pa.string()))
    return table, report


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), values)


def _check_one(uid: str, media: str | None, out_dir, params: dict[str, Any]) -> tuple[str, str | None, str]:
    """("missing" | "reused" | "unreadable" | "pending", npz path, reason or source hash)."""
    if not media or not Path(media).is_file():
        return "missing", None, "file not found"
    dest = npz_path(out_dir, uid)
    try:
        source = lake.file_hash(media)
    except OSError as exc:
        return "unreadable", None, f"{type(exc).__name__}: {exc}"
    if read_prep(dest) == dict(params, source=source):
        return "reused", str(dest), ""
    return "pending", str(dest), source


def _prepare_group(source: str, group: list[tuple[str, str, Path]], params: dict[str, Any]):
    """Decode one source file and write the npz of every utterance that uses it."""
    uid, media, _ = group[0]
    try:
        frames, times, audio = decode_utterance(Path(media), params["frames"], params["size"], params["sr"],
                                                backend=params.get("backend", "auto"))
    except Exception as exc:  # one bad file never stops the batch; the reason is kept
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("utterance %s: media %s is unreadable: %s", uid, media, reason)
        return {u: ("unreadable", None, reason) for u, _, _ in group}
    prep = np.array(json.dumps(dict(params, source=source), sort_keys=True))
    for _, _, dest in group:
        with lake.atomic_write(dest) as fh:
            np.savez(fh, frames=frames, frame_times_ms=times, audio=audio, sr=np.int64(params["sr"]), prep=prep)
    return {u: ("prepared", str(dest), "") for u, _, dest in group}


def read_prep(path: Path) -> dict[str, Any] | None:
    """The ``prep`` record of an existing npz (None when absent or damaged: prepare it again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz["prep"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def decode_utterance(path: Path, n_frames: int, size: int, sr: int,
                     backend: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``uint8 (T, S, S, 3)``, their times (ms) and the mono audio of one utterance."""
    from ..segments import frame_times
    from ..frames import sample_frames
    from ..probe import probe_video

    probe = probe_video(path)
    times = frame_times([(0, max(1, int(probe.duration_s * 1000)))], n_frames)[0]
    frames = sample_frames(path, times, size, probe=probe, backend=backend)
    audio = decode_audio(path, sr) if probe.has_audio else np.zeros(0, dtype=np.float32)
    return frames, times.astype(np.int64), audio


def decode_audio(path: Path, sr: int = 16000) -> np.ndarray:
    """The first audio stream as float32 mono at ``sr`` Hz, through an ffmpeg pipe (no temp file)."""
    import ffmpeg

    from ..probe import AudioDecodeError, _ffmpeg_reason

    stream = ffmpeg.input(str(path)).output("pipe:", map="0:a:0", vn=None, ac=1, ar=int(sr), f="f32le",
                                            acodec="pcm_f32le").global_args("-nostdin")
    try:
        out, _ = stream.run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raise AudioDecodeError(path, f"audio does not decode: {_ffmpeg_reason(exc.stderr)}") from None
    audio = np.frombuffer(out, dtype="<f4")
    if audio.size == 0:
        raise AudioDecodeError(path, "the audio track decodes to no samples")
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
