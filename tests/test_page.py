"""The search page in a real browser: headless Chromium (Debian's ``chromium`` package, which
``scripts/browser.sh`` installs) driven by Playwright against a live ``eercf serve`` on
127.0.0.1. Set ``EERCF_SCREENSHOT=PATH`` to save a screenshot of the results page."""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time

import pytest
import torch

import eercf
from eercf.cli import main
from eercf.model import EERCF
from eercf.model.config import get_model_config
from eercf.model.tokenizer import CLIPTokenizer
from eercf.serve import create_app
from test_index_cli import write_video

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/lib/chromium/chromium",
                             shutil.which("chromium-browser")) if p and os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium "
                                "(bash scripts/browser.sh installs it)")
SHAPES = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230),
          "yellow": (235, 210, 40), "white": (235, 235, 235)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    torch.manual_seed(0)
    model = EERCF(get_model_config("tiny"))
    model.tokenizer = CLIPTokenizer.train([f"a {c} square crosses" for c in SHAPES] * 3, 600)
    eercf.save_model(model, root / "model")
    for name, colour in SHAPES.items():
        write_video(root / "media" / f"{name}.mp4", colour, frames=40, fps=10, size=(160, 120))
    assert main(["index", str(root / "media"), "--model", str(root / "model"), "--index",
                 str(root / "index"), "--workers", "0"]) == 0
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(root / "index", media_root=root / "media")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


def test_search_shows_hits_and_the_player_opens_at_the_moment(server, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    # the tiny random model's moments mostly start at 0 s: move the first hit's moment so that
    # the seek is visible (the rest of the answer is the service's own)
    def later_moment(route):
        response = route.fetch()
        body = response.json()
        body["hits"][0]["moment"] = {"time": 2.05, "start": 1.75, "end": 2.55}
        body["hits"][0]["moments"] = [{"start": 1.75, "end": 2.55, "score": 3.0},
                                      {"start": 0.25, "end": 0.75, "score": 2.0}]
        route.fulfill(response=response, body=json.dumps(body))
    page.route("**/api/search?*", later_moment)
    page.goto(server + "/")
    page.fill("#q", "a red square crosses")
    page.press("#q", "Enter")
    page.wait_for_selector(".hit img")
    page.wait_for_function("[...document.querySelectorAll('.hit img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator(".hit").count() == len(SHAPES)
    assert "?q=a+red+square" in page.url or "?q=a%20red%20square" in page.url
    assert page.locator(".hit .cell:not([hidden])").count() == len(SHAPES)  # every patch outlined
    assert "fused" in page.locator(".hit .scores").first.inner_text()
    if os.environ.get("EERCF_SCREENSHOT"):
        page.screenshot(path=os.environ["EERCF_SCREENSHOT"])

    page.locator(".hit button").first.focus()
    page.keyboard.press("Enter")  # keyboard opens the player too
    page.wait_for_function("document.getElementById('player').dataset.seekedTo !== ''",
                           timeout=20_000)
    state = page.evaluate("({t: player.currentTime, err: player.error && player.error.code,"
                          " src: player.currentSrc})")
    assert state["err"] is None and "/media" in state["src"]
    assert 1.75 - 0.05 <= state["t"] <= 2.55 + 0.3
    marks = page.locator("#timeline .mark")  # the timeline marks both moments
    assert marks.count() == 2 and "best" in (marks.first.get_attribute("class") or "")
    marks.nth(1).click()
    page.wait_for_function("player.currentTime < 1.0", timeout=20_000)
    assert "+1 more moment" in page.locator(".hit .id").first.inner_text()
    page.keyboard.press("Escape")
    assert page.locator("#viewer").is_hidden()
    assert not errors


def test_shared_url_no_hits_and_errors_have_messages(server, browser):
    page = browser.new_page()
    page.goto(server + "/?q=" + "a%20blue%20square")
    page.wait_for_selector(".hit")
    assert page.input_value("#q") == "a blue square"

    page.route("**/api/search?*", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"query": "x", "hits": [], "timings": {}, "version": 1})))
    page.fill("#q", "nothing like this")
    page.press("#q", "Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('No videos')")
    page.unroute("**/api/search?*")

    page.fill("#q", "x" * 1000 + "y")  # the box holds 1000 characters: the service never sees more
    assert len(page.input_value("#q")) == 1000
    page.evaluate("document.getElementById('q').removeAttribute('maxlength')")
    page.fill("#q", "x" * 1200)
    page.press("#q", "Enter")
    page.wait_for_function("document.getElementById('status').classList.contains('error')")
    assert "characters" in page.inner_text("#status")


def test_a_video_the_browser_cannot_play_says_so(server, browser):
    page = browser.new_page()
    page.route("**/api/videos/*/media", lambda route: route.fulfill(
        status=200, content_type="video/mp4", body=b"\x00" * 4096))
    page.goto(server + "/?q=a%20green%20square")
    page.wait_for_selector(".hit button")
    page.locator(".hit button").first.click()
    page.wait_for_selector("#viewer-error:not([hidden])", timeout=20_000)
    assert "cannot" in page.inner_text("#viewer-error") or "could not" in page.inner_text("#viewer-error")
