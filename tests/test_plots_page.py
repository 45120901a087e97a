"""bin/plots_page.py makes DVC's plots page work offline: the CDN scripts become one local bundle."""

from __future__ import annotations

from bin_helpers import load_bin

plots_page = load_bin("plots_page")

# The head DVC (dvc-render) writes for Vega plots.
DVC_HEAD = """<head>
    <title>DVC Plot</title>
    <script src="https://cdn.jsdelivr.net/npm/vega@5.20.2"></script>
    <script src="https://cdn.jsdelivr.net/npm/vega-lite@5.2.0"></script>
    <script src="https://cdn.jsdelivr.net/npm/vega-embed@6.18.2"></script>
</head><body><div id="p"></div><script>vegaEmbed('#p', {});</script></body>"""


def test_cdn_scripts_become_the_local_bundle_in_their_place():
    html = plots_page.make_offline(DVC_HEAD)
    assert "cdn.jsdelivr.net" not in html
    assert html.count('<script src="vega-bundle.js"></script>') == 1
    assert html.index("vega-bundle.js") < html.index("vegaEmbed(")  # loaded before the page uses it


def test_page_without_vega_is_left_alone():
    html = "<html><body><img src='a.png'></body></html>"
    assert plots_page.make_offline(html) == html


def test_the_bundle_defines_what_the_page_calls():
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    assert "window.vegaEmbed=" in bundle and "window.vega=" in bundle
