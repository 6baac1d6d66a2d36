"""The Dagster UI over a materialised tiny demo: GraphQL answers, and the pages in a real browser.

A temporary DAGSTER_HOME gets one real run of `full_pipeline` on a tiny demo (in-process
executor to keep it short), then `dagster-webserver` serves it on a free loopback port. The
GraphQL checks need no browser; the page checks drive Debian's chromium with Playwright and
save screenshots under artifacts/ui (skipped with a reason where chromium is absent).
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
TINY_DEMO = {
    "execution": {"config": {"in_process": {}}},
    "resources": {
        "catalogue": {"config": {"demo": True, "demo_videos": 4}},
        "lake": {"config": {"author_salt": "ui-test"}},
        "crawler": {"config": {"min_interval_s": 0.0}},
        "clips": {"config": {"size": 32, "frames_per_segment": 4}},
        "v2lc_training": {"config": {"max_steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 4,
                                     "num_workers": 0, "eval_fraction": 0.25}},
        "downstream": {"config": {"demo": True, "frames": 4, "size": 32, "seeds": [0],
                                  "fusion_extra_json": '{"epochs": 3}'}},
    },
}
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
    cfg = base / "demo.yaml"
    cfg.write_text(yaml.safe_dump(TINY_DEMO))
    env = {**os.environ, "DAGSTER_HOME": str(home), "LCAFFECT_LAKE": str(lake), "PYTHONWARNINGS": "ignore"}
    bin_dir = Path(sys.executable).parent
    run = subprocess.run([str(bin_dir / "dagster"), "job", "execute", "-m", "lcaffect_pipeline", "-j", "full_pipeline", "-c", str(cfg)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
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
      v2lc: assetOrError(assetKey: {path: ["v2lc_encoder"]}) {
        ... on Asset { assetMaterializations(limit: 1) { metadataEntries { label ... on FloatMetadataEntry { floatValue } } } }
      }
      ablation: assetOrError(assetKey: {path: ["ablation_report"]}) {
        ... on Asset { assetMaterializations(limit: 1) { metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } }
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
    v2lc = {e["label"]: e.get("floatValue") for e in data["v2lc"]["assetMaterializations"][0]["metadataEntries"]}
    assert {"v2c_r1", "c2v_r1", "chance_r1"} <= set(v2lc) and 0 < v2lc["chance_r1"] <= 1
    ablation = {e["label"]: e.get("mdStr") for e in data["ablation"]["assetMaterializations"][0]["metadataEntries"]}
    assert "| meld | weighted_f1 |" in ablation["ablation"]
    last = data["runsOrError"]["results"][0]
    assert last["status"] == "SUCCESS" and last["runId"] == mat["runId"]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package chromium)")
@pytest.mark.parametrize("name,path,expected", [
    ("asset_graph", "/asset-groups", ["corpus", "clips", "model", "downstream"]),
    ("v2lc_encoder", "/assets/v2lc_encoder", ["v2c_r1", "chance_r1"]),
    ("ablation_report", "/assets/ablation_report", ["weighted_f1", "without LC"]),
])
def test_pages_in_a_real_browser(ui: str, name: str, path: str, expected: list[str]) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}{path}", wait_until="networkidle")
        skip = page.get_by_role("button", name="Skip")  # the UI's first-visit community dialog
        if skip.count():
            skip.first.click()
        for text in expected:
            page.get_by_text(text, exact=False).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000
