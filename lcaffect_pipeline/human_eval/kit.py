"""Build a human evaluation kit: the blinded sample, its three comment sets per item, the page,
the clips and the key (``lcaffect_pipeline.human_eval`` describes the layout)."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from lcaffect_ml.contracts.shards import SHARDS_DIR, decode_frames_member
from lcaffect_ml.feature_io import digest
from lcaffect_ml.options import check_bounds, opt

from .. import lake, tables
from ..corpus import connect
from . import page

ROLES = ("real", "synthetic", "control")
LETTERS = ("A", "B", "C")
KEY_FILE = "key.json"  # written last: a kit folder with it is complete
PAGE_DIR = "page"
RATINGS_DIR = "ratings"


class KitError(ValueError):
    """The encoder or the lake cannot give a kit (no held-out split, no held-out segment with comments)."""


@dataclasses.dataclass(frozen=True)
class KitOptions:
    """What a kit samples and shows (``HumanEvalResource`` exposes each option)."""

    items: int = opt(24, "held-out segments in the kit (all that have comments, when fewer)", low=1, high=1000)
    seed: int = opt(0, "seed of the sample, the control draw and every shuffle", low=0)
    comments_per_set: int = opt(5, "comments per set; the retrieved sets are cut to the real set's size, "
                                "so no set stands out by its length", low=1, high=32)
    bank_limit: int = opt(20000, "most distinct training-video comments searched (chosen in a fixed hash order)", low=1)
    variant: str = opt("", "the V2LC variant whose weights and held-out videos are used (empty: the first, "
                       "the one downstream reads)")
    device: str = opt("auto", "where the encoder runs: auto, cpu, cuda, cuda:N")

    def __post_init__(self):
        check_bounds(self, "human_eval: ")


def kit_dir(root, kit_id: str):
    return lake.as_path(root) / "human_eval" / kit_id


def encoder_run(encoder: Mapping[str, Any], variant: str) -> tuple[str, Mapping[str, Any]]:
    """(variant name, its value) of the ``v2lc_encoder`` value: ``variant`` or the first."""
    variants = encoder.get("variants") or {encoder.get("variant") or "default": encoder}
    name = variant or encoder.get("variant") or next(iter(variants))
    if name not in variants:
        raise KitError(f"human_eval.variant {name!r}: the encoder has the variants {sorted(variants)}")
    return name, variants[name]


def read_split(run_dir) -> dict[str, Any]:
    path = lake.as_path(run_dir) / "split.json"
    if not path.exists():
        raise KitError(f"{path} is absent: this encoder run recorded no held-out split (trained before split.json)")
    split = json.loads(path.read_text())
    if not split.get("test"):
        raise KitError(f"{path}: no held-out video (eval_fraction 0?): every clip was trained on")
    return split


def held_out_segments(root, test_videos: Sequence[str]) -> list[dict[str, Any]]:
    """The current segments of the held-out videos that have comments and frames, in a fixed order."""
    rows = tables.read(root, "segments").to_pylist()
    keep = set(test_videos)
    found = [r for r in rows if r["video_id"] in keep and r["comments"] and r["shard"] and r["sample_key"]]
    return sorted(found, key=lambda r: (r["video_id"], r["segment_index"]))


def comment_bank(root, train_videos: Sequence[str], limit: int) -> list[str]:
    """Distinct clean comments of the training videos: the held-out videos' own comments are left
    out, so the synthetic set cannot simply copy the real one. ``limit`` taken in md5 order (stable)."""
    files = sorted(tables.files(root, "clean_comments").values())
    con = connect(root)
    try:
        rows = con.execute("SELECT text FROM (SELECT DISTINCT text FROM read_parquet(?) WHERE list_contains(?, video_id) "
                           "AND length(trim(text)) > 0) ORDER BY md5(text) LIMIT ?",
                           [[str(f) for f in files], list(train_videos), int(limit)]).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def draw(candidates: list[dict[str, Any]], opts: KitOptions) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(item, control) pairs: ``opts.items`` segments drawn with ``opts.seed``, each with a random
    other segment whose retrieved comments are its control (of another video where there is one)."""
    rng = random.Random(opts.seed)
    chosen = rng.sample(candidates, min(opts.items, len(candidates)))
    pairs = []
    for seg in chosen:
        others = [c for c in candidates if c["video_id"] != seg["video_id"]] or [c for c in candidates if c is not seg]
        if not others:
            raise KitError("one held-out segment with comments: a control needs another")
        pairs.append((seg, rng.choice(others)))
    return pairs


