"""Evaluation plots rendered to PNG bytes (the caller writes them): PR curve, per-image Dice histogram."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
