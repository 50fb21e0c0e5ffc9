"""The player page in a real headless Chromium against the running system (live server + real worker).

Needs Debian's ``chromium`` and the ``playwright`` package (its bundled browsers are not used).
The screenshot is saved to ``docs/player.png``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.segment import split_text

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("worker")]

CHROMIUM = os.environ.get("SPOOL_CHROMIUM", "/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
]

TEXT = "Progressive playback starts at once. The rest renders while you listen. Then the job is done."

#: Milliseconds to wait for the job (three short sentences on a busy 2-core machine).
JOB_TIMEOUT_MS = 240_000

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "player.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SPOOL_CHROMIUM)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_audio_plays_before_the_job_finishes(browser: Any, live_server: Any) -> None:
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.goto(live_server.url + "/")
    # The voice list comes from /v1/voices.
    page.wait_for_function("document.querySelectorAll('#voice option').length > 10")
    assert page.eval_on_selector("#voice", "el => el.value") == "af_heart"
    page.fill("#text", TEXT)
    page.click("#submit")
    # Audio must be heard (the context clock past the first buffer) while the job is still rendering:
    # the page records the job state it saw at that moment.
    page.wait_for_function(
        """() => {
            const p = window.spoolPlayer;
            if (p.playedSeconds > 0 && window.__stateWhenPlaying === undefined) {
                window.__stateWhenPlaying = p.jobState;
            }
            return window.__stateWhenPlaying !== undefined;
        }""",
        polling=20,
        timeout=JOB_TIMEOUT_MS,
    )
    state_when_playing = page.evaluate("window.__stateWhenPlaying")
    assert state_when_playing in ("queued", "running"), (state_when_playing, console)
    page.wait_for_function("window.spoolPlayer.jobState === 'succeeded'", timeout=JOB_TIMEOUT_MS)
    page.wait_for_function("window.spoolPlayer.percent >= 100", timeout=10_000)
    assert page.inner_text("#progress-text").endswith("100%")
    segments = len(split_text(TEXT))
    assert f"{segments} / {segments}" in page.inner_text("#progress-text")
    # Captions: every segment became a span, one of them highlighted while it is spoken.
    page.wait_for_function(f"document.querySelectorAll('#transcript .seg').length === {segments}")
    page.wait_for_function("document.querySelector('#transcript .seg.speaking') !== null", timeout=30_000)
    # The download link and the recent jobs list show the finished job.
    assert page.is_visible("#download")
    job_id = page.evaluate("window.spoolPlayer.jobId")
    page.wait_for_selector(f'#jobs li[data-job-id="{job_id}"] .badge.succeeded', timeout=10_000)
    events = page.evaluate("window.spoolPlayer.events")
    assert events[0] == "state" and "chunk" in events and "end" in events
    assert not [line for line in console if line.startswith(("error", "pageerror"))], console
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()


def test_errors_are_shown(browser: Any, live_server: Any) -> None:
    page = browser.new_page()
    page.goto(live_server.url + "/")
    page.wait_for_function("document.querySelectorAll('#voice option').length > 10")
    page.fill("#text", "x" * 10)
    page.evaluate("document.querySelector('#speed').value = '1'")
    # An API-level rejection (a voice the server does not know) reaches the page as a readable message.
    page.evaluate(
        """() => {
            const opt = document.createElement('option');
            opt.value = 'af_nobody'; opt.textContent = 'nobody';
            document.querySelector('#voice').appendChild(opt);
            document.querySelector('#voice').value = 'af_nobody';
        }"""
    )
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "af_nobody" in page.inner_text("#error")
    page.close()


def test_a_book_is_uploaded_rendered_and_its_chapter_plays(
    browser: Any, live_server: Any, tmp_path: Path
) -> None:
    book = tmp_path / "tiny.md"
    book.write_text("# Tiny\n\n## First\n\nA short first chapter.\n\n## Second\n\nAnd a second one.\n")
    page = browser.new_page(viewport={"width": 1000, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_server.url + "/")
    page.wait_for_function("document.querySelectorAll('#voice option').length > 10")
    page.set_input_files("#book-file", str(book))
    # Other tests' books may be listed too: follow the one this upload created.
    with page.expect_response(
        lambda r: r.url.endswith("/v1/books") and r.request.method == "POST", timeout=30_000
    ) as posted:
        page.click("#book-submit")
    assert posted.value.status == 202, posted.value.text()
    book_id = posted.value.json()["id"]
    page.wait_for_selector(f'#books li.book[data-book-id="{book_id}"]', timeout=30_000)
    # The chapters are listed once a light worker has parsed the upload (the page polls meanwhile).
    page.wait_for_selector(f'#books li[data-book-id="{book_id}"] .chapters li[data-chapter="2"]', timeout=60_000)
    assert page.locator(f'#books li[data-book-id="{book_id}"] .chapters li').count() == 2
    page.wait_for_selector(f'#books li[data-book-id="{book_id}"] .badge.succeeded', timeout=JOB_TIMEOUT_MS)
    page.click(f'#books li[data-book-id="{book_id}"] .chapters li[data-chapter="1"] .play-chapter')
    page.wait_for_function("document.querySelector('#book-audio').currentTime > 0.2", timeout=30_000)
    assert "First" in page.inner_text("#book-now")
    assert page.is_visible(f'#books li[data-book-id="{book_id}"] a.download-book')
    assert not errors, errors
    page.close()
