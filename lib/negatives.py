"""Polyp-free crops of Kvasir-SEG frames: negatives for training and for false-alarm evaluation.

Every Kvasir-SEG image holds a polyp, so a model trained on it alone learns to find one in any
frame. A crop that stays clear of the ground-truth mask (grown by a margin, so no polyp edge
leaks in) and of the dark vignette around the scope's field of view is an honest picture of
polyp-free mucosa from the same camera. Crops are square, at several sizes relative to the frame,
and placed by a seeded generator, so the same (seed, stem) always gives the same crops.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from lib.preprocess import resize_image


@dataclass(frozen=True)
class CropSpec:
    sizes: tuple[float, ...] = (0.25, 0.35, 0.5)  # crop side as a share of the frame's shorter side
    per_size: int = 1  # crops wanted per size and frame (fewer when the frame has no room)
    margin: float = 0.05  # mask dilation, share of the shorter side: keeps polyp edges out
    max_dark: float = 0.15  # largest share of near-black pixels (vignette, borders) in a crop
    dark_level: int = 20  # grey level under which a pixel counts as near-black
    tries: int = 60  # random placements tried per wanted crop


def forbidden_map(mask: np.ndarray, margin_px: int) -> np.ndarray:
    """`(H, W) uint8` {0, 1}: the mask grown by `margin_px` pixels in every direction."""
    if margin_px <= 0:
        return (mask > 0).astype(np.uint8)
    k = 2 * margin_px + 1
    return cv2.dilate((mask > 0).astype(np.uint8), np.ones((k, k), np.uint8))


def find_crops(
    rgb: np.ndarray, mask: np.ndarray, spec: CropSpec, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Boxes `(y, x, side)` of polyp-free, mostly-lit square crops of one frame."""
    h, w = mask.shape
    short = min(h, w)
    forbidden = forbidden_map(mask, int(round(spec.margin * short)))
    dark = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < spec.dark_level).astype(np.uint8)
    # Integral images make each candidate's "any polyp?" and "how dark?" an O(1) lookup.
    f_sum = cv2.integral(forbidden)
    d_sum = cv2.integral(dark)

    def box_sum(table: np.ndarray, y: int, x: int, s: int) -> int:
        return int(table[y + s, x + s] - table[y, x + s] - table[y + s, x] + table[y, x])

    boxes = []
    for share in spec.sizes:
        side = int(round(share * short))
        if side < 8 or side > short:
            continue
        found = 0
        for _ in range(spec.tries * spec.per_size):
            y = int(rng.integers(0, h - side + 1))
            x = int(rng.integers(0, w - side + 1))
            if box_sum(f_sum, y, x, side):
                continue
            if box_sum(d_sum, y, x, side) > spec.max_dark * side * side:
                continue
            boxes.append((y, x, side))
            found += 1
            if found == spec.per_size:
                break
    return boxes


def crop_negatives(
    rgb: np.ndarray, mask: np.ndarray, spec: CropSpec, seed: int, key: str, size: int | None = None
) -> list[np.ndarray]:
    """Polyp-free crops `(side, side, 3) uint8` of one frame, resized to `size` when given.

    `key` (the image stem) enters the seed, so crops do not depend on the order frames come in.
    """
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    rng = np.random.default_rng((seed, digest))
    crops = []
    for y, x, side in find_crops(rgb, mask, spec, rng):
        crop = np.ascontiguousarray(rgb[y : y + side, x : x + side])
        if size is not None and side != size:
            crop = resize_image(crop, size)  # serving's resize rule, so a negative looks like an input
        crops.append(crop)
    return crops


def false_alarm_rate(areas, fp_area: float):
    """Share of crops whose predicted polyp area share exceeds `fp_area`: the one definition of a false
    alarm. `areas` `(N,)` gives a float; `(N, P)` (each crop at P operating points) gives `(P,)`."""
    return np.mean(np.asarray(areas, dtype=np.float64) > fp_area, axis=0)


def false_alarm_summary(areas, fp_area: float = 0.01) -> dict:
    """Figures for polyp-free crops from their predicted polyp area shares (`(N,)` floats in [0, 1]).

    `fp_image_rate`: share of crops whose predicted area exceeds `fp_area`; `fp_area_mean`: mean
    predicted area share; `n_images`: number of crops. With no crops both rates are None.
    """
    a = np.asarray(areas, dtype=np.float64)
    return {
        "n_images": int(a.size),
        "fp_image_rate": float(false_alarm_rate(a, fp_area)) if a.size else None,
        "fp_area_mean": float(a.mean()) if a.size else None,
        "fp_area": fp_area,
    }
