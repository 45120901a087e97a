"""The HTML summary of an evaluation (reports/eval/index.html): operating point, metrics tables, image-level
detection, polyp-free negatives, robustness, the quality trend over registered versions, calibration, plots
and overlays; and the quality trend's own page (bin/quality_trend.py's index.html)."""

from __future__ import annotations

import html

COLUMNS = (
    "n_images",
    "dice_mean",
    "iou_mean",
    "precision_mean",
    "recall_mean",
    "dice_median",
    "dice_pooled",
    "iou_pooled",
    "average_precision",
    "ece",
)
IMAGE_LEVEL = (
    "n_positive",
    "true_positives",
    "sensitivity",
    "n_negative",
    "true_negatives",
    "specificity",
    "balanced_accuracy",
)
NEGATIVES = ("n_images", "fp_image_rate", "fp_area_mean", "detected_rate")


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _table(first: str, columns: tuple[str, ...], rows: dict[str, dict]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (first, *columns))
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_cell(row.get(c, ''))}</td>" for c in columns)
        + "</tr>"
        for name, row in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _decision_section(decision, results: dict[str, dict]) -> str:
    levels = {s: m["image_level"] for s, m in results.items() if "image_level" in m}
    return f"""<h2>Operating point</h2>
<p>Pixel threshold <b>{decision.threshold}</b>; an image shows a polyp when the predicted polyp area is at
least <b>{decision.min_area_fraction:.4g}</b> of the image. Chosen on {html.escape(decision.chosen_on)}
(<a href="decision.json">decision.json</a>); every split below is reported at these numbers.</p>
<h3>Image level: polyp detected?</h3>
<p>Positives are the split's images (each shows a polyp); negatives are its polyp-free crops
(and any image with an empty mask). Sensitivity = detected positives; specificity = negatives left alone.</p>
{_table("split", IMAGE_LEVEL, levels)}"""


def _negatives_section(negatives: dict) -> str:
    return f"""<h2>Polyp-free negatives</h2>
<p>Crops of each split's frames that stay clear of the ground-truth mask, at several sizes, resized to the
model input; every pixel is background. A crop is a false alarm when more than
{negatives["fp_area"]:.0%} of it is predicted polyp (<code>fp_image_rate</code>); <code>detected_rate</code>
applies the image-level rule.
<a href="negatives/metrics.json">negatives/metrics.json</a> reports {html.escape(negatives["split"])}.</p>
{_table("split", NEGATIVES, negatives["splits"])}
<p>Crops of {html.escape(negatives["split"])} with the most predicted polyp area (red):</p>
<img class="montage" src="negatives/montage.png" alt="negative crops with the most predicted area">"""


def _robustness_section(robustness: dict) -> str:
    rows = {
        f"{name} {s}": {**r, "params": ", ".join(f"{k}={v}" for k, v in r["params"].items())}
        for name, severities in robustness["corruptions"].items()
        for s, r in sorted(severities.items(), key=lambda item: int(item[0]))
    }
    return f"""<h2>Robustness</h2>
<p>Mean per-image Dice on {robustness["n_images"]} {html.escape(robustness["split"])} images under each
corruption (lib/corruptions.py; seeded, the same every run), at threshold {robustness["threshold"]}.
Clean: {robustness["dice_clean"]:.4f}; mean drop {robustness["mean_dice_drop"]:.4f}; worst
{html.escape(robustness["worst"])}. <a href="robustness.json">robustness.json</a></p>
<div class="row"><img src="robustness.png" alt="Dice against corruption severity"></div>
{_table("corruption severity", ("params", "dice_mean", "dice_drop"), rows)}"""


