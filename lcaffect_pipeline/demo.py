"""The built-in offline demo world: comment files in the real formats, and videos made by ffmpeg.

It is learnable on purpose: every 8-second segment of a demo video shows one of
``DEMO_CLASSES`` (a colour under moving noise, with a tone of its own in the audio), and the
live comments written in that segment come from that class's vocabulary, so a V2LC model can
learn to retrieve a segment's comments from its frames. Laughter, "2333", traditional
characters and duplicates are mixed in so that cleaning and comment selection have real work.

Deterministic: the same arguments always write the same bytes (no wall-clock, fixed seeds).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import yaml

from . import lake

DEMO_VERSION = "1"
SEGMENT_S = 8
SEGMENTS_PER_VIDEO = 5
BASE_TIME = 1_700_000_000  # posted_at of the first demo comment (fixed: output must not depend on today)


@dataclass(frozen=True)
class DemoClass:
    name: str
    colour: str  # ffmpeg colour
    tone_hz: int  # audio tone
    words: tuple[str, ...]


DEMO_CLASSES = (
    DemoClass("red", "0xD62828", 220, ("好红啊", "红红火火", "中国红", "番茄炒蛋", "火焰燃起来", "红色警报", "像辣椒一样", "热情似火")),
    DemoClass("orange", "0xF77F00", 247, ("橘子汽水", "橙色真暖", "夕阳西下", "南瓜灯", "胡萝卜色", "秋天的叶子", "暖洋洋", "橘猫出没")),
    DemoClass("yellow", "0xFCBF49", 262, ("金灿灿", "香蕉黄", "柠檬酸", "向日葵", "黄色小鸭", "阳光明媚", "鸡蛋黄", "皮卡丘")),
    DemoClass("green", "0x2A9D8F", 294, ("绿油油", "草地好美", "森林氧吧", "青青草原", "抹茶味", "西瓜皮", "春天来了", "绿色环保")),
    DemoClass("blue", "0x1D4ED8", 330, ("蓝天白云", "大海好蓝", "蓝色忧郁", "深海恐惧", "天空之城", "蓝莓果酱", "冰冷的蓝", "海军蓝")),
    DemoClass("purple", "0x7B2CBF", 349, ("紫色梦幻", "薰衣草", "葡萄紫", "神秘紫", "紫禁城", "茄子色", "基佬紫", "魔法少女")),
    DemoClass("pink", "0xFF70A6", 392, ("少女心", "粉红泡泡", "樱花飘落", "草莓牛奶", "桃花朵朵", "可爱粉", "恋爱的感觉", "棉花糖")),
    DemoClass("white", "0xF1F1F1", 440, ("白茫茫", "下雪了", "纯白无瑕", "牛奶色", "白色相簿", "云朵软软", "闪瞎眼", "雪白一片")),
    DemoClass("black", "0x111111", 494, ("黑漆漆", "关灯了", "黑夜降临", "屏幕坏了", "伸手不见五指", "黑咖啡", "深夜食堂", "午夜时分")),
    DemoClass("cyan", "0x00E5FF", 523, ("青色清凉", "薄荷糖", "湖水碧绿", "冰淇淋", "清爽夏日", "蒂芙尼蓝", "青出于蓝", "游泳池")),
)

NOISE_COMMENTS = ("哈哈哈哈哈哈哈", "2333333", "草草草草", "哈哈哈", "前方高能", "awsl")
TRADITIONAL = {"红": "紅", "蓝": "藍", "绿": "綠", "黄": "黃", "鸡": "雞", "冰": "冰", "云": "雲", "梦": "夢", "爱": "愛", "乐": "樂"}

# (platform, writer) by video index: every format the corpus reads appears in the demo.
FORMATS = ("bilibili_xml", "bilibili_protobuf", "niconico", "youtube", "acfun")
PLATFORM = {"bilibili_xml": "bilibili", "bilibili_protobuf": "bilibili", "niconico": "niconico", "youtube": "youtube", "acfun": "acfun"}


def segment_classes(video_index: int, seed: int = 0) -> list[int]:
    """The class of each segment of a demo video (deterministic)."""
    rng = random.Random(f"classes-{seed}-{video_index}")
    return [rng.randrange(len(DEMO_CLASSES)) for _ in range(SEGMENTS_PER_VIDEO)]


def demo_comments(video_index: int, seed: int = 0) -> list[dict]:
    """The comments of one demo video: ``offset_ms``, ``text``, ``author``, ``id``, ``posted``."""
    rng = random.Random(f"comments-{seed}-{video_index}")
    out = []
    for seg, cls in enumerate(segment_classes(video_index, seed)):
        words = DEMO_CLASSES[cls].words
        texts = [rng.choice(words) for _ in range(6)]
        texts.append(rng.choice(NOISE_COMMENTS))
        if rng.random() < 0.5:  # traditional characters: OpenCC turns them back
            texts.append("".join(TRADITIONAL.get(ch, ch) for ch in rng.choice(words)))
        for text in texts:
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
    from .bili_proto import DmSegMobileReply

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


def make_demo_video(path: Path, classes: list[int], *, size: str = "160x120", fps: int = 10) -> Path:
    """Render one demo video: each segment a class colour under moving noise, with its tone."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    for cls in classes:
        c = DEMO_CLASSES[cls]
        args += ["-f", "lavfi", "-i", f"color=c={c.colour}:s={size}:r={fps}:d={SEGMENT_S}"]
        args += ["-f", "lavfi", "-i", f"sine=frequency={c.tone_hz}:sample_rate=16000:duration={SEGMENT_S}"]
    n = len(classes)
    pairs = "".join(f"[{2 * i}:v][{2 * i + 1}:a]" for i in range(n))
    graph = f"{pairs}concat=n={n}:v=1:a=1[v0][a];[v0]noise=alls=30:allf=t+u[v]"
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    args += ["-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28"]
    args += ["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "48k", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", str(tmp)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args, check=True, capture_output=True)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- the world


def generate_demo_world(root, n_videos: int = 16, *, seed: int = 0, with_videos: bool = True) -> Path:
    """Write the demo world under ``root`` and return its catalogue path (idempotent).

    A marker file records the parameters; a second call with the same ones does nothing.
    """
    root = Path(str(root))
    catalogue = root / "catalogue.yaml"
    marker = root / ".demo-world.json"
    params = {"version": DEMO_VERSION, "n_videos": n_videos, "seed": seed, "with_videos": with_videos}
    if catalogue.exists() and marker.exists() and json.loads(marker.read_text()) == params:
        return catalogue
    entries = []
    for i in range(n_videos):
        fmt = FORMATS[i % len(FORMATS)]
        vid = f"demo_{i:02d}"
        comments = demo_comments(i, seed)
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
            "genre": "demo-colours",
            "title": f"Demo video {i} ({fmt})",
        }
        if with_videos:
            video = root / "videos" / f"{vid}-seed{seed}-v{DEMO_VERSION}.mp4"
            if not video.exists():  # same index and seed, same content: keep the rendered file
                make_demo_video(video, segment_classes(i, seed))
            entry["video"] = str(video.relative_to(root))
        entries.append(entry)
    lake.atomic_write_bytes(catalogue, yaml.safe_dump({"videos": entries}, allow_unicode=True, sort_keys=False).encode("utf-8"))
    lake.atomic_write_bytes(marker, json.dumps(params).encode())
    return catalogue