def segment_frames(root, seg: Mapping[str, Any]):
    """A segment's frames (T, S, S, 3) read back from its training shard."""
    path = lake.as_path(root) / SHARDS_DIR / seg["shard"]
    with lake.local_copy(path, "the human evaluation kit") as local, tarfile.open(local) as tar:
        for info in tar:
            key, _, member = info.name.partition(".")
            if info.isfile() and key == seg["sample_key"] and member.startswith("frames."):
                return decode_frames_member(member, tar.extractfile(info).read())
    raise KitError(f"{path}: no frames for sample {seg['sample_key']}")


def retrieve(checkpoint: str, bank: list[str], frames: list, k: int, device: str) -> list[list[str]]:
    """Top-``k`` bank comments nearest each clip's synthetic feature (the comment tower's space);
    ``checkpoint``: the encoder's run folder (on an object store, copied without its checkpoints)."""
    from lcaffect_ml.devices import resolve_device
    from lcaffect_ml.nearest import nearest_comments_for_media

    with lake.local_tree(checkpoint, "the human evaluation kit", exclude=("checkpoints",)) as local:
        found = nearest_comments_for_media(local, bank, frames, k=k, device=resolve_device(device))
    return [[text for text, _ in hits] for hits in found]


def cut_clip(video: Path, start_ms: int, end_ms: int, out: Path) -> None:
    """The segment as H.264/AAC MP4 (plays in every browser), metadata stripped (blinding); cut to a
    hidden name, renamed when whole."""
    tmp = out.with_name(f".{out.name}.tmp.mp4")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start_ms / 1000:.3f}", "-i", str(video),
           "-t", f"{(end_ms - start_ms) / 1000:.3f}", "-map", "0:v:0", "-map", "0:a:0?", "-map_metadata", "-1",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-pix_fmt", "yuv420p", "-vf",
           "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise KitError(f"{video}: ffmpeg could not cut {start_ms}-{end_ms} ms: {proc.stderr.strip()[-500:]}")
    tmp.replace(out)


def blinded_items(pairs, real_sets, retrieved: dict[tuple, list[str]], opts: KitOptions):
    """(page items, key items): per item the three sets under letters shuffled with the seed, each
    set's comments shuffled too (retrieval order would tell)."""
    rng = random.Random(f"{opts.seed}:order")
    page_items, key_items = [], []
    for n, ((seg, ctrl), real) in enumerate(zip(pairs, real_sets), start=1):
        size = len(real)
        sets = {"real": real, "synthetic": retrieved[_sid(seg)][:size], "control": retrieved[_sid(ctrl)][:size]}
        roles = list(ROLES)
        rng.shuffle(roles)
        shown = {}
        for letter, role in zip(LETTERS, roles):
            comments = list(sets[role])
            rng.shuffle(comments)
            shown[letter] = comments
        page_items.append({"item": n, "clip": f"clips/item-{n:03d}.mp4", "sets": shown})
        key_items.append({"item": n, "video_id": seg["video_id"], "segment_index": seg["segment_index"],
                          "start_ms": seg["start_ms"], "end_ms": seg["end_ms"],
                          "sets": dict(zip(LETTERS, roles)), "control_from": list(_sid(ctrl)), "comments": shown})
    return page_items, key_items


