"""Per-image features for drift monitoring: what a different scope, light source or encoder changes.

Pure NumPy/OpenCV on one decoded image (`(H, W, 3) uint8` RGB) and the size of the file it came from;
no model here (the model-side features live in lib/drift.py). Every value is a finite float, so a
column of them can go straight into a drift test. Shares are in [0, 1]; intensities are scaled to [0, 1]
(so 0.5 is mid-grey whatever the bit depth of the source).

The definitions below are part of the reference the DVC stage `drift_reference` caches: changing one
changes that stage's inputs (dvc.yaml lists this file), so reference and current never disagree.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from lib.io import decode_image

# A pixel is "near black" when its brightest channel is at most this (HSV value, 0-1). Kvasir's frame and
# the scope's inset box are JPEG-black (0-15 of 255); 0.1 (about 25) keeps JPEG ringing inside the black.
NEAR_BLACK_V = 0.10
# Specular highlight: near white (HSV value >= 0.9) and nearly colourless (saturation <= 0.2); wet mucosa
# reflects the light source as white spots, while bright red tissue has a high saturation.
SPECULAR_MIN_V = 0.90
SPECULAR_MAX_S = 0.20

FEATURE_NAMES = (
    "width",  # pixels
    "height",  # pixels
    "aspect_ratio",  # width / height
    "brightness_mean",  # luma (BT.601), 0-1
    "brightness_std",  # luma spread within the image, 0-1
    "red_mean",  # 0-1
    "green_mean",
    "blue_mean",
    "hue_mean",  # degrees in (-180, 180], saturation-weighted circular mean; 0 = red
    "saturation_mean",  # HSV saturation, 0-1; 0 for a greyscale image
    "value_mean",  # HSV value (brightest channel), 0-1
    "sharpness",  # variance of the Laplacian of the luma (0-255 scale), at the image's own size
    "black_border_share",  # near-black pixels connected to the image edge, share of the image
    "specular_share",  # near-white, low-saturation pixels, share of the image
    "bytes_per_pixel",  # file size / (width x height): the encoder's compression
)


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hue in degrees [0, 360), saturation [0, 1], value [0, 1]) of `(H, W, 3) uint8` RGB, float32."""
    hsv = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    return hsv[..., 0], hsv[..., 1], hsv[..., 2]


def circular_hue_mean(hue_deg: np.ndarray, weight: np.ndarray) -> float:
    """Weighted circular mean of hues, in degrees (-180, 180]; 0.0 when every weight is 0.

    Circular, because 359 and 1 degrees are both red: an arithmetic mean would put them at cyan. The
    result is centred on red (0), the colour of the mucosa, so endoscopy frames do not wrap around
    from 359 to 0 between images. Weighted by saturation: the hue of a grey pixel means nothing.
    """
    rad = np.deg2rad(hue_deg.astype(np.float64))
    w = weight.astype(np.float64)
    s, c = float((w * np.sin(rad)).sum()), float((w * np.cos(rad)).sum())
    if math.hypot(s, c) < 1e-12:
        return 0.0
    angle = math.degrees(math.atan2(s, c))
    return 180.0 if angle == -180.0 else angle


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of `(H, W) uint8`: low for a blurred or flat image."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def edge_connected_share(mask: np.ndarray) -> float:
    """Share of all pixels that are set in `(H, W)` bool `mask` and 8-connected to the image edge.

    A black frame or corner box touches the edge; a dark lumen in the middle of the picture does not.
    """
    if not mask.any():
        return 0.0
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    touching = np.setdiff1d(np.unique(edge), [0])  # label 0 is the unset background
    if touching.size == 0:
        return 0.0
    return float(np.isin(labels, touching).mean())


def image_features(rgb: np.ndarray, n_bytes: int) -> dict[str, float]:
    """The FEATURE_NAMES of one `(H, W, 3) uint8` RGB image whose encoded file has `n_bytes` bytes."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if n_bytes < 0:
        raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hue, sat, val = _hsv(rgb)
    means = rgb.reshape(-1, 3).mean(axis=0) / 255.0
    near_black = val <= NEAR_BLACK_V
    specular = (val >= SPECULAR_MIN_V) & (sat <= SPECULAR_MAX_S)
    return {
        "width": float(w),
        "height": float(h),
        "aspect_ratio": w / h,
        "brightness_mean": float(grey.mean()) / 255.0,
        "brightness_std": float(grey.std()) / 255.0,
        "red_mean": float(means[0]),
        "green_mean": float(means[1]),
        "blue_mean": float(means[2]),
        "hue_mean": circular_hue_mean(hue, sat),
        "saturation_mean": float(sat.mean()),
        "value_mean": float(val.mean()),
        "sharpness": laplacian_variance(grey),
        "black_border_share": edge_connected_share(near_black),
        "specular_share": float(specular.mean()),
        "bytes_per_pixel": n_bytes / (h * w),
    }


def features_from_bytes(data: bytes) -> dict[str, float]:
    """FEATURE_NAMES of an encoded image (JPEG, PNG, ...); raises lib.io.DecodeError when undecodable."""
    return image_features(decode_image(data), len(data))
