"""The live-caption page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Chromium's fake microphone plays a speech file (``--use-file-for-fake-audio-capture``); the page
streams it to ``/v1/realtime`` and the test waits until final captions appear. The upload form is
exercised too. Set ``QWEN3_ASR_SCREENSHOT=path.png`` to keep a screenshot of the captions
(docs/live-captions.png was made so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from tests.harness import GATEWAY_API_KEY
from tests.test_realtime import SENTENCES, sentences_pcm, write_wav

pytestmark = pytest.mark.server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail("the page test needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright, CHROMIUM


def test_live_captions_and_upload(triton_server, browser, tmp_path):
    playwright, executable = browser
    rate = 24000
    wav = write_wav(tmp_path / "speech.wav", sentences_pcm(rate), rate)
    chromium = playwright.chromium.launch(
        executable_path=executable,
        headless=True,
        args=[
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    try:
        page = chromium.new_page(viewport={"width": 960, "height": 640})
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"{triton_server.openai_url}/")
        page.fill("#key", GATEWAY_API_KEY)
        page.fill("#language", "en")
        page.click("#start")
        finals = page.locator("#captions p.final")
        try:
            finals.nth(1).wait_for(timeout=120_000)
        except Exception:
            raise AssertionError(
                f"no final captions; status {page.text_content('#status')!r}, console {console[-10:]},"
                f" captions {page.inner_html('#captions')[:2000]}"
            ) from None
        assert finals.count() >= 2
        # Each final keeps its time span; with word times, each word's span is on hover (title).
        assert "–" in finals.first.locator(".time").text_content()
        words = finals.first.locator(".word")
        if words.count():
            assert words.first.get_attribute("title").endswith(" s")
        # For the screenshot: the next sentence's partial (greyed) beside the finals, when it shows in time.
        with contextlib.suppress(Exception):
            page.locator("#captions p:not(.final) .partial").first.wait_for(timeout=8_000)
        shot = tmp_path / "live-captions.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size < 300_000
        target = os.environ.get("QWEN3_ASR_SCREENSHOT")
        if target:
            shutil.copyfile(shot, target)
        page.click("#stop")

        # The upload form: POST /v1/audio/transcriptions (verbose_json) with the key typed in.
        page.set_input_files("#file", str(wav))
        page.click("#upload button[type=submit]")
        # (a locator, not wait_for_function: the page's Content-Security-Policy forbids eval)
        page.locator("#upload-result", has_text="language:").wait_for(timeout=120_000)
        assert "error" not in page.text_content("#upload-result")[:10]
        assert len(SENTENCES) >= 2
    finally:
        chromium.close()
