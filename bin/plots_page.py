#!/usr/bin/env python3
"""Render `dvc plots show` to a page that works offline, open it in headless Chromium, screenshot it.

Usage: bin/plots_page.py [--out reports/plots] [--min-plots 8] [--diff REV] [--no-browser]

DVC's page loads Vega, Vega-Lite and vega-embed from a CDN, which CI runners and this machine cannot
always reach: the page would show nothing. This script swaps those script tags for the same libraries
bundled by vl-convert (vega-bundle.js beside the page), then checks in Chromium that every plot drew
(a Vega chart as SVG or canvas, an image plot as a decoded image). Exit 1 when fewer than --min-plots
drew; the screenshot (plots.png) is written either way. NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CDN_SCRIPT = re.compile(r'\s*<script src="https://cdn\.jsdelivr\.net/npm/vega[^"]*"></script>')
BUNDLE = "vega-bundle.js"


def make_offline(html: str) -> str:
    """DVC's page with its CDN script tags replaced by one local bundle."""
    if not CDN_SCRIPT.search(html):
        return html  # no Vega plots on the page (images only), or DVC changed its template
    first = CDN_SCRIPT.search(html).start()
    html = CDN_SCRIPT.sub("", html)
    return html[:first] + f'\n    <script src="{BUNDLE}"></script>' + html[first:]


def drawn_plots(page_path: Path, screenshot: Path) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(1500)  # vega-embed renders asynchronously after load
        counts = page.evaluate(
            """() => ({
                charts: [...document.querySelectorAll('.vega-embed')]
                    .filter(e => e.querySelector('svg.marks, canvas.marks')).length,
                images: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
                broken_images: [...document.images].filter(i => i.complete && i.naturalWidth === 0).length,
            })"""
        )
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {**counts, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="reports/plots")
    p.add_argument("--min-plots", type=int, default=8, help="plots dvc.yaml declares (fewer drawn fails)")
    p.add_argument("--diff", metavar="REV", help="dvc plots diff REV (the workspace against REV), not show")
    p.add_argument("--no-browser", action="store_true", help="write the offline page only, no Chromium check")
    args = p.parse_args(argv)
    out = Path(args.out)
    what = ["diff", args.diff] if args.diff else ["show"]
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", *what, "--out", str(out)], text=True)
    if shown.returncode != 0:
        print(f"plots_page: dvc plots {' '.join(what)} failed (run make all first)", file=sys.stderr)
        return 1
    import vl_convert

    (out / BUNDLE).write_text(vl_convert.javascript_bundle())
    index = out / "index.html"
    index.write_text(make_offline(index.read_text()))
    if args.no_browser:
        print(f"plots_page: {index} (offline page, not opened)")
        return 0
    if not Path(CHROMIUM).exists():
        print(f"plots_page: {CHROMIUM} is missing (make chromium)", file=sys.stderr)
        return 1
    seen = drawn_plots(index, out / "plots.png")
    drawn = seen["charts"] + seen["images"]
    ok = drawn >= args.min_plots and not seen["broken_images"] and not seen["errors"]
    print(
        f"plots_page: {seen['charts']} charts and {seen['images']} images drew"
        f" ({seen['broken_images']} broken, {len(seen['errors'])} page errors) -> {out}/plots.png"
    )
    for error in seen["errors"]:
        print(f"plots_page: page error: {error}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
