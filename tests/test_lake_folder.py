"""A training program's run folder in the lake (``lcaffect_ml.lake_folder``), on fsspec's
in-memory file system: what a fresh attempt pulls, what is published and in which order, which
checkpoints the lake keeps, and input copies that keep their cache keys."""

from __future__ import annotations

import os
import uuid

import fsspec
import pytest

from lcaffect_ml.lake_folder import local_inputs, run_folder
from lcaffect_ml.trainutil import COMPLETE_MARKER, CheckpointManager


@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv("LCAFFECT_SCRATCH", str(tmp_path / "scratch"))
    url = f"memory://lake-{uuid.uuid4().hex[:8]}"
    yield fsspec.filesystem("memory"), url
    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def write(fs, url: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        fs.pipe(f"{url}/{rel}".removeprefix("memory://"), text.encode())


def test_a_fresh_attempt_pulls_the_newest_complete_checkpoint_of_each_folder(lake) -> None:
    fs, url = lake
    run = f"{url}/models/v2lc/k"
    write(fs, run, {"split.json": "{}", "checkpoints/step-2/w": "2", f"checkpoints/step-2/{COMPLETE_MARKER}": "{}",
                    "checkpoints/step-4/w": "4",  # killed while uploading: no marker, not complete
                    "checkpoints/seed-0/step-3/w": "s3", f"checkpoints/seed-0/step-3/{COMPLETE_MARKER}": "{}"})
    with run_folder(run, COMPLETE_MARKER) as folder:
        got = sorted(p.relative_to(folder.local).as_posix() for p in folder.local.rglob("*") if p.is_file())
        assert got == ["checkpoints/seed-0/step-3/trainer_state.json", "checkpoints/seed-0/step-3/w",
                       "checkpoints/step-2/trainer_state.json", "checkpoints/step-2/w", "split.json"]
        assert folder.location(folder.local / "model.safetensors") == f"{run}/model.safetensors"
        local = folder.local
    assert not local.exists() and not local.parent.exists()  # the scratch copy goes, whatever happened


def test_checkpoints_are_published_marker_last_and_pruned_in_the_lake(lake, monkeypatch) -> None:
    fs, url = lake
    run = f"{url}/run"
    order = []
    put = type(fs).put_file
    monkeypatch.setattr(type(fs), "put_file", lambda self, lpath, rpath, **kw: (order.append(rpath.rsplit("/", 2)[-2:]),
                                                                                put(self, lpath, rpath, **kw))[1])
    with run_folder(run, COMPLETE_MARKER) as folder:
        manager = CheckpointManager(folder.local / "checkpoints", keep=2, publish=folder.publish_checkpoint)
        for step in (1, 2, 3):
            manager.save(step, lambda d: [(d / "w").write_text(str(step)), (d / COMPLETE_MARKER).write_text("{}")])
        (folder.local / "model.safetensors").write_text("m")
        (folder.local / "metrics.json").write_text("{}")
        folder.publish(last=("metrics.json", "model.safetensors"))
    assert order[:2] == [["step-1", "w"], ["step-1", COMPLETE_MARKER]]
    assert order[-2:] == [["run", "metrics.json"], ["run", "model.safetensors"]]
    kept = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{run}/checkpoints".removeprefix("memory://"), detail=False))
    assert kept == ["step-2", "step-3"]  # the lake keeps what the program keeps


def test_inputs_from_the_lake_keep_their_names_media_and_modification_times(lake, tmp_path) -> None:
    fs, url = lake
    task = f"{url}/downstream/chsims2"
    write(fs, task, {"t.parquet": "table", "media/a.npz": "a", "other/x": "x"})
    write(fs, f"{url}/models/v2lc/k", {"model.safetensors": "m", "checkpoints/step-1/w": "w"})
    local_file = tmp_path / "local.parquet"
    local_file.write_text("here")
    paths = {"utterances": f"{task}/t.parquet", "v2lc": f"{url}/models/v2lc/k", "local": str(local_file), "none": None}
    with local_inputs(paths, "out", exclude=("checkpoints",), beside={"utterances": ("media",)}) as first:
        table = first["utterances"]
        assert open(table).read() == "table" and os.path.isfile(os.path.join(os.path.dirname(table), "media", "a.npz"))
        assert not os.path.exists(os.path.join(os.path.dirname(table), "other"))
        assert sorted(os.listdir(first["v2lc"])) == ["model.safetensors"]  # the run without its checkpoints
        assert (first["local"], first["none"]) == (str(local_file), None)
        stamp = os.stat(os.path.join(os.path.dirname(table), "media", "a.npz")).st_mtime_ns
    with local_inputs(paths, "out", exclude=("checkpoints",), beside={"utterances": ("media",)}) as second:
        media = os.path.join(os.path.dirname(second["utterances"]), "media", "a.npz")
        # the same local path and mtime next time: a program's size+mtime cache key still hits
        assert second["utterances"] == table and os.stat(media).st_mtime_ns == stamp
