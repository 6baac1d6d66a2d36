"""One naming rule end to end: any video id (spaces, CJK, look-alikes of hashed names) goes
catalogue -> corpus -> clips and is found again by every reader (DuckDB catalog, checks, shards)."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcaffect_pipeline import clips, corpus, shards, tables
from lcaffect_pipeline.defs.checks import CHECKS
from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS_ASSETS
from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS_ASSETS
from lcaffect_pipeline.defs.resources import CatalogueResource, ClipsResource
from lcaffect_pipeline.demo_world import SEGMENT_S, make_demo_video

from conftest import demo_resources, manifest, need_ffmpeg
from lcaffect_ml.contracts import naming
from lcaffect_ml.contracts import shards as shard_contract

ALL = [*CORPUS_ASSETS, *CLIPS_ASSETS]
COMMENTS = 6
SEGMENTS = 2


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[Path, str]:
    """One small rendered demo video (2 segments) and the text of a Bilibili XML for it."""
    need_ffmpeg()
    folder = tmp_path_factory.mktemp("media")
    video = make_demo_video(folder / "video.mp4", [0, 1], size="48x32")
    ds = "".join(f'<d p="{1 + 2.5 * i:.3f},1,25,16777215,1700000000,0,abc,{1000 + i},10">评论{i} comment</d>'
                 for i in range(COMMENTS))
    return video, f'<?xml version="1.0" encoding="UTF-8"?><i><chatid>1</chatid>{ds}</i>'


def _world(folder: Path, media, ids: list[str | None], names: list[str], fmt: str = "yaml") -> Path:
    """A catalogue of one video per id; ``None`` lets the id default to the comment file's name."""
    video, xml = media
    entries = []
    for i, (vid, name) in enumerate(zip(ids, names)):
        src = folder / f"c{i}" / name
        src.parent.mkdir(parents=True)
        src.write_text(xml, encoding="utf-8")
        entry = {"platform": "bilibili", "source": str(src), "video": str(video)}
        if vid is not None:
            entry["video_id"] = vid
        entries.append(entry)
    path = folder / f"catalogue.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, ["video_id", "platform", "source", "video"])
            writer.writeheader()
            writer.writerows(entries)
    else:
        path.write_text(yaml.safe_dump({"videos": entries}, allow_unicode=True), encoding="utf-8")
    return path


def _run(root: Path, catalogue: Path):
    res = demo_resources(root, catalogue=CatalogueResource(path=str(catalogue)),
                         clips=ClipsResource(size=32, frames_per_segment=2, max_shard_bytes=200_000))
    return dg.materialize([*ALL, *CHECKS], resources=res, raise_on_error=False)


def _assert_every_reader_finds_every_video(root: Path, ids: list[str], result) -> None:
    assert result.success
    for stage in ("raw_comments", "clean_comments", "videos", "video_probes", "segments"):
        m = manifest(root, stage)
        assert m["failed"] == 0 and m["done"] == len(ids), (stage, m.get("failures"))
    with duckdb.connect(str(root / "corpus.duckdb"), read_only=True) as con:
        per_video = dict(con.execute("SELECT video_id, comments FROM videos").fetchall())
    assert per_video == {vid: COMMENTS for vid in ids}  # the DuckDB glob finds every video's file
    # Each per-video file sits under the one name of its id, extension last.
    for vid in ids:
        assert tables.files(root, "clean_comments")[naming.safe_name(vid)]  # the partition of its one name
        assert clips.segments_of(root, vid) is not None and (root / "audio" / naming.safe_name(vid, ".wav")).exists()
    assert len(list(root.glob("clean_comments/video_key=*/*.parquet"))) == len(ids)
    assert len(list(root.glob("_state/video_probes/*.json"))) == len(ids)
    index = shards.read_shard_index(root / "shards")
    assert {e["video_id"] for e in index} == set(ids) and sum(e["samples"] for e in index) == SEGMENTS * len(ids)
    keys = {k for vid in ids for k in (shard_contract.sample_key(vid, s) for s in range(SEGMENTS))}
    assert len(keys) == SEGMENTS * len(ids)  # sample keys are distinct across videos too
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    offsets = checks[("clean_comments", "offsets_in_video")]
    assert offsets.passed and offsets.metadata["videos_with_known_duration"].value == len(ids)  # the check sees every video


def test_ids_with_spaces_cjk_and_hashed_look_alikes_go_through_corpus_and_clips(media, tmp_path: Path) -> None:
    lookalike = naming.safe_name("my video")  # the name "my video" maps to, used as an id of its own
    ids = [None, "my video", lookalike, "my_video-22175423d8", "a.b", "a_b", "CON", "ＢＶ１"]
    names = ["弹幕测试.xml"] + [f"{i}.xml" for i in range(1, len(ids))]
    catalogue = _world(tmp_path / "world", media, ids, names)
    assert corpus.load_catalogue(catalogue).column("video_id")[0].as_py() == "弹幕测试"
    root = tmp_path / "lake"
    result = _run(root, catalogue)
    _assert_every_reader_finds_every_video(root, ["弹幕测试", *ids[1:]], result)
    # Second run: every video is found again by its state and skipped, no failure.
    again = _run(root, catalogue)
    assert again.success and manifest(root, "segments")["skipped"] == len(ids)
    assert manifest(root, "segments")["failed"] == 0


# Ids as a catalogue keeps them: surrounding white space is stripped, lone surrogates cannot be
# written as UTF-8. The catalogue is CSV: YAML itself turns a NEL (\x85) inside a plain scalar
# into a line break.
_ID = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda s: s == s.strip())


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(_ID | st.from_regex(r"[a-z_.]{1,8}(-[0-9a-f]{16})?", fullmatch=True), min_size=2, max_size=3, unique=True))
def test_any_unicode_ids_go_through_corpus_and_clips(media, ids: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="naming-"))
    try:
        catalogue = _world(folder / "world", media, ids, [f"{i}.xml" for i in range(len(ids))], "csv")
        assert corpus.load_catalogue(catalogue).column("video_id").to_pylist() == ids
        result = _run(folder / "lake", catalogue)
        _assert_every_reader_finds_every_video(folder / "lake", ids, result)
        names = [p.name for p in (folder / "lake").rglob("*")]
        assert all(len(n.encode()) <= 255 for n in names)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_hashed_state_file_still_names_its_video(tmp_path: Path) -> None:
    from lcaffect_pipeline.stages import VideoResult, load_state, save_state

    save_state(tmp_path, "raw_comments", VideoResult("弹幕 测试", "done", "f", "h", 3))
    (path,) = (tmp_path / "_state" / "raw_comments").glob("*.json")
    assert json.loads(path.read_text())["video_id"] == "弹幕 测试"
    assert load_state(tmp_path, "raw_comments", "弹幕 测试")["rows"] == 3
