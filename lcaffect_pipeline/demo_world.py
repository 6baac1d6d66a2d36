"""The built-in offline demo world: comment files in the real formats, and videos made by ffmpeg.

Memorisation transfer (bench/README.md, "Demo world: memorisation transfer"). Every 8-second segment of a
demo video shows one of 64 ``SCENES`` (a mosaic of 4 x 4 flat colour blocks, a stand-in for what a
shot shows, under moving noise, with a tone of its own in the audio), and every scene has a ``mood``
(funny, amazing, scary or infuriating) that viewers react to. The mood is an arbitrary property of
the scene, like a meme's or a jump scare's: it follows from nothing a frame or the audio shows (the
block colours are random per scene, the tone is its own, the moods are shuffled over the scenes).

The live comments of a segment are mostly *reactions* in the mood's words ("哈哈哈哈哈",
"吓死我了", "卧槽", "气死了"), plus a few that name what is on screen ("满屏的蓝"), so

* the comment corpus, which covers every scene, teaches V2LC each scene's mood: a video's
  embedding is pulled towards the reactions its comments share with every other scene of that
  mood, so the mood becomes readable from the synthetic live-comment feature;
* the downstream stand-ins (``lcaffect_pipeline.downstream.demo_datasets``) label utterances by their
  text and the mood of their scene, and their test (and validation) utterances show scenes
  their training utterances never show. From about a hundred labelled examples the generic
  visual and acoustic features can only learn the moods of the training scenes; for a new
  scene only the live-comment path, which learned all 64 from the corpus, knows the mood.

Laughter, "2333", traditional characters and duplicates are in the comments so that cleaning
has real work (laughter is signal here: it is the funny mood's reaction).

Deterministic: the same arguments always write the same bytes (no wall-clock, fixed seeds), and
video ``i`` does not depend on how many videos are generated.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import yaml

from . import lake

DEMO_VERSION = "2"
SEGMENT_S = 8
SEGMENTS_PER_VIDEO = 5
BASE_TIME = 1_700_000_000  # posted_at of the first demo comment (fixed: output must not depend on today)
MOOD_COMMENTS, SCENE_COMMENTS = 5, 3  # comments per segment: reactions, and naming the scene


@dataclass(frozen=True)
class Mood:
    name: str
    valence: int  # +1 or -1
    emotion: str  # the MELD emotion this mood reads as
    words: tuple[str, ...]  # viewers' reactions


MOODS = (
    Mood("funny", 1, "joy", ("哈哈哈哈哈", "笑死我了", "2333333", "草", "绷不住了", "笑出声", "hhhhh", "乐死了")),
    Mood("amazing", 1, "surprise", ("卧槽", "太强了", "牛逼", "震惊", "还能这样", "惊了", "神操作", "高手")),
    Mood("scary", -1, "fear", ("好可怕", "吓死我了", "救命", "不敢看", "后背发凉", "毛骨悚然", "前方高能", "瑟瑟发抖")),
    Mood("infuriating", -1, "anger", ("气死了", "太过分了", "无语", "真离谱", "血压上来了", "垃圾", "恶心", "退钱")),
)


@dataclass(frozen=True)
class Scene:
    name: str  # what the comments call it
    blocks: tuple[str, ...]  # MOSAIC x MOSAIC ffmpeg colours, row by row
    tone_hz: int  # audio tone
    mood: int  # index into MOODS

    @property
    def valence(self) -> int:
        return MOODS[self.mood].valence


# A scene is drawn as a mosaic of flat colour blocks (each one patch of the tiny TimeSformer, so
# a scene is a many-dimensional pattern it separates quickly); the name stands for what it shows.
MOSAIC = 4
SCENE_NAMES = tuple("猫狗鱼鸟山海花树车船雨雪星月云风灯门桥塔书琴茶酒糖面球剑马龙虎熊"
                    "兔羊牛猪鸡鸭鹅蛇虫蝶草竹松梅兰菊石沙河湖城村楼窗钟伞鞋帽笔纸刀弓")
SCENE_TEMPLATES = ("好多{n}", "满屏的{n}", "{n}{n}{n}", "这个{n}绝了", "{n}来了", "全是{n}",
                   "{n}警告", "{n}党集合", "我爱{n}", "{n}yyds", "又见{n}", "{n}出现了")


def _scenes() -> tuple[Scene, ...]:
    """Random block colours per scene; moods shuffled with a fixed seed, 16 scenes each."""
    moods = [i % len(MOODS) for i in range(len(SCENE_NAMES))]
    random.Random("demo-moods-2").shuffle(moods)
    out = []
    for i, name in enumerate(SCENE_NAMES):
        rng = random.Random(f"demo-scene-{i}")
        blocks = tuple(f"0x{rng.randrange(1 << 24):06X}" for _ in range(MOSAIC * MOSAIC))
        out.append(Scene(name, blocks, 200 + 11 * i, moods[i]))
    return tuple(out)


def scene_filter(scene: int, seconds: float, label: str, *, size: str = "160x120", fps: int = 10) -> str:
    """An ffmpeg filtergraph (sources only, no input file) drawing ``scene`` into ``[label]``."""
    width, height = (int(v) for v in size.split("x"))
    w, h = width // MOSAIC, height // MOSAIC
    n = MOSAIC * MOSAIC
    parts = [f"color=c={c}:s={w}x{h}:r={fps}:d={seconds}[{label}b{k}]" for k, c in enumerate(SCENES[scene].blocks)]
    layout = "|".join(f"{(k % MOSAIC) * w}_{(k // MOSAIC) * h}" for k in range(n))
    blocks = "".join(f"[{label}b{k}]" for k in range(n))
    return ";".join(parts) + f";{blocks}xstack=inputs={n}:layout={layout},format=yuv420p[{label}]"


SCENES = _scenes()
TRADITIONAL = {"猫": "貓", "鱼": "魚", "鸟": "鳥", "车": "車", "云": "雲", "风": "風", "灯": "燈", "门": "門", "桥": "橋",
               "书": "書", "马": "馬", "龙": "龍", "猪": "豬", "鸡": "雞", "鸭": "鴨", "鹅": "鵝", "虫": "蟲", "兰": "蘭",
               "楼": "樓", "钟": "鐘", "伞": "傘", "笔": "筆", "纸": "紙", "爱": "愛", "满": "滿", "这": "這", "来": "來",
               "党": "黨", "见": "見", "现": "現"}

# (platform, writer) by video index: every format the corpus reads appears in the demo.
FORMATS = ("bilibili_xml", "bilibili_protobuf", "niconico", "youtube", "acfun")
PLATFORM = {"bilibili_xml": "bilibili", "bilibili_protobuf": "bilibili", "niconico": "niconico", "youtube": "youtube", "acfun": "acfun"}


def segment_scenes(video_index: int, seed: int = 0, segments: int = SEGMENTS_PER_VIDEO) -> list[int]:
    """The scene of each segment of a demo video (deterministic)."""
    rng = random.Random(f"scenes-{seed}-{video_index}")
    return [rng.randrange(len(SCENES)) for _ in range(segments)]


def scene_comments(rng: random.Random, scene: int) -> list[str]:
    """One segment's comments: reactions in the scene's mood, then a few naming the scene."""
    s = SCENES[scene]
    texts = [rng.choice(MOODS[s.mood].words) for _ in range(MOOD_COMMENTS)]
    texts += [rng.choice(SCENE_TEMPLATES).format(n=s.name) for _ in range(SCENE_COMMENTS)]
    if rng.random() < 0.5:  # traditional characters: OpenCC turns them back
        texts.append("".join(TRADITIONAL.get(ch, ch) for ch in rng.choice(SCENE_TEMPLATES).format(n=s.name)))
    return texts


WORLDS = ("memorisation", "unseen")  # lcaffect_pipeline.demo_world (this module), lcaffect_pipeline.demo_unseen


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise ValueError(f"unknown demo world {world!r}; worlds: {WORLDS}")


def video_scene_keys(video_index: int, seed: int, segments: int, world: str) -> list[str]:
    """The scene of each segment of a demo video, as the key the manifest (``SCENES_FILE``) records."""
    if world == "unseen":
        from .demo_unseen import corpus_scenes

        return [s.key for s in corpus_scenes(video_index, segments)]
    return [f"scene-{c}" for c in segment_scenes(video_index, seed, segments)]


def demo_comments(video_index: int, seed: int = 0, segments: int = SEGMENTS_PER_VIDEO,
                  world: str = WORLDS[0]) -> list[dict]:
    """The comments of one demo video: ``offset_ms``, ``text``, ``author``, ``id``, ``posted``."""
    _check_world(world)
    rng = random.Random(f"comments-{seed}-{video_index}")
    if world == "unseen":
        from . import demo_unseen

        scenes, say = demo_unseen.corpus_scenes(video_index, segments), demo_unseen.scene_comments
    else:
        scenes, say = segment_scenes(video_index, seed, segments), scene_comments
    out = []
    for seg, scene in enumerate(scenes):
        for text in say(rng, scene):
            offset = seg * SEGMENT_S * 1000 + rng.randrange(200, SEGMENT_S * 1000 - 200)
            out.append({"offset_ms": offset, "text": text, "author": f"user{rng.randrange(40)}"})
    out.sort(key=lambda c: c["offset_ms"])
    for i, c in enumerate(out):
        c["id"] = 10_000_000 * (video_index + 1) + i
        c["posted"] = BASE_TIME + video_index * 86_400 + i * 37
    return out


# ---------------------------------------------------------------- writers in the real formats


def _write_bilibili_xml(path: Path, cid: int, comments: list[dict]) -> Path:
    parts = ['<?xml version="1.0" encoding="UTF-8"?><i><chatserver>chat.bilibili.com</chatserver>', f"<chatid>{cid}</chatid><maxlimit>3000</maxlimit>"]
    for c in comments:
        p = f"{c['offset_ms'] / 1000:.5f},1,25,16777215,{c['posted']},0,{_crc_like(c['author'])},{c['id']},10"
        parts.append(f'<d p="{p}">{escape(c["text"])}</d>')
    parts.append("</i>")
    out = path / f"{cid}.xml"
    lake.atomic_write_bytes(out, "".join(parts).encode("utf-8"))
    return out


def _write_bilibili_protobuf(path: Path, cid: int, comments: list[dict]) -> Path:
    from .formats.bili_proto import DmSegMobileReply

    reply = DmSegMobileReply()
    for c in comments:
        e = reply.elems.add()
        e.id, e.progress, e.mode, e.fontsize, e.color = c["id"], c["offset_ms"], 1, 25, 16777215
        e.midHash, e.content, e.ctime, e.weight, e.idStr = _crc_like(c["author"]), c["text"], c["posted"], 10, str(c["id"])
    folder = path / str(cid)
    lake.atomic_write_bytes(folder / f"{cid}-0.pb", reply.SerializeToString())
    return folder


def _write_niconico(path: Path, vid: str, comments: list[dict]) -> Path:
    rows = [
        {
            "id": f"nico-{c['id']}",
            "no": i + 1,
            "vposMs": c["offset_ms"],
            "body": c["text"],
            "commands": [],
            "userId": c["author"],
            "isPremium": False,
            "score": 0,
            "postedAt": f"{_iso(c['posted'])}",
            "nicoruCount": 0,
            "source": "leaf",
        }
        for i, c in enumerate(comments)
    ]
    out = path / f"{vid}.comments.json"
    lake.atomic_write_bytes(out, json.dumps(rows, ensure_ascii=False).encode("utf-8"))
    return out


def _write_youtube(path: Path, vid: str, comments: list[dict]) -> Path:
    lines = []
    for c in comments:
        item = {
            "liveChatTextMessageRenderer": {
                "message": {"runs": [{"text": c["text"]}]},
                "authorName": {"simpleText": c["author"]},
                "id": f"yt-{c['id']}",
                "timestampUsec": str(c["posted"] * 1_000_000),
                "authorExternalChannelId": f"UC{c['author']}",
            }
        }
        action = {"replayChatItemAction": {"actions": [{"addChatItemAction": {"item": item, "clientId": f"c{c['id']}"}}], "videoOffsetTimeMsec": str(c["offset_ms"])}}
        lines.append(json.dumps(action, ensure_ascii=False))
    out = path / f"{vid}.live_chat.json"
    lake.atomic_write_bytes(out, ("\n".join(lines) + "\n").encode("utf-8"))
    return out


def _write_acfun(path: Path, vid: str, comments: list[dict]) -> Path:
    rows = [{"c": f"{c['offset_ms'] / 1000:.3f},16777215,1,25,{c['author']},{c['posted']}.0", "m": c["text"]} for c in comments]
    out = path / f"{vid}.json"
    lake.atomic_write_bytes(out, json.dumps(rows, ensure_ascii=False).encode("utf-8"))
    return out


def _crc_like(author: str) -> str:
    import zlib

    return format(zlib.crc32(author.encode()), "x")


def _iso(ts: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


# ---------------------------------------------------------------- videos


def make_demo_video(path: Path, scenes: list[int], *, size: str = "160x120", fps: int = 10) -> Path:
    """Render one demo video: each segment a scene's mosaic under moving noise, with its tone."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    for scene in scenes:
        args += ["-f", "lavfi", "-i", f"sine=frequency={SCENES[scene].tone_hz}:sample_rate=16000:duration={SEGMENT_S}"]
    n = len(scenes)
    sources = ";".join(scene_filter(scene, SEGMENT_S, f"s{i}", size=size, fps=fps) for i, scene in enumerate(scenes))
    pairs = "".join(f"[s{i}][{i}:a]" for i in range(n))
    graph = f"{sources};{pairs}concat=n={n}:v=1:a=1[v0][a];[v0]noise=alls=30:allf=t+u[v]"
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    args += ["-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28"]
    args += ["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "48k", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", str(tmp)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args, check=True, capture_output=True)
    tmp.replace(path)
    return path


