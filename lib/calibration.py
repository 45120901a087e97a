"""Calibration of pixel probabilities: reliability bins accumulated over a split, and the ECE.

Every pixel is one binary prediction: its polyp probability p, and whether it is polyp. Pixels are
grouped into equal-width bins of p; a calibrated model's bins hold as large a share of polyp
pixels as their mean p says. The expected calibration error is the pixel-weighted mean gap:

    ECE = sum_b (n_b / N) |positives_b / n_b - mean p_b|

Bins are accumulated image by image (O(bins) memory), so a split of any size fits.
"""

from __future__ import annotations

import numpy as np


def calibration_bins(prob: np.ndarray, target: np.ndarray, bins: int = 15) -> np.ndarray:
    """Per-bin sums of one image, to add over a split: `(bins, 3) float64` of count, sum p, positives.

    `prob` `(H, W)` float in [0, 1], `target` `(H, W)` bool or {0, 1}. Bin k holds
    p in [k / bins, (k + 1) / bins), the last one includes 1.
    """
    if prob.shape != target.shape:
        raise ValueError(f"prob {prob.shape} and target {target.shape} differ in shape")
    p = np.asarray(prob, dtype=np.float64).ravel()
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    t = np.asarray(target, dtype=bool).ravel()
    count = np.bincount(index, minlength=bins)
    total = np.bincount(index, weights=p, minlength=bins)
    positives = np.bincount(index[t], minlength=bins)
    return np.stack([count, total, positives], axis=1).astype(np.float64)


def reliability(sums: np.ndarray) -> dict:
    """From summed `calibration_bins`: per-bin `count`, `confidence` (mean p) and `accuracy` (share of
    polyp pixels), NaN for empty bins; bin `edges`; `ece` and `n_pixels`."""
    sums = np.asarray(sums, dtype=np.float64)
    count, total, positives = sums[:, 0], sums[:, 1], sums[:, 2]
    n = count.sum()
    if n == 0:
        raise ValueError("reliability needs at least one pixel")
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, total / count, np.nan)
        accuracy = np.where(count > 0, positives / count, np.nan)
    filled = count > 0
    ece = float(np.sum(count[filled] / n * np.abs(accuracy[filled] - confidence[filled])))
    return {
        "edges": np.linspace(0.0, 1.0, len(count) + 1),
        "count": count,
        "confidence": confidence,
        "accuracy": accuracy,
        "ece": ece,
        "n_pixels": int(n),
    }
