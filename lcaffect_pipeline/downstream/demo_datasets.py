"""Small stand-ins for CH-SIMS v2, MELD and MUStARD, in their official layouts, for the offline demo.

Each utterance's video is a short clip (2 or 3 s, 160x120, 10 fps) of one of the demo world's
scenes (``lcaffect_pipeline.demo_world.SCENES``: the scene's mosaic under moving noise), rendered like
the V2LC demo videos; its audio is a tone of the clip's length, not of the scene (an utterance's
sound is its speaker's, not the shot's). The text carries one cue, the scene's mood (which only
the live comments of the pretraining corpus reveal) another, and the label is a fixed function
of both:

* CH-SIMS v2: the text has polarity ``t`` in {-1, 0, 1} (a Chinese phrase of ``CUES``), the
  scene's mood a valence ``v`` in {-1, 1}; ``label = round_to_0.2(0.4 t + 0.6 v)``, so acc2
  (positive or not) is the mood's valence; ``label_T = 0.8 t``; ``label_A = label_V = v``;
* MELD: the text is neutral or emotional; an emotional utterance has the mood's emotion (funny:
  joy, amazing: surprise, scary: fear, infuriating: anger), a neutral one is neutral. The CSV's
  ``Sentiment`` column follows the emotion, as in MELD;
* MUStARD: the text is literal praise or a literal complaint; the utterance is sarcastic exactly
  when praise is said over a scene of negative mood (incongruity); speakers and shows follow the
  real dataset (FRIENDS, BBT, GOLDENGIRLS, SARCASMOHOLICS) so both protocols run.

**Unseen scenes.** ``SCENE_SPLITS`` divides the 64 scenes, per mood, into 8 training, 2
validation and 6 test scenes: CH-SIMS v2 and MELD utterances of a split show only that split's
scenes, and MUStARD's FRIENDS utterances (the speaker-independent test show) only test scenes.
So no labelled training example shows a test scene, and since a scene's mood is arbitrary,
the text, visual and acoustic features cannot predict it there: only the synthetic live-comment
features, from a V2LC encoder whose comment corpus covered every scene, carry it. This is the
paper's situation in small: a large comment corpus teaches what a small labelled set cannot.

**The unseen-videos world** (``world="unseen"``, ``lcaffect_pipeline.demo_unseen``): the same
datasets over pattern scenes whose mood follows their pattern, each split's scenes from a pool of
its own (``demo_unseen.split_scenes``), none of them in the comment corpus. ``SCENES_FILE`` in the
root records every utterance's scene key, so the disjoint pools can be checked from the files.

``demo_label(task, cue, scene)`` is that function. Deterministic (seeded ``random.Random``,
bit-exact ffmpeg flags); the clips are rendered once (64 scenes x 2 lengths) into a pool and
hard-linked (copied where links fail) to every utterance, so generation takes a few seconds.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import random
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from .. import lake
from .. import demo_unseen
from ..demo_world import MOODS, SCENES, SCENES_FILE, WORLDS, _check_world, scene_filter
from .datasets import MELD_MEDIA_DIRS, MELD_COLUMNS, CHSIMS_COLUMNS

DEMO_DOWNSTREAM_VERSION = "2"
CLIP_SECONDS = (2, 3)  # the two clip lengths rendered per scene
CLIP_SIZE, CLIP_FPS = "160x120", 10
DEFAULT_N = {"train": 96, "valid": 32, "test": 48}
SPLIT_SCENES = {"train": 8, "valid": 2, "test": 6}  # scenes of each mood per split
CLIP_TONES = (330, 440)  # Hz, by clip length: the audio says nothing about the scene


def _scene_splits() -> dict[str, tuple[int, ...]]:
    out: dict[str, list[int]] = {split: [] for split in SPLIT_SCENES}
    rng = random.Random("demo-scene-splits-2")
    for mood in range(len(MOODS)):
        scenes = [i for i, s in enumerate(SCENES) if s.mood == mood]
        rng.shuffle(scenes)
        for split, n in SPLIT_SCENES.items():
            out[split] += scenes[:n]
            scenes = scenes[n:]
    return {split: tuple(sorted(v)) for split, v in out.items()}


SCENE_SPLITS = _scene_splits()
MELD_SENTIMENT = {"neutral": "neutral", "joy": "positive", "surprise": "positive", "fear": "negative", "anger": "negative"}

# The text cues: cue -> phrases carrying it.
CUES: dict[str, dict[Any, tuple[str, ...]]] = {
    "chsims2": {1: ("今天真开心", "这个太棒了", "我很喜欢"), 0: ("就这样吧", "我看看", "还可以"),
                -1: ("真让人难过", "太糟糕了", "我很失望")},
    "meld": {"emotional": ("Oh my god!", "I can't believe this!", "Look at that!"),
             "neutral": ("Okay.", "I see.", "Let me check.")},
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


def _scene(scene):
    """A memorisation scene's index to its ``Scene``; an unseen world's scene is itself."""
    return SCENES[scene] if isinstance(scene, int) else scene


def _key(scene) -> str:
    return f"scene-{scene}" if isinstance(scene, int) else scene.key


def demo_label(task: str, cue: Any, scene) -> Any:
    """The label of a demo utterance from its text cue and its scene (an index into ``SCENES``, or
    a ``demo_unseen.UnseenScene``) (module doc)."""
    mood = MOODS[_scene(scene).mood]
    if task == "chsims2":
        return grid(0.4 * cue + 0.6 * mood.valence)
    if task == "meld":
        return "neutral" if cue == "neutral" else mood.emotion
    if task == "mustard":
        return cue == "praise" and mood.valence < 0
    raise ValueError(f"unknown task {task!r}")


def text_cue(task: str, text: str) -> Any:
    """The cue a demo text carries (the inverse of how the text was written)."""
    found = [cue for cue, phrases in CUES[task].items() if any(p.lower() in text.lower() for p in phrases)]
    if len(found) != 1:
        raise ValueError(f"{text!r} carries {len(found)} {task} cues")
    return found[0]


# ------------------------------------------------------------------------------ entry point


MARKER = ".demo-downstream.json"


def _params(n_per_split, seed: int, with_media: bool, world: str = WORLDS[0]) -> tuple[dict[str, int], dict[str, Any]]:
    if n_per_split is None:
        counts = dict(DEFAULT_N)
    elif isinstance(n_per_split, int):
        counts = {s: n_per_split for s in DEFAULT_N}
    else:
        counts = {s: int(n_per_split[s]) for s in DEFAULT_N}
    _check_world(world)
    params = {"version": DEMO_DOWNSTREAM_VERSION, "n": counts, "seed": seed, "with_media": with_media}
    return counts, {**params, "world": world} if world != WORLDS[0] else params  # the default world adds no key: its version stays the memorisation marker


def upload_demo_downstream(root, **options) -> None:
    """The demo datasets in a lake on an object store (``root``: its URL): rendered in a local
    scratch folder (ffmpeg writes local files) and uploaded, the marker last; nothing to do when
    the marker there names the same parameters."""
    root = lake.as_path(root)
    marker = root / MARKER
    _, params = _params(options.get("n_per_split"), options.get("seed", 0), options.get("with_media", True),
                        options.get("world", WORLDS[0]))
    if marker.exists() and json.loads(marker.read_text()) == params:
        return
    with lake.scratch("the demo datasets (ffmpeg renders them)") as local:
        generate_demo_downstream(local, **options)
        shutil.rmtree(local / ".clip-pool", ignore_errors=True)  # the task folders hold their clips
        lake.upload_tree(local, root, last=[MARKER])


def generate_demo_downstream(root: str | os.PathLike, *, n_per_split: int | Mapping[str, int] | None = None,
                             seed: int = 0, with_media: bool = True, world: str = WORLDS[0]) -> dict[str, Path]:
    """Write ``root/{chsims2,meld,mustard}`` in the official layouts; returns name -> folder.

    ``n_per_split``: utterances per split (an int for every split, or train/valid/test counts);
    MUStARD, which has no split, gets their sum. Idempotent: a marker records the parameters and
    a second call with the same ones writes nothing. ``world``: ``memorisation`` or ``unseen`` (module doc).
    """
    root = Path(root)
    counts, params = _params(n_per_split, seed, with_media, world)
    folders = {name: root / name for name in ("chsims2", "meld", "mustard")}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params and all(f.is_dir() for f in folders.values()):
        return folders
    splits = demo_unseen.split_scenes() if world == "unseen" else SCENE_SPLITS
    pool = _render_pool(root / ".clip-pool", seed, splits, world) if with_media else None
    keys = {"chsims2": _write_chsims2(folders["chsims2"], counts, seed, pool, splits),
            "meld": _write_meld(folders["meld"], counts, seed, pool, splits),
            "mustard": _write_mustard(folders["mustard"], sum(counts.values()), seed, pool, splits)}
    lake.atomic_write_bytes(root / SCENES_FILE, json.dumps(keys).encode())
    lake.atomic_write_bytes(marker, json.dumps(params).encode())
    return folders


def _draw(rng: random.Random, task: str, scenes: tuple,
          cue_weights: Mapping[Any, float] | None = None) -> tuple[Any, int, int, str]:
    """(cue, scene, clip variant, text) of one utterance showing one of ``scenes``."""
    cues = list(CUES[task])
    cue = rng.choices(cues, weights=[cue_weights[c] for c in cues] if cue_weights else None)[0]
    scene, variant = rng.choice(scenes), rng.randrange(len(CLIP_SECONDS))
    filler, phrase = rng.choice(FILLERS[task]), rng.choice(CUES[task][cue])
    if task == "chsims2":
        text = f"{filler}，{phrase}。"
    else:  # "Well, this is great!" ("I" keeps its capital)
        keep = phrase.startswith(("I ", "I'"))
        text = f"{filler}, {phrase if keep else phrase[0].lower() + phrase[1:]}"
    return cue, scene, variant, text


# ------------------------------------------------------------------------------ per dataset


def _write_chsims2(folder: Path, counts: Mapping[str, int], seed: int, pool, splits) -> dict[str, str]:
    """Writes the dataset; returns utterance -> scene key (so do the other writers)."""
    rng = random.Random(f"chsims2-{seed}")
    rows, keys = [], {}
    for split, n in counts.items():
        for i in range(n):
            cue, scene, variant, text = _draw(rng, "chsims2", splits[split])
            video_id, clip_id = f"demo_{split}_{i // 5:03d}", f"{i % 5 + 1:04d}"
            label = demo_label("chsims2", cue, scene)
            valence = float(_scene(scene).valence)
            annotation = "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"
            rows.append([video_id, clip_id, text, label, grid(0.8 * cue), valence, valence, annotation, split])
            _place(pool, scene, variant, folder / "Raw" / video_id / f"{clip_id}.mp4")
            keys[f"{video_id}/{clip_id}"] = _key(scene)
    _write_csv(folder / "label.csv", CHSIMS_COLUMNS, rows)
    return keys


def _write_meld(folder: Path, counts: Mapping[str, int], seed: int, pool, splits) -> dict[str, str]:
    rng = random.Random(f"meld-{seed}")
    keys = {}
    for official, split in (("train", "train"), ("dev", "valid"), ("test", "test")):
        rows = []
        for i in range(counts[split]):
            cue, scene, variant, text = _draw(rng, "meld", splits[split])
            dia, utt = i // 4, i % 4
            start = 60 * dia + 5 * utt
            emotion = demo_label("meld", cue, scene)
            rows.append([i + 1, text, rng.choice(MELD_SPEAKERS), emotion, MELD_SENTIMENT[emotion], dia, utt,
                         1 + dia % 10, 1 + dia % 24, _srt_time(start), _srt_time(start + CLIP_SECONDS[variant])])
            _place(pool, scene, variant, folder / MELD_MEDIA_DIRS[official] / f"dia{dia}_utt{utt}.mp4")
            keys[f"{official}/dia{dia}_utt{utt}"] = _key(scene)
        _write_csv(folder / f"{official}_sent_emo.csv", MELD_COLUMNS, rows)
    return keys


def _write_mustard(folder: Path, n: int, seed: int, pool, splits) -> dict[str, str]:
    rng = random.Random(f"mustard-{seed}")
    data, keys = {}, {}
    for i in range(n):
        # the show first: FRIENDS (the speaker-independent test show) shows only test scenes.
        # Praise twice as often as complaints: a third of the utterances are sarcastic.
        show, prefix, speakers = rng.choices(MUSTARD_SHOWS, weights=(5, 4, 1, 1))[0]
        scenes = splits["test"] if show == "FRIENDS" else splits["train"] + splits["valid"]
        cue, scene, variant, text = _draw(rng, "mustard", scenes, {"praise": 2.0, "complaint": 1.0})
        speaker, other = rng.sample(speakers, 2)
        uid = f"{prefix}_{1000 + i}"
        data[uid] = {"utterance": text, "speaker": speaker,
                     "context": [f"{other}: did you see that?", "Yes, just now."],
                     "context_speakers": [other, speaker], "show": show,
                     "sarcasm": demo_label("mustard", cue, scene)}
        _place(pool, scene, variant, folder / "utterances_final" / f"{uid}.mp4")
        keys[uid] = _key(scene)
    lake.atomic_write_bytes(folder / "sarcasm_data.json", json.dumps(data, indent=2, ensure_ascii=False).encode())
    return keys


def _srt_time(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d},000"


def _write_csv(path: Path, columns, rows) -> None:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)  # "\r\n" line ends, as the official files have
    writer.writerow(columns)
    writer.writerows(rows)
    lake.atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


# ------------------------------------------------------------------------------ media


def _render_pool(folder: Path, seed: int, splits: Mapping[str, tuple], world: str) -> dict[tuple[Any, int], Path]:
    """Every scene of every split rendered once per clip length (memorisation: all 64 scenes)."""
    scenes = range(len(SCENES)) if world == WORLDS[0] else [s for split in splits.values() for s in split]
    pool, pending = {}, []
    for n, c in enumerate(scenes):
        for v, seconds in enumerate(CLIP_SECONDS):
            name = f"scene{c:02d}" if isinstance(c, int) else c.key
            path = folder / f"{name}-{seconds}s-seed{seed}-v{DEMO_DOWNSTREAM_VERSION}.mp4"
            if not path.is_file():
                pending.append((path, c, v, 1000 * seed + 10 * n + v))
            pool[(c, v)] = path
    if not pending:
        return pool
    folder.mkdir(parents=True, exist_ok=True)
    # The three tasks' utterance steps generate the datasets at once: one process renders the pool,
    # the others wait for it and then find the clips, instead of each rendering them all.
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pending = [job for job in pending if not job[0].is_file()]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as workers:  # ffmpeg does the work
            list(workers.map(lambda job: _render_clip(job[0], job[1], job[2], noise_seed=job[3]), pending))
    return pool


def _render_clip(path: Path, scene, variant: int, noise_seed: int) -> None:
    """One clip: the scene's mosaic (or an unseen world's pattern) under moving noise (as
    ``demo.make_demo_video``, shorter) with the tone of its length, written to a temporary name
    and renamed."""
    seconds = CLIP_SECONDS[variant]
    if not isinstance(scene, int):
        demo_unseen.render(path, [scene], seconds, tone_hz=CLIP_TONES[variant], size=CLIP_SIZE, fps=CLIP_FPS,
                           seed=noise_seed)
        return
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.mp4")
    graph = (scene_filter(scene, seconds, "s", size=CLIP_SIZE, fps=CLIP_FPS)
             + f";[s]noise=alls=30:allf=t+u:all_seed={noise_seed}[v]")
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"sine=frequency={CLIP_TONES[variant]}:sample_rate=16000:duration={seconds}",
            "-filter_complex", graph, "-map", "[v]", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast",
            "-crf", "28", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "48k", "-fflags", "+bitexact",
            "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-shortest", str(tmp)]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(args, check=True, capture_output=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _place(pool: dict[tuple[Any, int], Path] | None, scene, variant: int, dest: Path) -> None:
    """Hard-link the pooled clip to ``dest`` (a copy across file systems), replacing atomically."""
    if pool is None:
        return
    src = pool[(scene, variant)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and os.path.samefile(src, dest):
        return
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
