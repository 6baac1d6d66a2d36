"""Small stand-ins for CH-SIMS v2, MELD and MUStARD, in their official layouts, for the offline demo.

Each utterance's video is a short clip (2 or 3 s, 160x120, 10 fps) of one of the demo colour
classes (``lcaffect_pipeline.demo.DEMO_CLASSES``: the colour under moving noise with the class's
tone), rendered like the V2LC demo videos, so the V2LC encoder has learned which live comments
that colour draws. The text carries a second, weaker cue. The label is a fixed function of both,
so a model that also sees the synthetic live-comment features can beat a text-only model:

* every colour has a valence ``COLOUR_VALENCE`` (five warm/bright colours positive, five
  cold/dark ones negative);
* CH-SIMS v2: the text cue has polarity ``t`` in {-1, 0, 1} (a Chinese phrase of ``CUES``);
  ``label = round_to_0.2(0.4 * t + 0.6 * valence)``; ``label_T = 0.8 t``; ``label_A = label_V =
  round_to_0.2(valence)``; ``annotation`` Positive/Neutral/Negative by the sign of ``label``;
* MELD: the text cue is a sentiment (the CSV's ``Sentiment`` column); the emotion is taken from
  that sentiment's group by the colour: ``MELD_GROUPS[sentiment][colour_index % len(group)]``
  (neutral -> neutral; positive -> joy/surprise; negative -> anger/sadness/disgust/fear);
* MUStARD: the text is literal praise or a literal complaint; the utterance is sarcastic exactly
  when praise is said over a negative-valence colour (incongruity); speakers and shows follow the
  real dataset (FRIENDS, BBT, GOLDENGIRLS, SARCASMOHOLICS) so both protocols run.

``demo_label(task, cue, colour_index)`` is that function. Deterministic (seeded ``random.Random``,
bit-exact ffmpeg flags); the clips are rendered once (10 colours x 2 lengths) into a pool and
hard-linked (copied where links fail) to every utterance, so generation takes a few seconds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Mapping

from .. import lake
from ..demo import DEMO_CLASSES
from .datasets import MELD_MEDIA_DIRS, MELD_COLUMNS, CHSIMS_COLUMNS

DEMO_DOWNSTREAM_VERSION = "1"
CLIP_SECONDS = (2, 3)  # the two clip lengths rendered per colour
CLIP_SIZE, CLIP_FPS = "160x120", 10
DEFAULT_N = {"train": 72, "valid": 24, "test": 24}

COLOUR_VALENCE = {"red": -0.6, "orange": 0.6, "yellow": 1.0, "green": 0.2, "blue": -0.2,
                  "purple": -0.6, "pink": 0.6, "white": 0.2, "black": -1.0, "cyan": -0.2}
MELD_GROUPS = {"neutral": ("neutral",), "positive": ("joy", "surprise"),
               "negative": ("anger", "sadness", "disgust", "fear")}

# The text cues: cue -> phrases carrying it.
CUES: dict[str, dict[Any, tuple[str, ...]]] = {
    "chsims2": {1: ("今天真开心", "这个太棒了", "我很喜欢"), 0: ("就这样吧", "我看看", "还可以"),
                -1: ("真让人难过", "太糟糕了", "我很失望")},
    "meld": {"positive": ("This is great!", "I love it.", "Oh wow, really?"),
             "neutral": ("Okay.", "I see.", "Let me check."),
             "negative": ("This is terrible.", "I can't stand this.", "Go away.")},
    "mustard": {"praise": ("Oh, that's just wonderful.", "What a brilliant idea.", "I'm so thrilled to be here."),
                "complaint": ("This is a disaster.", "I really hate this.", "That was awful.")},
}
FILLERS = {"chsims2": ("说实话", "你知道吗", "然后呢", "我们刚才说到"), "meld": ("So", "Well", "Listen", "Hey"),
           "mustard": ("Well", "You know", "Honestly", "Sure")}
MUSTARD_SHOWS = (("FRIENDS", "2", ("CHANDLER", "ROSS", "JOEY", "PHOEBE", "RACHEL", "MONICA")),
                 ("BBT", "1", ("SHELDON", "HOWARD", "PENNY", "LEONARD", "RAJ")),
                 ("GOLDENGIRLS", "2", ("DOROTHY", "ROSE")),
                 ("SARCASMOHOLICS", "2", ("MODERATOR", "MEMBER-GIRL")))
MELD_SPEAKERS = ("Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross")


def grid(x: float) -> float:
    """Round to the CH-SIMS label grid {-1, -0.8, ..., 1}."""
    return max(-1.0, min(1.0, round(round(x / 0.2) * 0.2, 1))) + 0.0  # + 0.0: no -0.0


def demo_label(task: str, cue: Any, colour: int) -> Any:
    """The label of a demo utterance from its text cue and its colour class index (module doc)."""
    valence = COLOUR_VALENCE[DEMO_CLASSES[colour].name]
    if task == "chsims2":
        return grid(0.4 * cue + 0.6 * valence)
    if task == "meld":
        group = MELD_GROUPS[cue]
        return group[colour % len(group)]
    if task == "mustard":
        return cue == "praise" and valence < 0
    raise ValueError(f"unknown task {task!r}")


def text_cue(task: str, text: str) -> Any:
    """The cue a demo text carries (the inverse of how the text was written)."""
    found = [cue for cue, phrases in CUES[task].items() if any(p.lower() in text.lower() for p in phrases)]
    if len(found) != 1:
        raise ValueError(f"{text!r} carries {len(found)} {task} cues")
    return found[0]


# ------------------------------------------------------------------------------ entry point


def generate_demo_downstream(root: str | os.PathLike, *, n_per_split: int | Mapping[str, int] | None = None,
                             seed: int = 0, with_media: bool = True) -> dict[str, Path]:
    """Write ``root/{chsims2,meld,mustard}`` in the official layouts; returns name -> folder.

    ``n_per_split``: utterances per split (an int for every split, or train/valid/test counts);
    MUStARD, which has no split, gets their sum. Idempotent: a marker records the parameters and
    a second call with the same ones writes nothing.
    """
    root = Path(root)
    if n_per_split is None:
        counts = dict(DEFAULT_N)
    elif isinstance(n_per_split, int):
        counts = {s: n_per_split for s in DEFAULT_N}
    else:
        counts = {s: int(n_per_split[s]) for s in DEFAULT_N}
    folders = {name: root / name for name in ("chsims2", "meld", "mustard")}
    marker = root / ".demo-downstream.json"
    params = {"version": DEMO_DOWNSTREAM_VERSION, "n": counts, "seed": seed, "with_media": with_media}
    if marker.is_file() and json.loads(marker.read_text()) == params and all(f.is_dir() for f in folders.values()):
        return folders
    pool = _render_pool(root / ".clip-pool", seed) if with_media else None
    _write_chsims2(folders["chsims2"], counts, seed, pool)
    _write_meld(folders["meld"], counts, seed, pool)
    _write_mustard(folders["mustard"], sum(counts.values()), seed, pool)
    lake.atomic_write_bytes(marker, json.dumps(params).encode())
    return folders


def _draw(rng: random.Random, task: str, cue_weights: Mapping[Any, float] | None = None) -> tuple[Any, int, int, str]:
    """(cue, colour, clip variant, text) of one utterance."""
    cues = list(CUES[task])
    cue = rng.choices(cues, weights=[cue_weights[c] for c in cues] if cue_weights else None)[0]
    colour, variant = rng.randrange(len(DEMO_CLASSES)), rng.randrange(len(CLIP_SECONDS))
    filler, phrase = rng.choice(FILLERS[task]), rng.choice(CUES[task][cue])
    if task == "chsims2":
        text = f"{filler}，{phrase}。"
    else:  # "Well, this is great!" ("I" keeps its capital)
        keep = phrase.startswith(("I ", "I'"))
        text = f"{filler}, {phrase if keep else phrase[0].lower() + phrase[1:]}"
    return cue, colour, variant, text


# ------------------------------------------------------------------------------ per dataset


def _write_chsims2(folder: Path, counts: Mapping[str, int], seed: int, pool) -> None:
    rng = random.Random(f"chsims2-{seed}")
    rows = []
    for split, n in counts.items():
        for i in range(n):
            cue, colour, variant, text = _draw(rng, "chsims2")
            video_id, clip_id = f"demo_{split}_{i // 5:03d}", f"{i % 5 + 1:04d}"
            label = demo_label("chsims2", cue, colour)
            valence = grid(COLOUR_VALENCE[DEMO_CLASSES[colour].name])
            annotation = "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"
            rows.append([video_id, clip_id, text, label, grid(0.8 * cue), valence, valence, annotation, split])
            _place(pool, colour, variant, folder / "Raw" / video_id / f"{clip_id}.mp4")
    _write_csv(folder / "label.csv", CHSIMS_COLUMNS, rows)


def _write_meld(folder: Path, counts: Mapping[str, int], seed: int, pool) -> None:
    rng = random.Random(f"meld-{seed}")
    for official, split in (("train", "train"), ("dev", "valid"), ("test", "test")):
        rows = []
        for i in range(counts[split]):
            cue, colour, variant, text = _draw(rng, "meld")
            dia, utt = i // 4, i % 4
            start = 60 * dia + 5 * utt
            rows.append([i + 1, text, rng.choice(MELD_SPEAKERS), demo_label("meld", cue, colour), cue, dia, utt,
                         1 + dia % 10, 1 + dia % 24, _srt_time(start), _srt_time(start + CLIP_SECONDS[variant])])
            _place(pool, colour, variant, folder / MELD_MEDIA_DIRS[official] / f"dia{dia}_utt{utt}.mp4")
        _write_csv(folder / f"{official}_sent_emo.csv", MELD_COLUMNS, rows)


def _write_mustard(folder: Path, n: int, seed: int, pool) -> None:
    rng = random.Random(f"mustard-{seed}")
    data = {}
    for i in range(n):
        # praise twice as often as complaints: a third of the utterances are sarcastic
        cue, colour, variant, text = _draw(rng, "mustard", {"praise": 2.0, "complaint": 1.0})
        show, prefix, speakers = rng.choices(MUSTARD_SHOWS, weights=(5, 4, 1, 1))[0]
        speaker, other = rng.sample(speakers, 2)
        uid = f"{prefix}_{1000 + i}"
        data[uid] = {"utterance": text, "speaker": speaker,
                     "context": [f"{other}: did you see that?", "Yes, just now."],
                     "context_speakers": [other, speaker], "show": show,
                     "sarcasm": demo_label("mustard", cue, colour)}
        _place(pool, colour, variant, folder / "utterances_final" / f"{uid}.mp4")
    lake.atomic_write_bytes(folder / "sarcasm_data.json", json.dumps(data, indent=2, ensure_ascii=False).encode())


def _srt_time(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d},000"


def _write_csv(path: Path, columns, rows) -> None:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)  # "\r\n" line ends, as the official files have
    writer.writerow(columns)
    writer.writerows(rows)
    lake.atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


# ------------------------------------------------------------------------------ media


def _render_pool(folder: Path, seed: int) -> dict[tuple[int, int], Path]:
    pool = {}
    for c, cls in enumerate(DEMO_CLASSES):
        for v, seconds in enumerate(CLIP_SECONDS):
            path = folder / f"{cls.name}-{seconds}s-seed{seed}-v{DEMO_DOWNSTREAM_VERSION}.mp4"
            if not path.is_file():
                _render_clip(path, c, seconds, noise_seed=1000 * seed + 10 * c + v)
            pool[(c, v)] = path
    return pool


def _render_clip(path: Path, colour: int, seconds: int, noise_seed: int) -> None:
    """One clip: the class colour under moving noise with its tone (as ``demo.make_demo_video``,
    shorter), written to a temporary name and renamed."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    cls = DEMO_CLASSES[colour]
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.mp4")
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"color=c={cls.colour}:s={CLIP_SIZE}:r={CLIP_FPS}:d={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency={cls.tone_hz}:sample_rate=16000:duration={seconds}",
            "-vf", f"noise=alls=30:allf=t+u:all_seed={noise_seed}", "-c:v", "libx264", "-preset", "ultrafast",
            "-crf", "28", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "48k", "-fflags", "+bitexact",
            "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-shortest", str(tmp)]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(args, check=True, capture_output=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _place(pool: dict[tuple[int, int], Path] | None, colour: int, variant: int, dest: Path) -> None:
    """Hard-link the pooled clip to ``dest`` (a copy across file systems), replacing atomically."""
    if pool is None:
        return
    src = pool[(colour, variant)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and os.path.samefile(src, dest):
        return
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
