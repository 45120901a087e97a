"""The demo page in headless Debian chromium (Playwright), against a real gunicorn with the tiny model."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.harness import REPO, Gunicorn, sample_image_bytes
from tests.support.tinymodel import TINY_VERSION, write_tiny_model

pytestmark = pytest.mark.integration  # starts real processes: excluded from make test-fast

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT = REPO / "reports" / "browser" / "demo.png"

# Pixels of the overlay canvas with any opacity: the drawn mask.
COUNT_OVERLAY_PIXELS = """() => {
  const c = document.getElementById("overlay");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}"""


def upload_in_demo(browser, port: int, image_path):
    """Open the demo page, upload `image_path` and wait for its overlay: (page, page errors so far)."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"http://127.0.0.1:{port}/")
    page.set_input_files("#file", str(image_path))
    page.wait_for_selector("#overlay[data-ready='1']", timeout=15_000)
    return page, errors


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make chromium installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_demo_page_overlays_mask_and_slider_redraws_without_upload(browser, tmp_path):
    image_path = tmp_path / "kvasir.jpg"
    image_path.write_bytes(sample_image_bytes())
    model_path = write_tiny_model(tmp_path / "model", size=64)
    with Gunicorn(model_path, workers=1) as server:
        page = browser.new_page(viewport={"width": 1000, "height": 1100})
        errors, predicts = [], []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("request", lambda req: predicts.append(req.url) if "/predict" in req.url else None)

        page.goto(f"http://127.0.0.1:{server.port}/")
        banner = page.locator("#banner")
        assert banner.is_visible() and "NOT FOR CLINICAL USE" in banner.inner_text()
        # Not wait_for_function: when its first check fails it polls with eval, which the page's CSP
        # (script-src 'self') blocks, so under load the test failed; expect() polls through locators.
        expect(page.locator("#model-version")).to_contain_text("tiny", timeout=15_000)
        # Nothing of the result area renders before an upload (no broken-image icon).
        assert not page.locator("#stage").is_visible() and not page.locator("#image").is_visible()

        page.set_input_files("#file", str(image_path))
        page.wait_for_selector("#overlay[data-ready='1']", timeout=15_000)
        assert page.locator("#model-version").inner_text() == TINY_VERSION
        assert "ms" in page.locator("#latency").inner_text()
        canvas = page.locator("#overlay")
        assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("622", "529")
        before = page.evaluate(COUNT_OVERLAY_PIXELS)
        assert 0 < before < 622 * 529
        assert page.locator("#detected").inner_text() == "yes"  # some mask, min_area_fraction 0

        # Drag the slider thumb from the middle (0.50) to the right; the overlay is redrawn locally.
        box = page.locator("#threshold").bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] / 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=5)
        page.mouse.up()
        threshold = float(page.locator("#threshold").input_value())
        assert threshold > 0.55
        after = page.evaluate(COUNT_OVERLAY_PIXELS)
        assert after < before  # a higher threshold keeps fewer pixels
        assert page.locator("#detected").inner_text() == ("yes" if after else "no")
        assert page.locator("#threshold-value").inner_text() == f"{threshold:.2f}"
        assert len(predicts) == 1, predicts  # one upload; the slider sent nothing

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert not errors, errors


def test_the_demo_draws_the_served_mask_small_regions_dropped_as_model_json_says(browser, tmp_path):
    # A 64x64 PNG the tiny model reads as a 20x20 polyp and a 2x2 speck; model.json drops regions under
    # 10 % of the largest, so the server's mask and the demo's overlay both hold the polyp alone.
    import cv2
    import numpy as np

    from lib.decision import Decision

    bgr = np.zeros((64, 64, 3), np.uint8)
    bgr[..., 1] = 200
    bgr[5:25, 5:25] = (0, 0, 255)
    bgr[50:52, 50:52] = (0, 0, 255)
    image_path = tmp_path / "speck.png"
    cv2.imwrite(str(image_path), bgr)
    decision = Decision(0.5, 0.0, "test", min_component_ratio=0.1)
    model_path = write_tiny_model(tmp_path / "model", size=64, decision=decision)
    with Gunicorn(model_path, workers=1) as server:
        page, errors = upload_in_demo(browser, server.port, image_path)
        assert page.evaluate(COUNT_OVERLAY_PIXELS) == 400  # the speck's 4 pixels are not drawn
        assert page.locator("#overlay").get_attribute("data-mask-pixels") == "400"
        assert not errors, errors


def test_on_a_large_image_the_demo_labels_regions_on_the_servers_blocks(browser, tmp_path):
    # 600 px: the filter labels 2-px tiles (lib.decision.component_block). A 3-px strip 1 px beside the
    # polyp is part of it on the tile grid (a plain pixel labelling would drop it at 3 % of the
    # polyp), the far speck goes: the demo must draw exactly the server's mask.
    import base64
    import http.client
    import json

    import cv2
    import numpy as np

    from lib.decision import Decision, component_block

    bgr = np.zeros((600, 600, 3), np.uint8)
    bgr[..., 1] = 200
    bgr[100:200, 100:200] = (0, 0, 255)  # the polyp: 10,000 px
    bgr[100:200, 201:204] = (0, 0, 255)  # the strip: 300 px, one background column away
    bgr[500:504, 500:504] = (0, 0, 255)  # the speck: 16 px
    image_path = tmp_path / "large.png"
    cv2.imwrite(str(image_path), bgr)
    assert component_block(600, 600) == 2
    decision = Decision(0.5, 0.0, "test", min_component_ratio=0.1)
    # A 1x1-convolution model at the image's own size: the probability map is the colour rule, unresized.
    model_path = write_tiny_model(tmp_path / "model", size=600, decision=decision)
    with Gunicorn(model_path, workers=1) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/predict", body=image_path.read_bytes(), headers={"Content-Type": "image/png"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and body["component_block"] == 2
        served = cv2.imdecode(np.frombuffer(base64.b64decode(body["mask"]), np.uint8), cv2.IMREAD_GRAYSCALE)
        assert np.count_nonzero(served) == 10_300 and not served[500:504, 500:504].any()
        page, errors = upload_in_demo(browser, server.port, image_path)
        assert page.evaluate(COUNT_OVERLAY_PIXELS) == 10_300
        assert not errors, errors
