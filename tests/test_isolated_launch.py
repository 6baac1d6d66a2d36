"""A training step that shares nothing with its program but the object store (issue 30).

The ``v2lc_encoder`` step launches the V2LC program through its ``command`` prefix inside a
private mount namespace: an empty ``/tmp`` (the launcher's scratch, its Dagster instance and any
Pipes temp file are there) and, where set, an empty ``DAGSTER_HOME`` and ``LCAFFECT_SCRATCH``.
The program gets the lake's URL and credentials (the S3 server the tests start) and nothing else;
the step must succeed with the outputs, checkpoints and lineage in the bucket and the figures of
an ordinary launch, and a program killed mid-training must resume from the lake's checkpoint.
Needs root for ``unshare --mount`` (CI runs as root); skipped with the reason elsewhere, a
failure under CI.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from conftest import demo_resources, need_ffmpeg
from faults import command as faults_command
from s3_lake import s3_env, s3_server
from services import unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.usefixtures("one_torch_thread")]
TRAIN = [sys.executable, "-m", "lcaffect_ml.train_v2lc"]
FIGURES = ("v2c_r1", "v2c_r5", "c2v_r1", "chance_r1", "steps", "train_segments")
# Run inside the namespace: hide what the launcher has, prove it is hidden, then run the program.
ISOLATE = ('set -e; mount -t tmpfs none /tmp; '
           'for d in "$DAGSTER_HOME" "$LCAFFECT_SCRATCH"; do [ -n "$d" ] && [ -d "$d" ] && mount -t tmpfs none "$d"; done; '
           'if [ -e "$LAUNCHER_SENTINEL" ]; then echo "the launcher\'s scratch is visible" >&2; exit 99; fi; '
           'exec "$@"')


def isolated(program: list[str]) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", ISOLATE, "isolate", *program]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Corpus and clips of 4 demo videos on the store; the launcher's scratch holds a sentinel."""
    need_ffmpeg()
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode != 0:
        unavailable("unshare --mount is not permitted here (run as root, as CI does)")
    scratch = tmp_path_factory.mktemp("launcher-scratch")
    (scratch / "sentinel").write_text("the program must not see this")
    saved = {k: os.environ.get(k) for k in ("LCAFFECT_SCRATCH", "LAUNCHER_SENTINEL")}
    os.environ.update(LCAFFECT_SCRATCH=str(scratch), LAUNCHER_SENTINEL=str(scratch / "sentinel"))
    try:
        with s3_server() as store, s3_env(store) as fs:
            root = f"s3://{store['LCAFFECT_S3_BUCKET']}/isolated"
            result = dg.materialize(corpus_and_clips(), resources=resources(root, None))
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            yield fs, root
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def corpus_and_clips() -> list:
    from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS
    from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS

    return [*CORPUS, *CLIPS]


def resources(root: str, command: list[str] | None) -> dict:
    from lcaffect_pipeline.defs.resources import LakeResource, V2LCTrainingResource

    training = V2LCTrainingResource(max_steps=6, batch_size=4, warmup_steps=1, checkpoint_every=2, num_workers=0,
                                    eval_fraction=0.25, seed=3, command=command or [])
    return demo_resources(None, lake=LakeResource(root=root, author_salt="test-salt"), v2lc_training=training)


def materialize(root: str, command: list[str] | None) -> dg.ExecuteInProcessResult:
    """The ``v2lc_encoder`` step, its program launched by ``command`` (None: the ordinary launch)."""
    from lcaffect_pipeline.defs.model_assets import ASSETS as MODEL

    return dg.materialize([*corpus_and_clips(), *MODEL], resources=resources(root, command),
                          selection=["v2lc_encoder"], raise_on_error=False)


def trained(result) -> tuple[dict, str, str]:
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    (m,) = [e.materialization for e in result.get_asset_materialization_events()
            if e.materialization.asset_key.to_user_string() == "v2lc_encoder"]
    value = result.output_for_node("v2lc_encoder")
    return {k: m.metadata[k].value for k in FIGURES}, m.tags["dagster/data_version"], value["output_dir"]


