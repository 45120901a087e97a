"""Image corruptions for the robustness check: what a different scope, a shaky hand or a lossy link does.

Each corruption is a pure function `(rgb, mask, rng, **params) -> (rgb, mask)`: `rgb` is
`(H, W, 3) uint8` RGB, `mask` `(H, W) uint8` {0, 1}; both come back at the same size. Only the
geometric one (rotation) changes the mask. Lengths are shares of the image's shorter side, so a
severity means the same thing on a 530 px Kvasir frame and a 1080 px frame from another centre.
Randomness (noise, blur direction, sign of a shift) comes only from `rng`; `corruption_rng` derives
it from (seed, corruption, severity, image stem), so results do not depend on processing order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import cv2
import numpy as np

Corruption = Callable[..., tuple[np.ndarray, np.ndarray]]


def _short(rgb: np.ndarray) -> int:
    return min(rgb.shape[:2])


def gaussian_blur(rgb, mask, rng, sigma: float):
    """Defocus: Gaussian blur, `sigma` a share of the shorter side."""
    s = max(0.3, sigma * _short(rgb))
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT), mask


def motion_blur(rgb, mask, rng, length: float):
    """Camera shake: average along a line of `length` (share of the shorter side), random direction."""
    n = max(3, int(round(length * _short(rgb))) | 1)  # odd, so the kernel has a centre
    kernel = np.zeros((n, n), np.float32)
    kernel[n // 2, :] = 1.0
    angle = float(rng.uniform(0.0, 180.0))
    rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (n, n), flags=cv2.INTER_LINEAR)
    kernel /= kernel.sum()
    return cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REFLECT), mask


def jpeg(rgb, mask, rng, quality: int):
    """Lossy compression: an in-memory JPEG round trip at `quality` (0-100)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), mask


def brightness(rgb, mask, rng, delta: float):
    """Exposure: add `delta` (share of full scale) to every channel, darker or brighter at random."""
    shift = delta * 255.0 * (1 if rng.random() < 0.5 else -1)
    return np.clip(rgb.astype(np.float32) + shift, 0, 255).astype(np.uint8), mask


def contrast(rgb, mask, rng, factor: float):
    """Haze, a flat light source: scale deviations from the image mean by `factor` (< 1 flattens)."""
    x = rgb.astype(np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + (x - mean) * factor, 0, 255).astype(np.uint8), mask


def gaussian_noise(rgb, mask, rng, sigma: float):
    """Sensor noise: independent Gaussian noise per pixel and channel, `sigma` a share of full scale."""
    noise = rng.normal(0.0, sigma * 255.0, rgb.shape).astype(np.float32)
    return np.clip(rgb.astype(np.float32) + noise, 0, 255).astype(np.uint8), mask


def rotation(rgb, mask, rng, degrees: float):
    """Scope roll: rotate image and mask by `degrees` about the centre, direction at random.

    Corners brought in from outside the frame are black, as the scope's vignette is; the mask gets
    the same warp with nearest-neighbour sampling, so it stays {0, 1}.
    """
    h, w = mask.shape
    angle = degrees * (1 if rng.random() < 0.5 else -1)
    rot = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, 1.0)
    image = cv2.warpAffine(rgb, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    warped = cv2.warpAffine(mask, rot, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return image, warped


def downscale(rgb, mask, rng, factor: float):
    """A low-resolution camera: shrink by `factor` (area filter), then enlarge back (bilinear)."""
    h, w = mask.shape
    small = cv2.resize(
        rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), mask


FUNCTIONS: dict[str, Corruption] = {
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "jpeg": jpeg,
    "brightness": brightness,
    "contrast": contrast,
    "gaussian_noise": gaussian_noise,
    "rotation": rotation,
    "downscale": downscale,
}

# name -> severity -> parameters. Severity 1 is mild, 2 clearly visible, 3 harsh; a 530 px frame
# (most of Kvasir-SEG) is shrunk to the 256 px model input, which hides part of the mildest blur.
SEVERITIES: dict[str, dict[int, dict]] = {
    "gaussian_blur": {1: {"sigma": 0.005}, 2: {"sigma": 0.01}, 3: {"sigma": 0.02}},
    "motion_blur": {1: {"length": 0.02}, 2: {"length": 0.04}, 3: {"length": 0.08}},
    "jpeg": {1: {"quality": 30}, 2: {"quality": 10}, 3: {"quality": 5}},
    "brightness": {1: {"delta": 0.1}, 2: {"delta": 0.2}, 3: {"delta": 0.35}},
    "contrast": {1: {"factor": 0.7}, 2: {"factor": 0.5}, 3: {"factor": 0.3}},
    "gaussian_noise": {1: {"sigma": 0.03}, 2: {"sigma": 0.06}, 3: {"sigma": 0.12}},
    "rotation": {1: {"degrees": 10.0}, 2: {"degrees": 20.0}, 3: {"degrees": 45.0}},
    "downscale": {1: {"factor": 0.5}, 2: {"factor": 0.25}, 3: {"factor": 0.125}},
}


def corruption_rng(seed: int, name: str, severity: int, key: str) -> np.random.Generator:
    """The generator for one (corruption, severity, image): same inputs, same draws, in any order."""
    digest = hashlib.sha256(f"{name}/{severity}/{key}".encode()).digest()
    return np.random.default_rng((seed, int.from_bytes(digest[:8], "little")))


def corrupt(
    rgb: np.ndarray, mask: np.ndarray, name: str, severity: int, seed: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Apply corruption `name` at `severity` to one image (`key`, its stem, seeds the randomness)."""
    if name not in FUNCTIONS:
        raise KeyError(f"unknown corruption {name!r}; known: {', '.join(FUNCTIONS)}")
    params = SEVERITIES[name][severity]
    return FUNCTIONS[name](rgb, mask, corruption_rng(seed, name, severity, key), **params)
