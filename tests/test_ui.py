"""The Dagster UI over a materialised tiny demo: GraphQL answers, and screenshots with chromium.

A temporary DAGSTER_HOME gets one real run (`dagster asset materialize --select meld_utterances`
on the demo MELD), then `dagster-webserver` serves it on a free loopback port. The GraphQL
checks need no browser; the screenshots need Debian's chromium (skipped with a reason without).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, need_ffmpeg

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts" / "ui"  # git-ignored
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> str:
    need_ffmpeg()
    base = tmp_path_factory.mktemp("ui")
    home, lake = base / "home", base / "lake"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    cfg = base / "meld.yaml"
    cfg.write_text(yaml.safe_dump({"resources": {"downstream": {"config": {"demo": True, "frames": 2, "size": 16}}}}))
    env = {**os.environ, "DAGSTER_HOME": str(home), "LCAFFECT_LAKE": str(lake), "PYTHONWARNINGS": "ignore"}
    bin_dir = Path(sys.executable).parent
    run = subprocess.run([str(bin_dir / "dagster"), "asset", "materialize", "-m", "lcaffect_pipeline", "--select", "meld_utterances", "-c", str(cfg)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    port = free_port()
    log = open(base / "webserver.log", "w")
    proc = subprocess.Popen([str(bin_dir / "dagster-webserver"), "-m", "lcaffect_pipeline", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/server_info", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def graphql(base: str, query: str) -> dict:
    req = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = json.loads(resp.read())
    assert not body.get("errors"), body["errors"]
    return body["data"]


def test_graphql_serves_assets_metadata_and_the_last_run(ui: str) -> None:
    data = graphql(ui, """{
      assetNodes { assetKey { path } groupName }
      assetOrError(assetKey: {path: ["meld_utterances"]}) {
        ... on Asset { assetMaterializations(limit: 1) { runId metadataEntries { label ... on IntMetadataEntry { intValue } } } }
      }
      runsOrError(limit: 1) { ... on Runs { results { runId status } } }
    }""")
    nodes = {tuple(n["assetKey"]["path"]): n["groupName"] for n in data["assetNodes"]}
    assert nodes[("v2lc_encoder",)] == "model" and nodes[("meld_utterances",)] == "downstream"
    from lcaffect_pipeline import defs

    assert set(nodes) == {tuple(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}  # the whole graph is served
    mat = data["assetOrError"]["assetMaterializations"][0]
    rows = {e["label"]: e.get("intValue") for e in mat["metadataEntries"]}
    assert rows["rows"] > 0
    last = data["runsOrError"]["results"][0]
    assert last["status"] == "SUCCESS" and last["runId"] == mat["runId"]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package chromium)")
@pytest.mark.parametrize("name,path", [("asset_graph", "/asset-groups"), ("v2lc_encoder", "/assets/v2lc_encoder")])
def test_screenshots(ui: str, name: str, path: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1400,900",
                    "--virtual-time-budget=15000", f"{ui}{path}"], check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty canvas
