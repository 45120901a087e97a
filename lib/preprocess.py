"""The one preprocessing path shared by training, evaluation, export and serving.

An image of any size is resized (stretched) to the square model input, then normalised to
`(3, S, S) float32`; `restore_mask` maps the model's output back to the original size. The
geometry needed to undo the resize is returned with the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# EfficientNet-Lite (TF ports) were trained on inputs scaled to [-1, 1]; ImageNet torchvision
# encoders (ResNet) use these channel statistics. The constants travel with every checkpoint.
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Geometry:
    """How a model input relates to the original image."""

    height: int  # original image height in pixels
    width: int  # original image width in pixels
    size: int  # side of the square model input in pixels


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """`(H, W, 3) uint8` -> `(size, size, 3) uint8`; area filter when shrinking avoids aliasing."""
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """`(H, W) uint8` {0, 1} -> `(size, size) uint8` {0, 1}: area-average then threshold at 0.5.

    Averaging before thresholding keeps thin boundaries where nearest-neighbour would alias.
    """
    soft = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return (soft >= 0.5).astype(np.uint8)


def cache_pair(rgb: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One training sample for the cache in data/processed: `(S, S, 3) uint8` image, `(S, S)` {0, 1} mask.

    The image is resized by `resize_image`, the function `prepare_input` uses, so the cache holds
    exactly the pixels serving normalises; a change to the resize policy reaches both.
    """
    return resize_image(rgb, size), resize_mask(mask, size)


def normalise(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """`(H, W, 3) uint8` -> `(3, H, W) float32`, scaled to [0, 1] then standardised per channel."""
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def prepare_input(
    rgb: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[np.ndarray, Geometry]:
    """`(H, W, 3) uint8` -> model input `(1, 3, size, size) float32` and its Geometry."""
    h, w = rgb.shape[:2]
    x = normalise(resize_image(rgb, size), mean, std)[None]
    return x, Geometry(height=h, width=w, size=size)


def restore_mask(prob: np.ndarray, geometry: Geometry) -> np.ndarray:
    """`(S, S) float32` probabilities -> `(H, W) float32` at the original image size."""
    return cv2.resize(
        prob.astype(np.float32), (geometry.width, geometry.height), interpolation=cv2.INTER_LINEAR
    )


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, any shape, float32."""
    logits = logits.astype(np.float32)
    out = np.empty_like(logits)
    pos = logits >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-logits[pos]))
    e = np.exp(logits[~pos])
    out[~pos] = e / (1.0 + e)
    return out
