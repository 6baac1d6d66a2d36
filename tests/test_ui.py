"""The Dagster UI over a materialised tiny demo: GraphQL answers, and the pages in a real browser.

A temporary DAGSTER_HOME gets one real run of `full_pipeline` on a tiny demo (in-process
executor to keep it short), then `dagster-webserver` serves it on a free loopback port. The
GraphQL checks need no browser; the page checks drive Debian's chromium with Playwright and
read what a user looks for on each page (asset names and their status, a metric's value, a
check's result), saving screenshots under artifacts/ui for people (where chromium is absent the
page checks skip with the reason, and fail in CI).
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
from skip_policy import missing

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
    run = subprocess.run([str(bin_dir / "dagster"), "job", "execute", "-m", "lcaffect_pipeline.definitions", "-j", "full_pipeline", "-c", str(cfg)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    port = free_port()
    log = open(base / "webserver.log", "w")
    proc = subprocess.Popen([str(bin_dir / "dagster-webserver"), "-m", "lcaffect_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
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
    from lcaffect_pipeline.definitions import defs

    assert set(nodes) == {tuple(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}  # the whole graph is served
    mat = data["assetOrError"]["assetMaterializations"][0]
    rows = {e["label"]: e.get("intValue") for e in mat["metadataEntries"]}
    assert rows["rows"] > 0
    v2lc = {e["label"]: e.get("floatValue") for e in data["v2lc"]["assetMaterializations"][0]["metadataEntries"]}
    assert {"v2c_r1", "c2v_r1", "chance_r1"} <= set(v2lc) and 0 < v2lc["chance_r1"] <= 1
    ablation = {e["label"]: e.get("mdStr") for e in data["ablation"]["assetMaterializations"][0]["metadataEntries"]}
    assert "| meld | **weighted_f1** |" in ablation["ablation"]
    last = data["runsOrError"]["results"][0]
    assert last["status"] == "SUCCESS" and last["runId"] == mat["runId"]


def _shown(value: float) -> str:
    """A float as the UI prints it (JavaScript's number formatting: 1.0 is "1")."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@pytest.fixture(scope="module")
def browser(ui: str):
    if not CHROMIUM.exists():
        missing("/usr/bin/chromium is absent (Debian package chromium; scripts/test.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (the `test` extra)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def open_page(browser, url: str, shot: str, ready: str):
    """The page at ``url`` once ``ready`` shows (tall, so the catalog renders every row); a
    screenshot goes to artifacts/ui for people, the assertions read the page's text."""
    page = browser.new_page(viewport={"width": 1400, "height": 5000})
    page.goto(url, wait_until="networkidle")
    skip = page.get_by_role("button", name="Skip")  # the UI's first-visit community dialog
    if skip.count():
        skip.first.click()
    page.get_by_text(ready, exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
    return page


@pytest.mark.browser
def test_catalog_page_lists_every_asset_as_materialized(ui: str, browser) -> None:
    from lcaffect_pipeline.definitions import defs

    names = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())
    page = open_page(browser, f"{ui}/assets", "catalog", "video_catalogue")
    page.wait_for_function(f"document.body.innerText.split('Materialized\\n').length > {len(names)}", timeout=30_000)
    assert [n for n in names if not page.get_by_text(n, exact=True).count()] == []
    assert page.get_by_text("Materialized", exact=True).count() == len(names)  # every row, none "Never materialized"


@pytest.mark.browser
def test_v2lc_page_shows_its_retrieval_metrics(ui: str, browser) -> None:
    data = graphql(ui, """{ assetOrError(assetKey: {path: ["v2lc_encoder"]}) { ... on Asset {
      assetMaterializations(limit: 1) { metadataEntries { label ... on FloatMetadataEntry { floatValue } } } } } }""")
    recorded = {e["label"]: e.get("floatValue") for e in data["assetOrError"]["assetMaterializations"][0]["metadataEntries"]}
    page = open_page(browser, f"{ui}/assets/v2lc_encoder", "v2lc_encoder", "v2c_r1")
    for label in ("v2c_r1", "c2v_r1", "chance_r1"):
        cells = page.locator("tr", has=page.get_by_text(label, exact=True)).first.locator("td").all_inner_texts()
        assert cells[0] == label and cells[-1] == _shown(recorded[label]), (label, cells)


@pytest.mark.browser
def test_check_page_shows_the_recorded_check_status(ui: str, browser) -> None:
    data = graphql(ui, """{ assetNodeOrError(assetKey: {path: ["v2lc_encoder"]}) { ... on AssetNode { assetChecksOrError {
      ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } } }""")
    (check,) = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
    word = {"SUCCEEDED": "Passed", "FAILED": "Failed"}[check["executionForLatestMaterialization"]["status"]]
    page = open_page(browser, f"{ui}/assets/v2lc_encoder?view=checks", "v2lc_encoder_checks", "Evaluation result")
    assert page.get_by_text("retrieval_above_chance", exact=True).count() >= 1
    result = page.get_by_text("Evaluation result", exact=True).first.locator("xpath=..").inner_text()
    assert result.split("\n") == ["Evaluation result", word]


@pytest.mark.browser
def test_ablation_page_shows_the_table(ui: str, browser) -> None:
    page = open_page(browser, f"{ui}/assets/ablation_report", "ablation_report", "ablation")
    page.get_by_text("meld_weighted_f1_gain", exact=True).first.wait_for(timeout=30_000)  # the headline gains
    # the UI folds long Markdown (the chart's and the report's) behind links that open a dialog,
    # as a user sees it: open each until the report's shows
    links = page.get_by_text("[Show Markdown]", exact=True)
    for i in range(links.count()):
        links.nth(i).click()
        page.wait_for_timeout(1_000)
        if page.get_by_text("gain / larger std", exact=False).count():
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(500)
    for text in ("without LC", "gain / larger std", "Demo world"):
        page.get_by_text(text, exact=False).first.wait_for(timeout=30_000)