def _sid(seg: Mapping[str, Any]) -> tuple[str, int]:
    return seg["video_id"], int(seg["segment_index"])


def build_kit(root, encoder: Mapping[str, Any], video_paths: Mapping[str, str], opts: KitOptions) -> dict[str, Any]:
    """Write (or reuse) the kit for ``encoder`` (the ``v2lc_encoder`` value); ``video_paths``: each
    video's file (a path or URL) in the lake. Returns the asset's value (kit id, folders, counts)."""
    variant, run = encoder_run(encoder, opts.variant)
    split = read_split(run["output_dir"])
    # A kit is fixed by the encoder, its held-out videos and the options, not by the corpus: a
    # refresh while raters work keeps the page they hold (a new encoder or seed makes a new kit).
    kit_id = digest([run.get("data_version"), variant, sorted(split["test"]),
                     dataclasses.asdict(opts) | {"device": None}])[:16]
    out = kit_dir(root, kit_id)
    reused = (out / KEY_FILE).exists()
    key = (json.loads((out / KEY_FILE).read_text()) if reused
           else write_kit(root, out, kit_id, variant, run, split, video_paths, opts))
    return {"kit_id": kit_id, "kit_dir": str(out), "page": str(out / PAGE_DIR / "index.html"),
            "ratings_dir": str(out / RATINGS_DIR), "items": len(key["items"]), "variant": variant,
            "encoder_version": run.get("data_version"), "bank_size": key["bank_size"],
            "held_out_videos": len(split["test"]), "reused": reused}


def write_kit(root, out, kit_id: str, variant: str, run: Mapping[str, Any], split: Mapping[str, Any],
              video_paths: Mapping[str, str], opts: KitOptions) -> dict[str, Any]:
    """Draw the items, retrieve their sets, and write clips, page and (last) the key; returns the key."""
    candidates = held_out_segments(root, sorted(split["test"]))
    if not candidates:
        raise KitError(f"the held-out videos {sorted(split['test'])} have no segment with comments and frames")
    pairs = draw(candidates, opts)
    bank = comment_bank(root, sorted(split["train"]), opts.bank_limit)
    if not bank:
        raise KitError(f"the training videos {sorted(split['train'])} have no clean comment to retrieve")
    real_sets = [list(dict.fromkeys(seg["comments"]))[: opts.comments_per_set] for seg, _ in pairs]
    segs = {_sid(s): s for pair in pairs for s in pair}
    found = retrieve(run["output_dir"], bank, [segment_frames(root, s) for s in segs.values()], opts.comments_per_set,
                     opts.device)
    page_items, key_items = blinded_items(pairs, real_sets, dict(zip(segs, found)), opts)
    key = {"kit_id": kit_id, "variant": variant, "encoder_version": run.get("data_version"),
           "split_group": split.get("split_group"), "options": dataclasses.asdict(opts), "bank_size": len(bank),
           "bank_digest": digest(bank), "items": key_items}
    with lake.workspace(out, "the human evaluation kit", last=(KEY_FILE,)) as local:
        (local / PAGE_DIR / "clips").mkdir(parents=True, exist_ok=True)
        for (seg, _), item in zip(pairs, page_items):
            if seg["video_id"] not in video_paths:
                raise KitError(f"video {seg['video_id']!r} has no file in the lake (its `videos` result failed)")
            with lake.local_copy(video_paths[seg["video_id"]], "a kit clip") as video:
                cut_clip(video, seg["start_ms"], seg["end_ms"], local / PAGE_DIR / item["clip"])
        lake.atomic_write_bytes(local / PAGE_DIR / "index.html", page.render(kit_id, page_items).encode())
        (local / RATINGS_DIR).mkdir(exist_ok=True)
        lake.atomic_write_bytes(local / KEY_FILE, json.dumps(key, ensure_ascii=False, indent=1).encode())
    return key
