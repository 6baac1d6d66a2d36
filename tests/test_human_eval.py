"""The human evaluation kit on the demo world: the page in Debian's chromium (from file:// and from a
static server), scripted raters who fill it and export, and the report over their files.

One tiny lake (4 demo videos, half held out: 10 held-out clips) is built once; each test empties the
kit's ratings/ folder, has its raters fill the page, and materialises ``human_eval_report``.
"""

from __future__ import annotations

import functools
import http.server
import json
import random
import threading
from pathlib import Path

import dagster as dg
import pytest

from conftest import demo_resources, need_ffmpeg
from skip_policy import missing

from lcaffect_pipeline.defs.clips_assets import ASSETS as CLIPS_ASSETS
from lcaffect_pipeline.defs.corpus_assets import ASSETS as CORPUS_ASSETS
from lcaffect_pipeline.defs.evaluation_assets import ASSETS as EVALUATION_ASSETS
from lcaffect_pipeline.defs.model_assets import ASSETS as MODEL_ASSETS
from lcaffect_pipeline.defs.resources import HumanEvalResource, V2LCTrainingResource
from lcaffect_pipeline.human_eval.kit import LETTERS
from lcaffect_pipeline.report import headline

CHROMIUM = Path("/usr/bin/chromium")
ASSETS = [*CORPUS_ASSETS, *CLIPS_ASSETS, *MODEL_ASSETS, *EVALUATION_ASSETS]
pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.usefixtures("one_torch_thread")]


def resources(root: Path) -> dict:
    training = V2LCTrainingResource(max_steps=4, batch_size=4, warmup_steps=1, checkpoint_every=4, num_workers=0,
                                    eval_fraction=0.5)
    return demo_resources(root, v2lc_training=training, human_eval=HumanEvalResource(items=10, seed=3))


def materialize(root: Path, name: str):
    result = dg.materialize(ASSETS, resources=resources(root), selection=[name], raise_on_error=False)
    mats = [e.materialization for e in result.get_asset_materialization_events()]
    return result, {m.asset_key.to_user_string(): m for m in mats}


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    need_ffmpeg()
    root = tmp_path_factory.mktemp("lake")
    result = dg.materialize(ASSETS, resources=resources(root), selection=[a.key for a in ASSETS if a.key.path[0] != "human_eval_report"])
    assert result.success
    (m,) = [e.materialization for e in result.get_asset_materialization_events()
            if e.materialization.asset_key.to_user_string() == "human_eval_kit"]
    folder = Path(m.metadata["page"].value).parents[1]
    return {"root": root, "dir": folder, "page": Path(m.metadata["page"].value),
            "key": json.loads((folder / "key.json").read_text()), "metadata": m.metadata}


