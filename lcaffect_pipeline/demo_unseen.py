"""The unseen-videos demo world: the mood follows what a frame shows, and no labelled scene had a comment.

The memorisation world (``lcaffect_pipeline.demo_world``) gives every scene an arbitrary mood, so V2LC
can only pass a mood on to a scene it saw with its comments. Here a scene's mood follows from a
visual factor that varies across scenes, so an encoder that learned it from the comment corpus
can read it on scenes it never saw:

* every scene is a large **pattern** (``PATTERNS``: horizontal stripes, vertical stripes, a
  checkerboard, rings) in two colours of ``PALETTE`` with a random period, phase and drift, under
  moving noise; its mood is its pattern's (``MOODS[pattern]``), except for ``MOOD_NOISE`` of the
  scenes, whose mood is drawn at random (viewers do not all agree);
* a segment's comments are reactions in its mood's words and a few naming what is on screen
  (the pattern, and once with its colours: ``describe``): the pattern and colours are what V2LC can learn to see,
  the reactions what it can learn that a pattern means;
* scenes come from three disjoint **pools** (``POOLS``), each an endless seeded sequence: the
  comment corpus shows only ``corpus`` scenes, one scene per segment (so V2LC's held-out videos
  show scenes absent from its training videos too), and the downstream stand-ins' labelled
  training (and validation) utterances and their test utterances show scenes of their own pools.

A random projection of the frames (the stand-in visual features) is dominated by the colours and
the phase; the pattern class under them is what a trained video tower learns and about a hundred
labelled examples do not teach (bench/README.md, "Demo world: transfer to unseen videos": the probes).
Deterministic: the same key always renders the same pixels and comments.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lcaffect_ml.atomic import atomic_file

from .demo_world import MOODS, MOOD_COMMENTS

WORLD = "unseen"
POOLS = ("corpus", "train", "valid", "test")  # valid: the downstream model selection's scenes
SPLIT_SCENES = {"train": 48, "valid": 16, "test": 48}  # downstream scenes per split (clips rendered once each)
PATTERNS = ("横条纹", "竖条纹", "格子", "圆圈")  # what the comments call them; index = the mood it reads as
PALETTE = (("红", (220, 40, 40)), ("橙", (240, 140, 20)), ("黄", (235, 220, 40)), ("绿", (40, 170, 60)),
           ("青", (40, 200, 200)), ("蓝", (40, 70, 220)), ("紫", (140, 50, 200)), ("粉", (245, 150, 190)),
           ("黑", (20, 20, 20)), ("白", (240, 240, 240)), ("灰", (128, 128, 128)), ("棕", (120, 70, 30)))
MOOD_NOISE = 0.15  # share of scenes whose mood is drawn at random instead of their pattern's
NOISE = 30  # uniform pixel noise amplitude per frame
# The clips read 4 frames of each 8-s segment (configs/demo_unseen.yaml), so the corpus videos are
# rendered at 2 fps: 10 fps drew five times the frames, and drawing them (numpy) was most of the
# job's first 2.5 minutes. The downstream clips keep their 10 fps (``render``'s default).
CORPUS_FPS = 2
RENDER_VERSION = "2"  # bump when the corpus videos' pixels change: it names their files and the world's marker


@dataclass(frozen=True)
class UnseenScene:
    pool: str
    index: int
    pattern: int
    mood: int
    colours: tuple[int, int]  # indices into PALETTE, the first the stripes'
    period: float  # in frame widths
    phase: float  # in periods
    drift: float  # periods per second

    @property
    def key(self) -> str:
        return f"{self.pool}-{self.index}"

    @property
    def valence(self) -> int:
        return MOODS[self.mood].valence


def scene(pool: str, index: int) -> UnseenScene:
    """Scene ``index`` of ``pool`` (deterministic; pools never share a scene)."""
    if pool not in POOLS:
        raise ValueError(f"unknown scene pool {pool!r}; pools: {POOLS}")
    rng = random.Random(f"unseen-{pool}-{index}")
    pattern = rng.randrange(len(PATTERNS))
    mood = rng.randrange(len(MOODS)) if rng.random() < MOOD_NOISE else pattern
    colours = tuple(rng.sample(range(len(PALETTE)), 2))
    return UnseenScene(pool, index, pattern, mood, colours, rng.uniform(0.25, 0.5), rng.random(), rng.uniform(-0.2, 0.2))


def frames(s: UnseenScene, n: int, *, width: int, height: int, fps: float, seed: int) -> np.ndarray:
    """``n`` uint8 RGB frames (n, height, width, 3) of scene ``s`` at ``fps``, with seeded noise."""
    noise = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / width  # in frame widths: square cells
    fg, bg = (np.array(PALETTE[c][1], dtype=np.float32) for c in s.colours)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        phase = s.phase + s.drift * t / fps
        stripe = lambda u: ((u / s.period + phase) % 1) < 0.5  # noqa: E731
        on = (stripe(y), stripe(x), stripe(x) ^ stripe(y),
              stripe(2 * np.hypot(x - 0.5, y - height / width / 2)))[s.pattern]
        img = np.where(on[..., None], fg, bg) + noise.uniform(-NOISE, NOISE, (height, width, 3))
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def describe(s: UnseenScene) -> tuple[str, ...]:
    """What viewers say is on screen: the pattern (twice: it is what matters), once with its colours."""
    a, b = (PALETTE[c][0] for c in sorted(s.colours))
    name = PATTERNS[s.pattern]
    return (f"{a}{b}{name}", f"好多{name}", f"满屏的{name}")


def scene_comments(rng: random.Random, s: UnseenScene) -> list[str]:
    """One segment's comments: reactions in the scene's mood, then what is on screen."""
    return [rng.choice(MOODS[s.mood].words) for _ in range(MOOD_COMMENTS)] + list(describe(s))


def corpus_scenes(video_index: int, segments: int) -> list[UnseenScene]:
    """The scenes of a corpus video's segments: a fresh corpus scene each."""
    return [scene("corpus", video_index * segments + k) for k in range(segments)]


