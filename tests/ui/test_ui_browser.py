"""End to end in a real browser: ``streamlit run ui/app.py`` on a free localhost port, headless
Chromium (Debian's ``chromium``) driven by playwright, a question typed into the chat input, the
answer, its sources and the notice found on the page, and a screenshot saved.

``GUIDELINES_UI_SCREENSHOT=docs/screenshot.png`` also writes the screenshot there (the README's
picture; ``scripts/screenshot.sh`` does it) and asks for a longer answer.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_test_data import QUESTION, QUESTION_DOC_TITLE

from assistant.notice import ADVISORY_NOTICE
from tests.conftest import missing, require_module
from ui.server import ServerNotReady, wait_healthy
from ui.views import GIVEN_NOTE, KIND_LABELS

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT_ENV = "GUIDELINES_UI_SCREENSHOT"
SERVER_START_S = 120
ANSWER_TIMEOUT_S = 600  # the server process loads the model (and compiled kernels) on first use
PASSAGES, MAX_TOKENS = 2, 32  # a short prompt and answer: the test's CPU time stays small
SCREENSHOT_PASSAGES, SCREENSHOT_MAX_TOKENS = 3, 96
VIEWPORT = {"width": 1280, "height": 1000}
PAGE_HEIGHT_JS = """() => {
  const h = (id) => document.querySelector(`[data-testid=${id}]`)?.scrollHeight || 0;
  return Math.max(h("stMainBlockContainer") + h("stBottom"), h("stSidebarContent"));
}"""
MAX_SCREENSHOT_HEIGHT = 2400


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    try:
        wait_healthy(url, server, SERVER_START_S)
    except ServerNotReady as e:
        pytest.fail(f"{e}:\n{log.read_text()[-3000:]}")


def _set_slider(page, label: str, value: int) -> None:
    slider = page.get_by_role("slider", name=label)
    slider.focus()
    slider.press("Home")  # its minimum, 1
    for _ in range(value - 1):
        slider.press("ArrowRight")
    assert slider.get_attribute("aria-valuetext") == str(value)


def _set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")


@pytest.fixture
def chromium() -> str:
    """Chromium's path, or skip saying how to install it (checked before any server starts)."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing(f"Chromium is not installed at {CHROMIUM} "
                "(apt-get install chromium chromium-driver; .ci/run does it)")
    require_module("playwright.sync_api", "playwright is in the test extra")
    return CHROMIUM


@pytest.fixture
def served_page(chromium: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    # asked for only once Chromium is known to be there: no index is built for a skipped test
    small_index: Path = request.getfixturevalue("small_index")
    request.getfixturevalue("default_model_path")
    port = _free_port()
    log = tmp_path / "streamlit.log"
    env = {**os.environ, "GUIDELINES_INDEX": str(small_index)}
    env.pop("GUIDELINES_HOME", None)
    cmd = [sys.executable, "-m", "streamlit", "run", "ui/app.py",
           "--server.headless", "true", "--server.address", "127.0.0.1",
           "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
    with log.open("w") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
@pytest.mark.browser
def test_browser_asks_a_question_and_shows_the_notice(chromium: str, served_page: str,
                                                      tmp_path: Path):
    from playwright import sync_api

    screenshot_to = os.environ.get(SCREENSHOT_ENV)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(served_page)
            chat = page.get_by_test_id("stChatInputTextArea")
            chat.wait_for(timeout=ANSWER_TIMEOUT_S * 1000)  # enabled once the model is loaded
            sync_api.expect(chat).to_be_enabled(timeout=ANSWER_TIMEOUT_S * 1000)
            passages = SCREENSHOT_PASSAGES if screenshot_to else PASSAGES
            _set_slider(page, "Passages", passages)
            _set_number(page, "Max tokens", SCREENSHOT_MAX_TOKENS if screenshot_to else MAX_TOKENS)
            page.wait_for_timeout(1500)  # the rerun that takes the new values
            chat.fill(QUESTION)
            chat.press("Enter")

            answer = page.get_by_test_id("stChatMessage").filter(has_text=ADVISORY_NOTICE)
            answer.wait_for(timeout=ANSWER_TIMEOUT_S * 1000)
            text = answer.inner_text()
            assert ADVISORY_NOTICE in text
            assert "Sources" in text and QUESTION_DOC_TITLE in text, text
            links = answer.get_by_role("link", name=QUESTION_DOC_TITLE)
            assert links.count() >= 1 and links.first.get_attribute("href").startswith("http")
            assert "could not be completed" not in text, text
            # one expander per source passage (the evidence sentences' passages have their own)
            source_expanders = answer.get_by_test_id("stExpander").filter(
                has_not_text="the sentence highlighted")
            assert 1 <= source_expanders.count() <= passages
            question_block = page.get_by_test_id("stChatMessage").filter(has_text=QUESTION)
            assert question_block.count() >= 1

            # a cited answer: the model wrote [n] or quoted a passage, never the fallback that
            # lists every passage given (GIVEN_NOTE)
            assert GIVEN_NOTE not in text, text
            cites = re.search(r"\[\d+\]", text.split("Sources")[0])
            assert cites or KIND_LABELS["matched"] in text, text
            if screenshot_to:  # the README's picture must show an answer that cites by number
                assert cites and KIND_LABELS["matched"] not in text, text

            source_expanders.first.click()  # show one passage
            page.wait_for_timeout(500)
            height = min(int(page.evaluate(PAGE_HEIGHT_JS)), MAX_SCREENSHOT_HEIGHT)
            page.set_viewport_size({"width": VIEWPORT["width"], "height": max(height, 600)})
            page.wait_for_timeout(500)  # the whole conversation and sidebar, unscrolled
            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if screenshot_to:
                target = (ROOT / screenshot_to).resolve()
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, target)
        finally:
            browser.close()
