"""Evaluation plots rendered to PNG bytes (the caller writes them): PR curve, per-image Dice histogram,
reliability diagram, Dice under corruptions, and the quality trend over registered versions."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def pr_curve_png(curve: dict, threshold: float, title: str) -> bytes:
    """Pooled precision-recall curve over thresholds, with the operating threshold marked."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot(curve["recall"], curve["precision"], lw=2)
    k = int(np.argmin(np.abs(np.asarray(curve["thresholds"]) - threshold)))
    ax.scatter(
        [curve["recall"][k]], [curve["precision"][k]], color="red", zorder=3, label=f"threshold {threshold}"
    )
    ax.set(xlabel="recall (pixels)", ylabel="precision (pixels)", xlim=(0, 1.01), ylim=(0, 1.01))
    ax.set_title(f"{title}: AP {curve['average_precision']:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _png(fig)


def dice_histogram_png(dice: list[float], title: str) -> bytes:
    """Histogram of per-image Dice with the mean and median marked."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    ax.hist(dice, bins=np.linspace(0, 1, 41), color="#4477aa")
    ax.axvline(float(np.mean(dice)), color="red", label=f"mean {np.mean(dice):.3f}")
    ax.axvline(float(np.median(dice)), color="orange", ls="--", label=f"median {np.median(dice):.3f}")
    ax.set(xlabel="Dice per image", ylabel="images", title=f"{title}: {len(dice)} images")
    ax.legend(loc="upper left")
    return _png(fig)


def reliability_png(calibration: dict, title: str) -> bytes:
    """Reliability diagram from `lib.calibration.reliability`: share of polyp pixels against mean
    probability per bin, the diagonal of perfect calibration, and the pixel count per bin below."""
    edges = np.asarray(calibration["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(4.8, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    accuracy = np.nan_to_num(calibration["accuracy"])
    ax.bar(centres, accuracy, width=width * 0.95, color="#4477aa", label="share of polyp pixels")
    ax.plot(calibration["confidence"], calibration["accuracy"], "o", color="red", ms=4, label="bin mean p")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(ylabel="share of polyp pixels", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"{title}: ECE {calibration['ece']:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(centres, np.maximum(calibration["count"], 1), width=width * 0.95, color="#999999")
    hist.set(xlabel="predicted polyp probability", ylabel="pixels", yscale="log")
    return _png(fig)


def robustness_png(robustness: dict) -> bytes:
    """Mean Dice against corruption severity, one line per corruption, severity 0 being the clean images."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    clean = robustness["dice_clean"]
    for name, severities in robustness["corruptions"].items():
        levels = sorted(severities, key=int)
        dice = [clean] + [severities[s]["dice_mean"] for s in levels]
        ax.plot([0] + [int(s) for s in levels], dice, marker="o", label=name)
    ax.axhline(clean, color="grey", ls=":", lw=1)
    ax.set(xlabel="severity (0 = clean)", ylabel="mean Dice per image", ylim=(0, 1.01))
    ax.set_title(
        f"{robustness['split']}: {robustness['n_images']} images, threshold {robustness['threshold']}"
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncol=2)
    return _png(fig)


def trend_png(trend) -> bytes:
    """A lib.trend.Trend: test Dice and IoU (and validation Dice, faint) per version, aliases under the
    version numbers, the candidate as stars on a shaded band, regressions ringed in red beside the line
    they fell below."""
    points = trend.points
    fig, ax = plt.subplots(figsize=(max(6.4, 1.0 + 0.8 * len(points)), 4.2))
    if not any(p.test_dice is not None for p in points):
        ax.set_axis_off()
        why = trend.note or "no version has evaluation metrics"
        ax.text(0.5, 0.5, f"Quality trend: no data\n{why}", ha="center", va="center", wrap=True)
        return _png(fig)
    x = list(range(len(points)))
    registered = [i for i, p in enumerate(points) if p.version is not None]
    lines = (
        ("test_dice", f"{trend.test_split} Dice", "#4477aa", "o", "-", 2.0),
        ("test_iou", f"{trend.test_split} IoU", "#ee7733", "s", "-", 2.0),
        ("val_dice", f"{trend.val_split} Dice", "#999999", ".", "--", 1.0),
    )
    for key, label, color, marker, style, width in lines:
        y = [math.nan if getattr(p, key) is None else getattr(p, key) for p in points]
        ax.plot(
            registered,
            [y[i] for i in registered],
            ls=style,
            lw=width,
            marker=marker,
            color=color,
            label=label,
        )
        for i, p in enumerate(points):
            if p.version is None and not math.isnan(y[i]):
                before = [j for j in registered if j < i and not math.isnan(y[j])]
                if before:  # dotted: the candidate is not (yet) part of the registered line
                    ax.plot([before[-1], i], [y[before[-1]], y[i]], ls=":", lw=width, color=color)
                ax.plot([i], [y[i]], marker="*", ms=16, color=color, mec="black", ls="none")
    for i, p in enumerate(points):
        if p.version is None:
            ax.axvspan(i - 0.4, i + 0.4, color="#ffe9a8", zorder=0)
    # The line a version must stay above: the best earlier test Dice minus the tolerance.
    limit = [
        (i, p.test_dice + p.below_best - trend.tolerance)
        for i, p in enumerate(points)
        if p.below_best is not None
    ]
    if limit:
        xs, ys = zip(*limit)
        label = f"best earlier - {trend.tolerance:g}"
        ax.hlines(
            ys, [i - 0.3 for i in xs], [i + 0.3 for i in xs], color="#cc3311", ls=":", lw=1.5, label=label
        )
    flagged = [i for i, p in enumerate(points) if p.regression]
    if flagged:
        ax.scatter(
            flagged,
            [points[i].test_dice for i in flagged],
            s=260,
            facecolors="none",
            edgecolors="#cc3311",
            linewidths=2,
            zorder=4,
            label="regression",
        )
    for i, p in enumerate(points):
        if p.test_dice is None:
            ax.annotate(
                "not evaluated", (i, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=8
            )
    values = [v for p in points for v in (p.test_dice, p.test_iou, p.val_dice) if v is not None]
    ax.set_ylim(max(0.0, min(values) - 0.04), min(1.01, max(values) + 0.04))
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_xticks(x, [p.label + "".join(f"\n@{a}" for a in p.aliases) for p in points])
    ax.set(ylabel="mean over images")
    ax.set_title(f"{trend.model_name}: {trend.test_split} Dice / IoU per registered version")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: never over a point
    return _png(fig)
