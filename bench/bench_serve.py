"""``sam2-fast serve``: click-to-overlay latency in a real browser, and ``/segment`` requests/s.

    pytest bench/bench_serve.py -s

The real command (``sam2-fast serve --random-weights``, sam2.1-hiera-tiny with seeded random
weights, fp32, on the CPU) in a child process; headless Debian Chromium through Playwright.
Random weights change the masks, not the work: the decoder and the RLE run the same either way.

* **click -> overlay**: the sample image (768x512); 20 clicks at different places, the
  object's prompts cleared between clicks; the page times each from its mouse-up handler to
  the animation frame after the mask is drawn (request, decoder, RLE, decode and paint).
  p50 / p95, at the default model input (1024) and at 256.
* **/segment requests/s**: 4 clients in threads, each with its own uploaded image, each
  sending 25 single-click requests back to back over its own connection; against 1 client.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from serve_support import png  # noqa: E402
from test_serve_browser import browser_page, click_at, require_browser, serve_process, wait_ready  # noqa: E402

from sam2_fast.sample import sample_image  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CLICKS = 20
REQUESTS = 25
RESULTS = {}


@pytest.fixture(scope="module", params=[1024, 256], ids=lambda s: f"input{s}")
def server(request, tmp_path_factory):
    require_browser()
    with serve_process(tmp_path_factory.mktemp("server"), image_size=request.param) as url:
        yield request.param, url


def _percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def test_click_to_overlay_latency(server, tmp_path):
    image_size, url = server
    path = tmp_path / "sample.png"
    path.write_bytes(png(sample_image()))
    rng = np.random.default_rng(0)
    with browser_page(url) as page:
        page.set_input_files("#file", str(path))
        wait_ready(page)
        for k in range(CLICKS):
            page.click("#clear-object")
            x, y = rng.uniform(20, 748), rng.uniform(20, 492)
            click_at(page, x, y)
            wait_ready(page, k + 1)
        timings = page.evaluate("window.sam2.timings")
    assert len(timings) == CLICKS
    RESULTS[("click", image_size)] = (_percentile(timings, 50), _percentile(timings, 95))
    print(f"\nclick -> overlay, input {image_size}: p50 {RESULTS[('click', image_size)][0]:.0f} ms, "
          f"p95 {RESULTS[('click', image_size)][1]:.0f} ms over {CLICKS} clicks")


@pytest.mark.parametrize("clients", [1, 4])
def test_segment_requests_per_second(server, clients):
    import httpx

    image_size, url = server
    data = png(sample_image())
    sessions = []
    for _ in range(clients):
        client = httpx.Client(base_url=url, timeout=120)
        image_id = client.post("/api/images", files={"file": ("s.png", data, "image/png")}).json()["image_id"]
        client.post(f"/api/images/{image_id}/segment", json={"points": [[230, 250]], "labels": [1]})  # warm
        sessions.append((client, image_id))
    start = threading.Barrier(clients + 1)
    latencies = [[] for _ in range(clients)]

    def user(k: int) -> None:
        client, image_id = sessions[k]
        start.wait()
        for i in range(REQUESTS):
            t0 = time.perf_counter()
            r = client.post(f"/api/images/{image_id}/segment",
                            json={"points": [[100 + 20 * i, 250]], "labels": [1]})
            latencies[k].append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text

    threads = [threading.Thread(target=user, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    for client, _ in sessions:
        client.close()
    rate = clients * REQUESTS / seconds
    flat = [v * 1000 for lat in latencies for v in lat]
    RESULTS[("rps", image_size, clients)] = rate
    print(f"\n/segment, input {image_size}, {clients} client(s): {rate:.1f} requests/s, "
          f"latency p50 {_percentile(flat, 50):.0f} ms, p95 {_percentile(flat, 95):.0f} ms")