@pytest.fixture(scope="module")
def browser(kit):
    if not CHROMIUM.exists():
        missing("/usr/bin/chromium is absent (Debian package chromium; scripts/test.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (the `test` extra)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


def ratings_dir(kit) -> Path:
    folder = kit["dir"] / "ratings"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    return folder


def rate(browser, kit, rater: str, choose, url: str | None = None) -> Path:
    """One scripted rater: ``choose(item) -> (best letter, {letter: score})`` clicked into the page,
    then the export downloaded into the kit's ratings/ folder."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(url or kit["page"].as_uri())
    page.fill("#rater", rater)
    for item in kit["key"]["items"]:
        n = item["item"]
        best, scores = choose(n)
        page.check(f'input[name="best-{n}"][value="{best}"]')
        for letter, score in scores.items():
            page.check(f'input[name="score-{n}-{letter}"][value="{score}"]')
    assert page.inner_text("#status") == f"{len(kit['key']['items'])} of {len(kit['key']['items'])} clips rated"
    with page.expect_download() as download:
        page.click("#export")
    path = kit["dir"] / "ratings" / download.value.suggested_filename
    download.value.save_as(path)
    context.close()
    return path


def report(kit) -> dict:
    result, mats = materialize(kit["root"], "human_eval_report")
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return mats["human_eval_report"]


def same_rule(n: int):
    """What both agreeing raters do: the pick and the scores vary over clips (alpha needs variation)."""
    return LETTERS[n % 3], {letter: 1 + (n + 2 * i) % 5 for i, letter in enumerate(LETTERS)}


def test_the_kit_is_blinded_seeded_and_from_held_out_clips(kit) -> None:
    key, html = kit["key"], kit["page"].read_text()
    split = json.loads(next((kit["root"] / "models").rglob("split.json")).read_text())
    assert len(key["items"]) == 10 and {it["video_id"] for it in key["items"]} <= set(split["test"])
    assert all(sorted(it["sets"].values()) == ["control", "real", "synthetic"] for it in key["items"])
    assert len({tuple(it["sets"].values()) for it in key["items"]}) > 1  # the order is shuffled per item
    data = json.loads(html.split('<script type="application/json" id="kit-data">')[1].split("</script>")[0])
    assert {k for it in data["items"] for k in it} == {"item", "clip", "sets"}  # no key in the page: letters only
    assert all(sorted(it["sets"]) == sorted(LETTERS) for it in data["items"])
    assert not [v for v in (*split["test"], *split["train"]) if v in html]  # nor a video id
    assert all((kit["dir"] / "page" / "clips" / f"item-{it['item']:03d}.mp4").stat().st_size > 0 for it in key["items"])
    assert kit["metadata"]["reused"].value is False
    assert str(kit["page"]) in headline(kit["root"])  # scripts/demo.sh names the page
    again, mats = materialize(kit["root"], "human_eval_kit")  # same inputs and seed: the same kit, reused
    assert again.success and mats["human_eval_kit"].metadata["kit_id"].value == key["kit_id"]
    assert mats["human_eval_kit"].metadata["reused"].value is True


def test_the_page_plays_its_clips_from_a_file_and_from_a_static_server(kit, browser) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(kit["page"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for url in (kit["page"].as_uri(), f"http://127.0.0.1:{server.server_address[1]}/index.html"):
            page = browser.new_page()
            page.goto(url)
            assert page.locator("section.item").count() == 10
            page.wait_for_function("document.querySelector('video').readyState >= 1", timeout=15_000)
            assert page.evaluate("document.querySelector('video').duration") == pytest.approx(8, abs=0.2)
            page.close()
    finally:
        server.shutdown()


def test_two_raters_who_always_agree_give_alpha_1_and_bad_files_are_named_and_skipped(kit, browser) -> None:
    folder = ratings_dir(kit)
    files = [rate(browser, kit, name, same_rule) for name in ("ana", "bo")]
    assert json.loads(files[0].read_text())["kit_id"] == kit["key"]["kit_id"]
    (folder / "broken.json").write_text("{not json")
    (folder / "other-kit.json").write_text(json.dumps({"kit_id": "0000", "rater": "cy", "ratings": []}))
    (folder / "zz-ana-again.json").write_text(files[0].read_text())  # one rater counts once
    m = report(kit)
    assert m.metadata["raters"].value == 2 and m.metadata["rejected_files"].value == 3
    assert m.metadata["alpha_choice"].value == pytest.approx(1.0) and m.metadata["alpha_scores"].value == pytest.approx(1.0)
    text = m.metadata["report"].value
    assert "broken.json: not a JSON rating export" in text and "other-kit.json: rates kit '0000'" in text
    assert "zz-ana-again.json: rater 'ana' is already counted from" in text
    # the rates, counted here from the key: the synthetic set above the control, and the picks
    beats = chose_synthetic = 0
    for item in kit["key"]["items"]:
        best, scores = same_rule(item["item"])
        by_role = {item["sets"][letter]: s for letter, s in scores.items()}
        beats += by_role["synthetic"] > by_role["control"]
        chose_synthetic += item["sets"][best] == "synthetic"
    assert m.metadata["synthetic_beats_control"].value == pytest.approx(beats / 10)
    assert m.metadata["chose_synthetic"].value == pytest.approx(chose_synthetic / 10)
    saved = json.loads(next((kit["dir"] / "reports").rglob("report.json")).read_text())
    assert saved["rates"]["synthetic_beats_control"]["low"] <= beats / 10 <= saved["rates"]["synthetic_beats_control"]["high"]


def test_random_raters_agree_near_zero(kit, browser) -> None:
    ratings_dir(kit)
    for r in range(8):
        rng = random.Random(r)
        rate(browser, kit, f"random-{r}", lambda n: (rng.choice(LETTERS), {letter: rng.randint(1, 5) for letter in LETTERS}))
    m = report(kit)
    assert m.metadata["raters"].value == 8 and m.metadata["rejected_files"].value == 0
    # 10 clips x 8 uniform raters, simulated over 500 seeds: |alpha| stayed below 0.16 (choice) and 0.14 (scores)
    assert abs(m.metadata["alpha_choice"].value) < 0.2 and abs(m.metadata["alpha_scores"].value) < 0.2


def test_a_folder_of_only_bad_files_fails_naming_them(kit) -> None:
    folder = ratings_dir(kit)
    (folder / "scores-out-of-range.json").write_text(json.dumps(
        {"kit_id": kit["key"]["kit_id"], "rater": "dee", "ratings": [{"item": 1, "best": "A", "scores": {"A": 7}}]}))
    result, _ = materialize(kit["root"], "human_eval_report")
    assert not result.success
    message = "\n".join(e.step_failure_data.error.message for e in result.get_step_failure_events())
    assert "scores-out-of-range.json: clip 1: scores {'A': 7}" in message


def test_an_encoder_without_held_out_videos_is_refused_with_the_reason(tmp_path) -> None:
    from lcaffect_pipeline.human_eval.kit import KitError, read_split

    (tmp_path / "split.json").write_text(json.dumps({"split_group": "video", "train": {"v1": "v1"}, "test": {}}))
    with pytest.raises(KitError, match="no held-out video"):
        read_split(tmp_path)
    with pytest.raises(KitError, match="split.json is absent"):
        read_split(tmp_path / "nowhere")