def test_the_step_succeeds_with_its_program_in_a_private_mount_namespace(lake) -> None:
    fs, root = lake
    figures, version, out = trained(materialize(root, None))  # the ordinary launch
    fs.rm(out, recursive=True)  # the same run again, from nothing

    i_figures, i_version, i_out = trained(materialize(root, isolated(TRAIN)))
    assert (i_figures, i_version, i_out) == (figures, version, out)
    key = out.removeprefix("s3://")
    names = {p[len(key) + 1:] for p in fs.find(key)}
    assert {"train_config.yaml", "metrics.json", "model.safetensors", "split.json", "loss_curve.png",
            "checkpoints/step-6/trainer_state.json"} <= names, sorted(names)
    assert not [k for k in fs.find(root.removeprefix("s3://")) if "/_pipes/" in k]  # its Pipes messages, removed after
    from lcaffect_pipeline import versions

    lineage = versions.latest(root, "v2lc_encoder")  # the step's value and what it read, in the bucket
    assert lineage["data_version"] == version and "training_shards" in lineage["reads"]


def test_a_program_killed_mid_training_resumes_from_the_lake(lake, tmp_path) -> None:
    fs, root = lake
    figures, version, out = trained(materialize(root, None))
    fs.rm(out, recursive=True)
    # The first attempt dies (SIGKILL) right after step 4, whose checkpoint is in the lake; the
    # step's retry starts a fresh namespace (an empty /tmp) that has only the lake to resume from.
    once = tmp_path / "killed-once"  # decided outside the namespace, which cannot see it
    killed = shlex.join(isolated(faults_command("lcaffect_ml.train_v2lc", kill_after_step=4)))
    whole = shlex.join(isolated(TRAIN))
    script = f'if [ -e {once} ]; then exec {whole} "$@"; else touch {once}; exec {killed} "$@"; fi'
    r_figures, r_version, r_out = trained(materialize(root, ["bash", "-c", script, "train"]))
    assert once.exists()
    metrics = json.loads(fs.cat(out.removeprefix("s3://") + "/metrics.json"))
    assert metrics["resumed_from_step"] == 4 and metrics["steps"] == 6
    assert (r_figures, r_version) == (figures, version)  # on CPU a resumed run equals an uninterrupted one


def downstream(root: str, prefix: list[str]) -> dg.ExecuteInProcessResult:
    """CH-SIMS v2's utterances, features and both fusion runs on the lake's encoder, the programs
    launched through ``prefix`` (empty: the ordinary launch)."""
    from lcaffect_pipeline.defs.downstream_assets import ASSETS as DOWNSTREAM
    from lcaffect_pipeline.defs.model_assets import ASSETS as MODEL
    from lcaffect_pipeline.defs.resources import DownstreamResource

    res = {**resources(root, None), "downstream": DownstreamResource(
        demo=True, frames=4, size=32, seeds=[0], fusion_extra_json='{"epochs": 3, "batch_size": 32}',
        mustard_protocol="speaker_independent", launch_prefix=prefix)}
    return dg.materialize([*corpus_and_clips(), *MODEL, *DOWNSTREAM], resources=res, raise_on_error=False,
                          selection=[DOWNSTREAM_NAMES[k] for k in ("utterances", "features", "with_lc", "without_lc")])


DOWNSTREAM_NAMES = {"utterances": "chsims2_utterances", "features": "chsims2_features",
                    "with_lc": "chsims2_fusion_with_lc", "without_lc": "chsims2_fusion_without_lc"}


def made(result) -> dict[str, tuple]:
    """Per feature and fusion asset: its data version, its numbers, and the lake folder it names."""
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    out = {}
    for e in result.get_asset_materialization_events():
        name, m = e.materialization.asset_key.to_user_string(), e.materialization
        if name in (DOWNSTREAM_NAMES["features"], DOWNSTREAM_NAMES["with_lc"], DOWNSTREAM_NAMES["without_lc"]):
            value = result.output_for_node(name)
            numbers = {k: v.value for k, v in m.metadata.items() if type(v.value) in (int, float)}
            out[name] = (m.tags["dagster/data_version"], numbers, value.get("dir") or value.get("output_dir"))
    return out


def test_feature_and_fusion_programs_in_a_private_mount_namespace(lake) -> None:
    fs, root = lake
    trained(materialize(root, None))  # the encoder the features read (trained, or found in the lake)
    ordinary = made(downstream(root, []))
    for _, _, folder in ordinary.values():
        fs.rm(folder.removeprefix("s3://"), recursive=True)  # the same runs again, from nothing
    isolated_run = made(downstream(root, isolated([])))
    assert isolated_run == ordinary
    fusion = isolated_run[DOWNSTREAM_NAMES["with_lc"]][2].removeprefix("s3://")
    assert {"metrics.json", "model.safetensors", "train_fusion_config.yaml"} <= {p.rsplit("/", 1)[-1] for p in fs.find(fusion)}
    from lcaffect_pipeline import versions

    lineage = versions.latest(root, DOWNSTREAM_NAMES["with_lc"])
    assert DOWNSTREAM_NAMES["features"] in lineage["reads"]