def render_index(
    results: dict[str, dict],
    metadata: dict,
    decision=None,
    negatives: dict | None = None,
    robustness: dict | None = None,
    trend: str | None = None,
) -> str:
    """One self-contained page; image paths are relative to the page's folder.

    `decision` is a lib.decision.Decision; `negatives` and `robustness` the dicts bin/evaluate.py
    writes to negatives/metrics.json and robustness.json; `trend` the HTML of trend_section.
    Sections whose input is None are left out.
    """
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
<p>Calibration of the pixel probabilities: expected calibration error {_cell(results[s].get("ece", ""))}
over {results[s].get("calibration_bins", "")} equal-width bins (pixel-weighted mean gap between the share
of polyp pixels and the mean probability in each bin; 0 is perfect).</p>
<div class="row"><img src="{s}/reliability.png" alt="reliability diagram {s}"></div>
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
.row img {{ max-width: 48%; margin-right: 1%; vertical-align: top; }} .montage {{ max-width: 100%; }}
code {{ background: #f3f3f3; padding: 0 .2rem; }}
tr.regression {{ background: #fde0dc; }} tr.candidate {{ background: #fff6d5; }} .trend {{ max-width: 100%; }}
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
{_decision_section(decision, results) if decision else ""}
{_negatives_section(negatives) if negatives else ""}
{_robustness_section(robustness) if robustness else ""}
{trend or ""}
{sections}
</body></html>
"""


def trend_section(trend, png: str = "trend.png") -> str:
    """The "Quality trend" section of a lib.trend.Trend: a table and the PNG at the relative path `png`."""
    t, v = trend.test_split, trend.val_split
    columns = (
        "version",
        "created (UTC)",
        "aliases",
        f"{t} Dice",
        f"{t} IoU",
        f"{v} Dice",
        "model git",
        "data rev",
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (*columns, "metrics from", "regression", "note"))
    rows = []
    for p in trend.points:
        regression = ""
        if p.regression:
            regression = f"REGRESSION: {p.below_best:.4f} below {p.best_earlier}"
        elif p.below_best is not None:
            regression = f"{-p.below_best:+.4f} vs best earlier ({p.best_earlier})"
        cells = (
            p.label,
            p.created[:16].replace("T", " "),  # minutes are enough here; trend.json keeps the full time
            ", ".join(p.aliases),
            "not evaluated" if p.test_dice is None else p.test_dice,
            "" if p.test_iou is None else p.test_iou,
            "" if p.val_dice is None else p.val_dice,
            p.git_sha[:10],
            p.data_rev[:12],
            p.metrics_from,
            regression,
            p.note,
        )
        style = ' class="regression"' if p.regression else ' class="candidate"' if p.version is None else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>")
    source = f"registered model <code>{html.escape(trend.model_name)}</code>" if trend.model_name else ""
    where = f" in <code>{html.escape(trend.tracking_uri)}</code>" if trend.tracking_uri else ""
    note = f'<p class="note"><b>Note:</b> {html.escape(trend.note)}</p>' if trend.note else ""
    table = f"<table><tr>{head}</tr>{''.join(rows)}</table>" if rows else ""
    candidate = ""
    if any(p.version is None for p in trend.points):
        candidate = " The candidate (last row, starred in the plot) is this evaluation, not registered."
    return f"""<h2>Quality trend</h2>
<p>{html.escape(trend.test_split)} Dice and IoU (mean over images) of every version of the {source}{where},
from the evaluation metrics logged to each version's run.{candidate} A version is a <b>regression</b>
when its {html.escape(trend.test_split)} Dice is more than {trend.tolerance:g} below the best earlier
version's.</p>
{note}
<img class="trend" src="{html.escape(png)}" alt="Dice and IoU per registered version">
{table}"""


def trend_page(trend) -> str:
    """A self-contained page with the section (bin/quality_trend.py's index.html)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polypseg quality trend</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 1100px; }}
.banner {{ background: #b00020; color: white; padding: .6rem 1rem; font-weight: bold; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
tr.regression {{ background: #fde0dc; }} tr.candidate {{ background: #fff6d5; }}
.trend {{ max-width: 100%; }} code {{ background: #f3f3f3; padding: 0 .2rem; }}
</style></head><body>
<div class="banner">Research software. NOT FOR CLINICAL USE.</div>
<h1>polypseg quality trend</h1>
<p>The registry as it is now; <a href="trend.json">trend.json</a> holds the table.</p>
{trend_section(trend)}
</body></html>
"""
