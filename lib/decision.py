"""The operating point: pixel threshold, small-component filter and image-level "polyp detected" rule,
chosen on validation; `binary_mask` is the one place a probability map becomes the mask.

The threshold's one configured value is `threshold` in conf/train.yaml: training validates at it and
stores it in the checkpoint beside mean/std (`checkpoint_threshold` reads it back). bin/evaluate.py
starts from it, chooses both numbers on the validation split (plus polyp-free validation crops) and
writes them to `reports/eval/decision.json`; bin/export.py copies them into model.json
(lib/model_contract.py), and serving, the MLflow pyfunc model, the gates and the benchmarks read
them from there. Nothing else defines these numbers, and every mask (evaluation, serving, the pyfunc
model, batch and video prediction, drift features) comes from `binary_mask`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lib.io import read_json, write_json


@dataclass(frozen=True)
class Decision:
    threshold: float  # probability at or above which a pixel is polyp
    min_area_fraction: float  # an image shows a polyp when its predicted share reaches this
    chosen_on: str  # where the numbers come from, e.g. "val (150 images) + val negatives (412)"
    min_component_ratio: float = 0.0  # drop mask regions smaller than this share of the largest; 0 = off

    def mask(self, prob: np.ndarray) -> np.ndarray:
        """The binary mask of a probability map at this operating point (`binary_mask`)."""
        return binary_mask(prob, self.threshold, self.min_component_ratio)


def checkpoint_threshold(ckpt: dict) -> float:
    """The threshold bin/train.py stored in a checkpoint (conf/train.yaml's `threshold`).

    ValueError naming the key when it is absent (a checkpoint saved before it was stored: retrain)
    or not a probability.
    """
    value = ckpt.get("threshold")
    if value is None:
        raise ValueError("checkpoint: no 'threshold' (saved before bin/train.py stored it; retrain)")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"checkpoint: 'threshold' must be a number in [0, 1], got {value!r}")
    return float(value)


def detected_from_area(area, min_area_fraction: float) -> np.ndarray:
    """The image-level rule on predicted polyp area shares (a float or an array of them).

    A polyp is detected when the share reaches `min_area_fraction`; with 0 any predicted pixel
    counts, and an empty prediction never does.
    """
    area = np.asarray(area, dtype=np.float64)
    return (area > 0) & (area >= min_area_fraction)


def kept_labels(areas: np.ndarray, min_component_ratio: float) -> np.ndarray:
    """Which labels survive the filter: regions of at least `min_component_ratio` x the largest region's
    area (the background, label 0, never). `areas`: pixels per label, label 0 first."""
    keep = np.zeros(len(areas), bool)
    if len(areas) > 1:
        keep[1:] = areas[1:] >= min_component_ratio * areas[1:].max()
    return keep


# Regions are judged on a grid of blocks: the shorter image side is cut into about this many. A block
# is `component_block` px square (1 px on images up to 511 px), so two pieces of mask closer than about
# a block are one region, much as the network (256 px input, conf/train.yaml) sees them, and labelling
# costs about the same whatever the image size: at 1348x1070 labelling every pixel cost ~2.5 ms a
# request on one core, the block grid ~0.9 ms in all (docs/experiments.md, serving latency).
COMPONENT_GRID = 256


def component_block(height: int, width: int) -> int:
    """Side, in pixels, of the square blocks `binary_mask` labels regions on, for an image this size."""
    return max(1, min(height, width) // COMPONENT_GRID)


def block_counts(mask: np.ndarray, step: int) -> np.ndarray:
    """Mask pixels in each `step` x `step` block of a bool mask, blocks from its top-left corner (the
    last row and column of blocks may be partial): `(ceil(H / step), ceil(W / step))` uint32.

    Summed as `step` strided slices per axis, not through a padded copy: on a served 1348x1070 frame
    this stays well under a millisecond and allocates only the block-row sums."""
    pixels = mask.view(np.uint8)
    rows = np.zeros((-(-mask.shape[0] // step), mask.shape[1]), np.uint32)
    for k in range(step):
        part = pixels[k::step]
        rows[: len(part)] += part
    counts = np.zeros((rows.shape[0], -(-mask.shape[1] // step)), np.uint32)
    for k in range(step):
        part = rows[:, k::step]
        counts[:, : part.shape[1]] += part
    return counts


def binary_mask(prob: np.ndarray, threshold: float, min_component_ratio: float = 0.0) -> np.ndarray:
    """`(H, W)` probabilities -> `(H, W)` bool mask: pixels at or above `threshold`, less the connected
    regions whose pixel count is under `min_component_ratio` times the largest region's (0 keeps every
    region).

    Regions are the 8-connected groups of `component_block(H, W)`-px blocks holding a mask pixel (on
    images under 512 px a block is one pixel: plain 8-connected pixel regions); a region's size is its
    exact pixel count, and a dropped region loses every mask pixel in its blocks.

    Why the filter: most wrong pixels of a good model are small specks beside the polyp it found, and
    Dice is averaged per image, so a speck costs a small polyp's image a lot. It is relative to the
    largest region so that a frame with two polyps of similar size keeps both, and so that the largest
    region always survives: `polyp_detected` is decided after it, on the same mask.
    """
    import cv2  # here, not at the top: the rest of this module needs only NumPy

    mask = np.asarray(prob) >= threshold
    if min_component_ratio <= 0:
        return mask
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return mask
    cols = np.flatnonzero(mask.any(axis=0))
    # Served on every request at the original size: only the box around the predicted pixels is
    # labelled, block by block (blocks tile the image from its top-left corner), and dropped regions
    # are erased inside their own boxes.
    step = component_block(*mask.shape)
    top, left = rows[0] // step * step, cols[0] // step * step
    box = mask[top : rows[-1] + 1, left : cols[-1] + 1]
    counts = block_counts(box, step)
    occupied = (counts > 0).view(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(occupied, connectivity=8)
    if n_labels <= 2:  # background and at most one region: nothing to drop
        return mask
    areas = np.bincount(labels.ravel(), weights=counts.ravel(), minlength=n_labels)
    keep = kept_labels(areas, min_component_ratio)
    for label in np.flatnonzero(~keep[1:]) + 1:
        x, y, bw, bh = stats[label, :4]
        region = box[y * step : (y + bh) * step, x * step : (x + bw) * step]  # a view into `mask`
        dropped = labels[y : y + bh, x : x + bw] == label
        if step > 1:
            dropped = dropped.repeat(step, axis=0).repeat(step, axis=1)[: region.shape[0], : region.shape[1]]
        region[dropped] = False
    return mask


# model.json files exported before the image-level rule existed have no min_area_fraction: they are
# read as this (any polyp pixel means "detected"), by serving and by the MLflow pyfunc model alike.
LEGACY_MIN_AREA = 0.0


def polyp_detected(mask: np.ndarray, min_area_fraction: float) -> bool:
    """`detected_from_area` for one binary mask."""
    return bool(detected_from_area(np.count_nonzero(mask) / max(1, mask.size), min_area_fraction))


def count_components(mask: np.ndarray) -> int:
    """Connected regions (8-connectivity) of a {0, 1} mask: the batch manifest's and the drift features'."""
    import cv2  # here, not at the top: the rest of this module needs only NumPy

    n_labels, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return int(n_labels) - 1  # label 0 is the background


def save_decision(path: str | Path, decision: Decision) -> None:
    write_json(path, asdict(decision))


def load_decision(path: str | Path) -> Decision:
    raw = read_json(path)
    return Decision(
        threshold=float(raw["threshold"]),
        min_area_fraction=float(raw["min_area_fraction"]),
        chosen_on=str(raw.get("chosen_on", "unknown")),
        # decision.json files written before the filter existed: no filter, as those models were served
        min_component_ratio=float(raw.get("min_component_ratio", 0.0)),
    )


def operating_points(thresholds, ratios) -> list[tuple[float, float]]:
    """Every (threshold, min_component_ratio) pair, thresholds outermost: what bin/evaluate.py scans."""
    return [(float(t), float(r)) for t in thresholds for r in ratios]


def masks_at_points(prob: np.ndarray, thresholds, ratios):
    """`binary_mask(prob, t, r)` for each of `operating_points(thresholds, ratios)`, in that order."""
    for t, r in operating_points(thresholds, ratios):
        yield binary_mask(prob, t, r)


def choose_point(dice: np.ndarray, points, prefer: float) -> tuple[float, float]:
    """The (threshold, min_component_ratio) point with the highest mean per-image Dice; ties go to the
    threshold closest to `prefer` (the checkpoint's), then to the weaker filter.

    `dice` `(N, P)`: Dice of image n at `points[p]`.
    """
    mean = np.asarray(dice, dtype=np.float64).mean(axis=0)
    best = np.flatnonzero(np.isclose(mean, mean.max(), rtol=0, atol=1e-12))
    return min((points[i] for i in best), key=lambda p: (abs(p[0] - prefer), p[1]))


def points_within_cap(fp_rates, candidates: list[int], cap: float) -> tuple[list[int], bool]:
    """The candidate point indices whose false-alarm rate `fp_rates[i]` is at most `cap`, and True; when
    none is, those with the lowest rate, and False (the cap cannot be met; the least alarming compete)."""
    rates = np.asarray(fp_rates, dtype=np.float64)
    within = [i for i in candidates if rates[i] <= cap + 1e-12]
    if within:
        return within, True
    lowest = min(rates[i] for i in candidates)
    return [i for i in candidates if np.isclose(rates[i], lowest, rtol=0, atol=1e-12)], False


def image_level(pos_areas, neg_areas, min_area_fraction: float) -> dict:
    """Image-level sensitivity and specificity of `polyp_detected` from predicted area shares.

    `pos_areas`: predicted polyp share of each image that shows a polyp; `neg_areas`: of each
    polyp-free image. Either may be empty; its rate is then None.
    """
    pos = np.asarray(pos_areas, dtype=np.float64)
    neg = np.asarray(neg_areas, dtype=np.float64)
    detected_pos = int(np.count_nonzero(detected_from_area(pos, min_area_fraction)))
    detected_neg = int(np.count_nonzero(detected_from_area(neg, min_area_fraction)))
    sensitivity = detected_pos / pos.size if pos.size else None
    specificity = (neg.size - detected_neg) / neg.size if neg.size else None
    rates = [r for r in (sensitivity, specificity) if r is not None]
    return {
        "min_area_fraction": float(min_area_fraction),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "balanced_accuracy": float(np.mean(rates)) if rates else None,
        "true_positives": detected_pos,
        "false_negatives": int(pos.size - detected_pos),
        "true_negatives": int(neg.size - detected_neg),
        "false_positives": detected_neg,
        "n_positive": int(pos.size),
        "n_negative": int(neg.size),
    }


def min_area_candidates(low: float = 0.001, high: float = 0.2, steps: int = 24) -> list[float]:
    """0 and a geometric grid from `low` to `high`: the `min_area_fraction` values tried."""
    return [0.0] + [float(f"{v:.4g}") for v in np.geomspace(low, high, steps)]


def choose_min_area(pos_areas, neg_areas, candidates) -> float:
    """The candidate `min_area_fraction` with the best balanced accuracy; ties go to the smaller one."""
    best, best_score = None, -1.0
    for value in sorted(candidates):
        score = image_level(pos_areas, neg_areas, value)["balanced_accuracy"]
        if score is not None and score > best_score + 1e-12:
            best, best_score = value, score
    if best is None:
        raise ValueError("choose_min_area needs at least one image")
    return float(best)
