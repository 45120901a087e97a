"""The HTML summary of an evaluation (reports/eval/index.html): metrics tables, plots, overlays."""

from __future__ import annotations

import html

COLUMNS = ("n_images", "dice_mean", "iou_mean", "precision_mean", "recall_mean", "dice_median",
           "dice_pooled", "iou_pooled", "average_precision")  # fmt: skip


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def render_index(results: dict[str, dict], metadata: dict) -> str:
    """One self-contained page; image paths are relative to the page's folder."""
    head = "".join(f"<th>{c}</th>" for c in ("split", *COLUMNS))
    body = "".join(
        "<tr>"
        + f"<td>{html.escape(s)}</td>"
        + "".join(f"<td>{_cell(m.get(c, ''))}</td>" for c in COLUMNS)
        + "</tr>"
        for s, m in results.items()
    )
    first = next(iter(results.values()))
    sections = "".join(
        f"""<h2>{html.escape(s)}</h2>
<div class="row"><img src="{s}/pr_curve.png" alt="PR curve {s}">
<img src="{s}/dice_hist.png" alt="Dice histogram {s}"></div>
<p>Overlays: rows are worst, best and random images.
Red fill and outline: prediction; green outline: ground truth.
Per-image numbers: <a href="{s}/per_image.csv">{s}/per_image.csv</a>.</p>
<img class="montage" src="{s}/montage.png" alt="overlay montage {s}">"""
        for s in results
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polypseg evaluation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1100px; }}
.banner {{ background: #b00020; color: white; padding: .6rem 1rem; font-weight: bold; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
.row img {{ max-width: 48%; margin-right: 1%; }} .montage {{ max-width: 100%; }}
code {{ background: #f3f3f3; padding: 0 .2rem; }}
</style></head><body>
<div class="banner">Research software. NOT FOR CLINICAL USE.</div>
<h1>polypseg evaluation</h1>
<p>Model <code>{html.escape(str(metadata.get("model_version")))}</code>, trained at git
<code>{html.escape(str(metadata.get("git_sha", ""))[:10])}</code>,
MLflow run <code>{html.escape(str(metadata.get("run_id")))}</code>.
Evaluated at git <code>{html.escape(str(first.get("git_sha", ""))[:10])}</code>, data revision
<code>{html.escape(str(first.get("data_rev")))}</code>, threshold {first.get("threshold")}.
Metrics are computed at each image's original size; <code>*_mean</code> is the mean over images (the protocol
papers report), <code>*_pooled</code> sums pixels over the split.</p>
<table><tr>{head}</tr>{body}</table>
{sections}
</body></html>
"""