def render_corpus_video(path: Path, video_index: int, segments: int, seconds: float, seed: int) -> Path:
    """Corpus video ``video_index``: its segments' scenes (``corpus_scenes``), ``seconds`` each."""
    return render(path, corpus_scenes(video_index, segments), seconds, tone_hz=440, fps=CORPUS_FPS,
                  seed=1000 * seed + video_index)


def render(path: Path, scenes: list[UnseenScene], seconds: float, *, tone_hz: int, size: str = "160x120",
           fps: int = 10, seed: int = 0) -> Path:
    """Encode ``scenes`` (``seconds`` each) with a sine tone into an mp4 (frames piped to ffmpeg)."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    width, height = (int(v) for v in size.split("x"))
    n = int(round(seconds * fps))
    video = np.concatenate([frames(s, n, width=width, height=height, fps=fps, seed=seed * 1_000_003 + i)
                            for i, s in enumerate(scenes)])
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size,
            "-r", str(fps), "-i", "-", "-f", "lavfi", "-i",
            f"sine=frequency={tone_hz}:sample_rate=16000:duration={seconds * len(scenes)}",
            "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "48k", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-shortest"]
    # a temporary name of the writer's own: the three downstream tasks' steps may render one clip pool at once
    with atomic_file(path) as tmp:
        subprocess.run([*args, str(tmp)], input=video.tobytes(), check=True, capture_output=True)
    return path


def split_scenes() -> dict[str, tuple[UnseenScene, ...]]:
    """The downstream stand-ins' scenes of each split, from the pool of that name."""
    return {split: tuple(scene(split, k) for k in range(n)) for split, n in SPLIT_SCENES.items()}