def _render_video(path: Path, video_index: int, seed: int, segments: int, world: str) -> Path:
    if world == "unseen":
        from . import demo_unseen

        return demo_unseen.render_corpus_video(path, video_index, segments, SEGMENT_S, seed)
    return make_demo_video(path, segment_scenes(video_index, seed, segments))


# ---------------------------------------------------------------- the world


MARKER = ".demo-world.json"
SCENES_FILE = "scenes.json"  # video id -> the scene key of each segment (pools are checked from it)


def _upload_demo_world(root, params: dict):
    catalogue, marker = root / "catalogue.yaml", root / MARKER
    if catalogue.exists() and marker.exists() and json.loads(marker.read_text()) == params:
        return catalogue
    with lake.scratch("the demo world (ffmpeg renders it)") as local:
        generate_demo_world(local, params["n_videos"], segments=params["segments"], seed=params["seed"],
                            with_videos=params["with_videos"], world=params["world"])
        lake.upload_tree(local, root, last=["catalogue.yaml", MARKER])
    return catalogue


def generate_demo_world(root, n_videos: int = 16, *, segments: int = SEGMENTS_PER_VIDEO, seed: int = 0,
                        with_videos: bool = True, world: str = WORLDS[0]) -> Path:
    """Write the demo world under ``root`` and return its catalogue path (idempotent).

    ``world``: ``memorisation`` (this module's scenes) or ``unseen`` (``lcaffect_pipeline.demo_unseen``).

    A marker file records the parameters; a second call with the same ones does nothing. On an
    object store (``s3://…``) the world is rendered in a local scratch folder (ffmpeg writes local
    files) and uploaded, its marker last.
    """
    _check_world(world)
    params = {"version": DEMO_VERSION, "n_videos": n_videos, "segments": segments, "seed": seed, "with_videos": with_videos,
              "world": world}
    render_tag = ""  # the memorisation world's videos keep the names they always had
    if world == "unseen":  # its renderer's version: a world rendered before a change is rendered again
        from .demo_unseen import RENDER_VERSION

        params["render"], render_tag = RENDER_VERSION, f"-r{RENDER_VERSION}"
    if not lake.is_local(lake.as_path(root)):
        return _upload_demo_world(lake.as_path(root), params)
    root = lake.local_path(root, "the demo world")
    catalogue = root / "catalogue.yaml"
    marker = root / MARKER
    if catalogue.exists() and marker.exists() and json.loads(marker.read_text()) == params:
        return catalogue
    entries, renders = [], []
    for i in range(n_videos):
        fmt = FORMATS[i % len(FORMATS)]
        vid = f"demo_{i:02d}"
        comments = demo_comments(i, seed, segments, world)
        folder = root / "comments" / vid
        cid = 90_000_000 + i
        writer = {
            "bilibili_xml": lambda: _write_bilibili_xml(folder, cid, comments),
            "bilibili_protobuf": lambda: _write_bilibili_protobuf(folder, cid, comments),
            "niconico": lambda: _write_niconico(folder, vid, comments),
            "youtube": lambda: _write_youtube(folder, vid, comments),
            "acfun": lambda: _write_acfun(folder, vid, comments),
        }[fmt]
        source = writer()
        entry = {
            "video_id": vid,
            "platform": PLATFORM[fmt],
            "source": str(source.relative_to(root)),
            "language": "zh",
            "genre": "demo-scenes",
            "title": f"Demo video {i} ({fmt})",
        }
        if with_videos:
            video = root / "videos" / f"{vid}-{segments}x-seed{seed}-{world}{render_tag}-v{DEMO_VERSION}.mp4"
            if not video.exists():  # same index, length, seed and world, same content: keep the rendered file
                renders.append((video, i))
            entry["video"] = str(video.relative_to(root))
        entries.append(entry)
    # ffmpeg does the work: one render per core at once
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda job: _render_video(job[0], job[1], seed, segments, world), renders))
    keys = {entry["video_id"]: video_scene_keys(i, seed, segments, world) for i, entry in enumerate(entries)}
    lake.atomic_write_bytes(root / SCENES_FILE, json.dumps(keys).encode())
    lake.atomic_write_bytes(catalogue, yaml.safe_dump({"videos": entries}, allow_unicode=True, sort_keys=False).encode("utf-8"))
    lake.atomic_write_bytes(marker, json.dumps(params).encode())
    return catalogue
