"""``sam2-fast serve`` end to end: the real command on a free localhost port, its page driven
in headless Chromium (Debian's ``chromium`` through Playwright's ``executable_path``; this
machine cannot download Playwright's own browser build).

In CI (``CI=true`` or ``SAM2_FAST_REQUIRE_BROWSER=1``) a missing browser or Playwright fails the
test; elsewhere it is skipped with the reason. The page's screenshot is saved in
``$SAM2_FAST_TEST_ARTIFACTS`` (default: the test's tmp folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List

import numpy as np
import pytest

from serve_support import IMAGE_HW, IMAGE_SIZE, MODEL, image, png, write_mp4

CHROMIUM = os.environ.get("SAM2_FAST_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("CI", "").lower() == "true" or os.environ.get("SAM2_FAST_REQUIRE_BROWSER") == "1"
VIDEO_FRAMES = 6


def _missing() -> str:
    reasons = []
    for module in ("playwright", "fastapi", "uvicorn", "httpx"):
        try:
            __import__(module)
        except ImportError:
            reasons.append(f"{module} is not installed (pip install 'sam2-fast[test]')")
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        reasons.append(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SAM2_FAST_CHROMIUM)")
    return "; ".join(reasons)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(folder: Path, image_size: int = IMAGE_SIZE) -> Iterator[str]:
    """``sam2-fast serve --random-weights`` in a child process on a free localhost port;
    yields its base URL once ``/healthz`` answers. The server's output goes to
    ``folder/server.log``."""
    import httpx

    port = _free_port()
    log = folder / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sam2_fast.cli", "serve", "--model", MODEL, "--random-weights",
             "--image-size", str(image_size), "--device", "cpu", "--port", str(port), "--max-frames", "20",
             "--quiet"],
            stdout=out, stderr=subprocess.STDOUT, cwd=folder,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sam2-fast serve did not start (exit {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def require_browser() -> None:
    """Skip (fail in CI) when Chromium, Playwright or the serve extra is missing."""
    missing = _missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"the browser test must run in CI but cannot: {missing}")
        pytest.skip(missing)


@contextlib.contextmanager
def browser_page(url: str) -> Iterator[Any]:
    """A headless Chromium page on ``url``, once the page says it is ready; fails if the page
    raised a JavaScript error."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1100, "height": 700}, accept_downloads=True)
        page = context.new_page()
        errors: List[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_selector("body[data-state=ready]")
        yield page
        assert not errors, errors
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    with serve_process(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server) as page:
        yield page


def click_at(page, x: float, y: float, button: str = "left") -> None:
    """Click pixel ``(x, y)`` of the shown image (or frame)."""
    box = page.locator("#overlay").bounding_box()
    width, height = page.evaluate("[window.sam2.width, window.sam2.height]")
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height,
                     button=button)


def wait_ready(page, clicks: int = None) -> None:
    page.wait_for_function("window.sam2.id && !window.sam2.busy", timeout=60_000)
    if clicks is not None:
        page.wait_for_function(f"window.sam2.timings.length >= {clicks}", timeout=60_000)
    status = page.locator("#status")
    assert "error" not in (status.get_attribute("class") or ""), status.text_content()


def overlay_pixels(page) -> int:
    return page.evaluate("""() => {
        const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }""")


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SAM2_FAST_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_click_on_an_image_draws_the_apis_mask(server, page, tmp_path):
    import httpx

    from sam2_fast.ops.rle import rle_area

    path = tmp_path / "sample.png"
    path.write_bytes(png(image()))
    page.set_input_files("#file", str(path))
    wait_ready(page)
    assert page.evaluate("[window.sam2.height, window.sam2.width]") == list(IMAGE_HW)
    clicks = len(page.evaluate("window.sam2.timings"))
    click_at(page, 100, 120)
    wait_ready(page, clicks + 1)
    area = int(page.locator("#objects li[data-obj-id='1']").get_attribute("data-area"))
    assert area > 0 and overlay_pixels(page) >= area
    sent = page.evaluate("window.sam2.objects[0].prompts[0]")
    assert sent["labels"] == [1] and abs(sent["points"][0][0] - 100.5) < 1 and abs(sent["points"][0][1] - 120.5) < 1

    # the API, asked for the same click on the same image, answers the mask the page drew
    with httpx.Client(base_url=server, timeout=60) as api:
        image_id = api.post("/api/images", files={"file": ("sample.png", path.read_bytes(), "image/png")}).json()["image_id"]
        answer = api.post(f"/api/images/{image_id}/segment", json={"points": sent["points"], "labels": [1]}).json()
    best = int(np.argmax(answer["scores"]))
    assert rle_area(answer["masks"][best]) == area
    assert page.evaluate("window.sam2.masks[0][1]") == answer["masks"][best]

    click_at(page, 250, 60, button="right")  # a background point refines the same object
    wait_ready(page, clicks + 2)
    assert page.evaluate("window.sam2.objects[0].prompts[0].labels") == [1, 0]
    page.screenshot(path=str(artifacts(tmp_path) / "serve_image.png"))


def test_upload_a_video_click_track_and_download_the_rle(page, tmp_path):
    from sam2_fast.sample import sample_video_objects

    video = write_mp4(tmp_path / "clip.mp4", VIDEO_FRAMES)
    page.set_input_files("#file", str(video))
    wait_ready(page)
    assert page.evaluate("window.sam2.numFrames") == VIDEO_FRAMES
    assert page.locator("#video-controls").is_visible()
    clicks = len(page.evaluate("window.sam2.timings"))
    x, y = sample_video_objects(0, 192, 256)["disc"]
    click_at(page, x, y)
    wait_ready(page, clicks + 1)
    assert int(page.locator("#objects li[data-obj-id='1']").get_attribute("data-area")) > 0

    page.click("#track")
    page.wait_for_function("window.sam2.tracked", timeout=120_000)
    wait_ready(page)
    assert sorted(map(int, page.evaluate("Object.keys(window.sam2.masks)"))) == list(range(VIDEO_FRAMES))
    assert page.evaluate("document.getElementById('progress').hidden")

    page.locator("#frame").fill(str(VIDEO_FRAMES - 1))  # the slider shows a tracked frame
    page.wait_for_function(f"window.sam2.frame === {VIDEO_FRAMES - 1}")
    page.wait_for_timeout(300)

    with page.expect_download() as download:
        page.click("button[data-format=rle]")
    doc = json.loads(Path(download.value.path()).read_text())
    assert doc["videos"][0]["length"] == VIDEO_FRAMES
    assert sorted(a["frame_index"] for a in doc["annotations"]) == list(range(VIDEO_FRAMES))
    assert all(a["obj_id"] == 1 for a in doc["annotations"])
    masks = page.evaluate("window.sam2.masks")
    for a in doc["annotations"]:
        assert a["segmentation"] == masks[str(a["frame_index"])]["1"]
    page.screenshot(path=str(artifacts(tmp_path) / "serve_video.png"))
