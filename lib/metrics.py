"""Segmentation metrics for binary masks, per image and over a split.

Scores are computed from confusion counts, so the same functions give per-image scores (counts
of one image) and pooled scores (counts summed over a split):

    dice      = 2 tp / (2 tp + fp + fn)
    iou       = tp / (tp + fp + fn)
    precision = tp / (tp + fp)
    recall    = tp / (tp + fn)

Empty cases: every 0/0 is 1, because nothing to find and nothing falsely found is a perfect
answer. That one rule gives, for a single image:
- target and prediction both empty: dice = iou = precision = recall = 1;
- target empty, prediction not: dice = iou = precision = 0, recall = 1 (nothing to find);
- prediction empty, target not: dice = iou = recall = 0, precision = 1 (no false alarms).

Papers on Kvasir-SEG / CVC-ClinicDB report the mean of per-image scores (`*_mean` in
`summarise`); pooled scores weight large polyps more and are reported beside them.
"""

from __future__ import annotations

import numpy as np


def confusion(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) pixel counts for `(H, W)` bool or {0, 1} arrays of the same shape."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(target, dtype=bool)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return tp, fp, fn, p.size - tp - fp - fn


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num) / float(den)


def dice_score(tp: int, fp: int, fn: int) -> float:
    """2 tp / (2 tp + fp + fn); 1 when prediction and target are both empty."""
    return _ratio(2 * tp, 2 * tp + fp + fn)


def iou_score(tp: int, fp: int, fn: int) -> float:
    """tp / (tp + fp + fn); 1 when prediction and target are both empty."""
    return _ratio(tp, tp + fp + fn)


def precision_score(tp: int, fp: int, fn: int) -> float:
    """tp / (tp + fp); 1 when nothing is predicted. `fn` is unused, kept for a uniform call."""
    return _ratio(tp, tp + fp)


def recall_score(tp: int, fp: int, fn: int) -> float:
    """tp / (tp + fn); 1 when there is nothing to find. `fp` is unused, kept for a uniform call."""
    return _ratio(tp, tp + fn)


def image_metrics(prob: np.ndarray, target: np.ndarray, threshold: float) -> dict:
    """Scores and counts for one image.

    `prob` is `(H, W)` float in [0, 1], `target` `(H, W)` bool or {0, 1}; a pixel is predicted
    foreground when `prob >= threshold`. Returns dice, iou, precision, recall (float) and tp, fp,
    fn, tn (int).
    """
    return count_metrics(*confusion(prob >= threshold, target))


def summarise(rows: list[dict]) -> dict:
    """Aggregate `image_metrics` rows over a split.

    `*_mean`: mean over images (the protocol papers use); `dice_std` (population, ddof=0) and
    `dice_median` over images; `*_pooled`: from tp, fp, fn summed over images; `n_images`.
    """
    if not rows:
        raise ValueError("summarise needs at least one image")
    out: dict = {}
    for name in ("dice", "iou", "precision", "recall"):
        out[f"{name}_mean"] = float(np.mean([r[name] for r in rows]))
    dice = np.array([r["dice"] for r in rows], dtype=np.float64)
    out["dice_std"] = float(dice.std())
    out["dice_median"] = float(np.median(dice))
    tp, fp, fn = (sum(int(r[k]) for r in rows) for k in ("tp", "fp", "fn"))
    out["dice_pooled"] = dice_score(tp, fp, fn)
    out["iou_pooled"] = iou_score(tp, fp, fn)
    out["precision_pooled"] = precision_score(tp, fp, fn)
    out["recall_pooled"] = recall_score(tp, fp, fn)
    out["n_images"] = len(rows)
    return out


def threshold_histograms(
    prob: np.ndarray, target: np.ndarray, bins: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin pixel counts of one image, to sum over a split and pass to `pr_curve`.

    `prob` `(H, W)` float in [0, 1], `target` `(H, W)` bool or {0, 1} -> `(pos_hist, neg_hist)`,
    each `(bins,) int64`: foreground / background pixels whose probability falls in
    [k / bins, (k + 1) / bins) (the last bin includes 1). Keeps a split's PR curve in O(bins)
    memory instead of O(pixels).
    """
    if prob.shape != target.shape:
        raise ValueError(f"prob {prob.shape} and target {target.shape} differ in shape")
    index = np.clip((np.asarray(prob, dtype=np.float64) * bins).astype(np.int64), 0, bins - 1)
    t = np.asarray(target, dtype=bool)
    pos = np.bincount(index[t], minlength=bins).astype(np.int64)
    neg = np.bincount(index[~t], minlength=bins).astype(np.int64)
    return pos, neg


def pr_curve(pos_hist: np.ndarray, neg_hist: np.ndarray) -> dict:
    """Pooled precision, recall and Dice at each bin's lower edge, plus average precision.

    `pos_hist`, `neg_hist`: `(bins,)` counts from `threshold_histograms` (summed over images).
    Returns `thresholds`, `precision`, `recall`, `dice` as `(bins,) float64` arrays, where index
    k means "predict foreground when prob >= k / bins", and `average_precision` (float): the sum
    of precision times recall gained, from the highest threshold down, as in scikit-learn.
    """
    pos = np.asarray(pos_hist, dtype=np.int64)
    neg = np.asarray(neg_hist, dtype=np.int64)
    if pos.shape != neg.shape or pos.ndim != 1:
        raise ValueError(f"histograms must be 1-D and equal in length, got {pos.shape} and {neg.shape}")
    if pos.sum() == 0:
        raise ValueError("pr_curve needs at least one foreground pixel")
    bins = pos.size
    # Reverse cumulative sums: pixels at or above each bin's lower edge are predicted foreground.
    tp = np.cumsum(pos[::-1])[::-1]
    fp = np.cumsum(neg[::-1])[::-1]
    fn = pos.sum() - tp
    # The scalar score functions, so the curve follows the module's empty-case convention.
    counts = list(zip(tp, fp, fn, strict=True))
    precision = np.array([precision_score(*c) for c in counts])
    recall = np.array([recall_score(*c) for c in counts])
    dice = np.array([dice_score(*c) for c in counts])
    recall_gained = recall - np.append(recall[1:], 0.0)
    return {
        "thresholds": np.arange(bins, dtype=np.float64) / bins,
        "precision": precision,
        "recall": recall,
        "dice": dice,
        "average_precision": float(np.sum(recall_gained * precision)),
    }


def count_metrics(tp: int, fp: int, fn: int, tn: int) -> dict:
    """The `image_metrics` dict from confusion counts already taken."""
    tp, fp, fn, tn = int(tp), int(fp), int(fn), int(tn)
    return {
        "dice": dice_score(tp, fp, fn),
        "iou": iou_score(tp, fp, fn),
        "precision": precision_score(tp, fp, fn),
        "recall": recall_score(tp, fp, fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }
