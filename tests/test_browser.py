"""The demo page in headless Debian chromium (Playwright), against a real gunicorn with the tiny model."""

from pathlib import Path

import pytest

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
        page.wait_for_function("document.getElementById('model-version').textContent.includes('tiny')")
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
