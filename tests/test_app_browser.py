"""The real app in a real browser: Debian's headless chromium, driven by Playwright, clicks through every panel.

The app serves a copy of the small run (see tests/helpers/app.py) with one planted explanation that
would run script if it were rendered as HTML; the LLM is a scripted OpenAI-compatible server
and the Hub a local fake, both on 127.0.0.1. A screenshot of each panel goes to the test's
temporary folder. Skipped where chromium or Playwright is missing (``make test`` installs both).
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from interp.app import AppConfig, launch
from interp.rundir import RunDir
from tests.helpers.app import CODER, INJECTION, RUN, TOKEN, free_port
from tests.helpers.hub_server import local_hub
from tests.helpers.openai_server import serving

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PLANTED = 100
"""The latent whose explanation is the script injection."""
WAIT = 60_000
"""Milliseconds to wait for the app (a job loads models on a 2-core machine)."""

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.reliability,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Debian's chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def app(workspace, tmp_path_factory):
    """The app on a copy of the workspace with a planted explanation, a scripted LLM server and a local Hub."""
    root = shutil.copytree(
        workspace, tmp_path_factory.mktemp("browser") / "ws", ignore=shutil.ignore_patterns(".gradio")
    )
    line = {
        "coder": CODER,
        "latent": PLANTED,
        "explainer": "default",
        "explanation": INJECTION,
        "status": "ok",
        "model": "planted",
    }
    RunDir(root / RUN).add_explanations([line])
    llm = serving()
    llm.reply = lambda content: " cats and dogs"  # continues the short explainer's "Fires on"
    llm.script = ["sleep"]  # the first request is slow enough to watch the progress
    llm.sleep = 2.0
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(root / ".gradio"))
        with local_hub(mp, root.parent, TOKEN) as hub:
            page = launch(AppConfig(workspace=str(root), run_dir=RUN, port=free_port(), env_token=False), block=False)
            try:
                yield page.local_url, root, llm, hub
            finally:
                page.close()
                llm.shutdown()
                llm.server_close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _field(page, elem_id: str):
    """The text input of a Gradio Textbox, Number or Dropdown."""
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def _rows(page, elem_id: str):
    """The rows of a Gradio Dataframe (it draws them as a virtual list of grid rows)."""
    return page.locator(f"#{elem_id} .virtual-row")


def _tab(page, name: str, shots: Path):
    page.get_by_role("tab", name=name).click()
    return shots / f"{name.lower()}.png"


def test_every_panel_in_a_browser(app, browser, tmp_path):
    url, root, llm, hub = app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)

    # Explore: the first explained latent opens on load, tokens shaded by strength, the value on hover
    page.wait_for_selector("#top .tok.on", timeout=WAIT)
    assert "explanations (default): 1 ok" in page.inner_text("#status")
    first = int(_field(page, "latent").input_value())
    assert f"latent {first}" in page.inner_text("#stats")
    token = page.locator("#top .tok.on").first
    token.hover()
    assert token.get_attribute("title") == token.get_attribute("data-act") and float(token.get_attribute("title")) > 0
    assert page.locator("#histogram img, #histogram canvas, #histogram svg").count() >= 1
    assert page.locator("#quantiles .example").count() >= 1 and _rows(page, "promoted").count() >= 1
    table = page.inner_text("#latents")
    assert "<script>window.__pwned=1</script>" in table and "${7*7}" in table  # shown as text
    _rows(page, "latents").filter(has_text="__pwned").first.click()
    page.wait_for_function(f"document.querySelector('#stats')?.innerText.includes('latent {PLANTED}')", timeout=WAIT)
    assert _field(page, "latent").input_value() == str(PLANTED)
    assert '<img src=x onerror="window.__pwned=2">' in page.inner_text("#explanations")
    _field(page, "query").fill("pwned")
    page.click("#search")
    page.wait_for_function("document.querySelectorAll('#latents .virtual-row').length === 1", timeout=WAIT)
    _field(page, "my-text").fill("To be, or not to be: that is the question.")
    page.click("#test-text")
    page.wait_for_selector("#text-highlight .example", timeout=WAIT)
    assert _rows(page, "text-latents").count() >= 1
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)

    # Explain: the chosen latent, with an OpenAI-compatible server, with progress while it works
    shot = _tab(page, "Explain", tmp_path)
    page.locator("#explain-llm").get_by_text("LLM").click()
    page.locator("#explain-backend").get_by_text("url", exact=True).click()
    _field(page, "explain-url").fill(llm.base_url)
    _field(page, "explain-server-model").fill("test-model")
    _field(page, "latent").fill(str(first))
    page.click("#explain")
    page.wait_for_selector("text=explaining (short)", timeout=WAIT)  # the library's tqdm bar, shown by Gradio
    page.wait_for_function("document.querySelector('#explain-status')?.innerText.includes('done')", timeout=WAIT)
    assert "cats and dogs" in page.inner_text("#explained") and f"{first}" in page.inner_text("#explained")
    assert any(json.loads(r["body"])["model"] == "test-model" for r in llm.requests)
    page.screenshot(path=str(shot), full_page=True)

    # Score: the explanations of the explainer just used (the app's default, short) by embedding; outcomes per example
    shot = _tab(page, "Score", tmp_path)
    assert _field(page, "score-explainer").input_value() == "short"
    page.click("#score")
    page.wait_for_function("document.querySelector('#summary')?.innerText.includes('auroc')", timeout=WAIT)
    page.wait_for_selector("#plots img", timeout=WAIT)
    page.click("#outcomes")
    page.wait_for_function("document.querySelector('#outcome-metrics')?.innerText.includes('right')", timeout=WAIT)
    calls = _rows(page, "outcome-table").locator('[data-col="0"]').all_inner_texts()
    assert calls and set(calls) <= {"right", "wrong", "failed"}
    page.screenshot(path=str(shot), full_page=True)

    # Intervene: clean and steered continuations side by side, and the next-token changes
    shot = _tab(page, "Intervene", tmp_path)
    _field(page, "prompt").fill("The king said")
    page.locator("#how").get_by_text("strength", exact=True).click()
    _field(page, "value").fill("5")
    page.click("#steer")
    page.wait_for_function("document.querySelector('#steer-summary')?.innerText.includes('KL')", timeout=WAIT)
    assert "add 5" in page.inner_text("#steer-summary")
    clean, steered = _field(page, "clean").input_value(), _field(page, "steered").input_value()
    assert clean and steered and clean != steered
    assert _rows(page, "changes").count() >= 1
    page.screenshot(path=str(shot), full_page=True)

    # Publish: preview, then push with a typed token that is cleared and never shown
    shot = _tab(page, "Publish", tmp_path)
    page.click("#preview")
    page.wait_for_function("document.querySelector('#card')?.innerText.includes('interp')", timeout=WAIT)
    assert _rows(page, "preview-rows").count() == 5
    _field(page, "repo").fill("me/browser-set")
    token_box = page.locator("#token input[type=password], #token textarea").first
    token_box.fill(TOKEN)
    page.click("#publish")
    page.wait_for_function(
        "document.querySelector('#publish-result')?.innerText.includes('Published to')", timeout=WAIT
    )
    assert token_box.input_value() == "" and TOKEN not in page.content()
    assert "me/browser-set" in hub.repos and hub.repos["me/browser-set"].head.files
    page.screenshot(path=str(shot), full_page=True)

    # A path out of the workspace and a missing run are refused with a clear message
    for typed, message in (("../../etc", "outside the workspace"), ("runs/missing", "There is no run directory")):
        _field(page, "run").fill(typed)
        _field(page, "run").press("Enter")
        page.click("#open")
        page.wait_for_selector(f"text={message}", timeout=WAIT)
    page.screenshot(path=str(tmp_path / "errors.png"), full_page=True)

    assert page.evaluate("window.__pwned") is None and errors == []
    assert TOKEN.encode() not in b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "errors.png",
        "explain.png",
        "explore.png",
        "intervene.png",
        "publish.png",
        "score.png",
    ]
    page.close()
    if os.environ.get("INTERP_KEEP_SCREENSHOTS"):
        shutil.copytree(tmp_path, os.environ["INTERP_KEEP_SCREENSHOTS"], dirs_exist_ok=True)


def test_a_missing_default_run_is_explained_and_offered_to_build(app, browser, tmp_path):
    _, root, _, _ = app
    missing = launch(AppConfig(workspace=str(root), run_dir="runs/demo", port=free_port()), block=False)
    try:
        page = browser.new_page()
        page.goto(missing.local_url)
        page.wait_for_function(
            "document.querySelector('#status')?.innerText.includes('Cannot open the run')", timeout=WAIT
        )
        status = page.inner_text("#status")
        assert "There is no run directory 'runs/demo' in the workspace" in status and "runs/small" in status
        assert page.locator("#build").is_visible() and "runs/demo" in page.inner_text("#build")
        page.screenshot(path=str(tmp_path / "missing.png"), full_page=True)
        page.close()
    finally:
        missing.close()
