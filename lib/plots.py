"""Evaluation plots rendered to PNG bytes (the caller writes them): PR curve, per-image Dice histogram,
reliability diagram, Dice under corruptions."""

from __future__ import annotations

import io

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
