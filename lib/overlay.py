"""Overlays and montages for people to look at: image with ground truth and prediction drawn on it."""

from __future__ import annotations

import cv2
import numpy as np

GT_COLOUR = (0, 220, 0)  # green outline: ground truth
PRED_COLOUR = (255, 40, 40)  # red fill + outline: prediction


def outline(mask: np.ndarray, thickness: int = 2) -> np.ndarray:
    """`(H, W)` {0,1} -> `(H, W) bool` band along the mask boundary."""
    m = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    return cv2.dilate(m, kernel, iterations=thickness).astype(bool) & ~cv2.erode(
        m, kernel, iterations=thickness
    ).astype(bool)


def draw_overlay(
    rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None, alpha: float = 0.35
) -> np.ndarray:
    """`(H, W, 3) uint8` image + `(H, W)` {0,1} masks -> `(H, W, 3) uint8` with prediction filled
    and outlined in red and ground truth outlined in green. Takes the image as read from disk,
    never the normalised model input (whose colours are shifted and scaled)."""
    out = rgb.astype(np.float32).copy()
    fill = pred.astype(bool)
    out[fill] = (1 - alpha) * out[fill] + alpha * np.asarray(PRED_COLOUR, np.float32)
    thickness = max(1, round(min(rgb.shape[:2]) / 200))
    out[outline(pred, thickness)] = PRED_COLOUR
    if gt is not None:
        out[outline(gt, thickness)] = GT_COLOUR
    return out.astype(np.uint8)


def caption(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write `text` on a dark band at the top of an image copy."""
    out = rgb.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def montage(tiles: list[np.ndarray], columns: int = 4, tile_size: int = 256) -> np.ndarray:
    """Square-resized tiles in a grid -> one `(rows*S, columns*S, 3) uint8` image."""
    if not tiles:
        raise ValueError("montage needs at least one tile")
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * tile_size, columns * tile_size, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * tile_size : (r + 1) * tile_size, c * tile_size : (c + 1) * tile_size] = cv2.resize(
            tile, (tile_size, tile_size), interpolation=cv2.INTER_AREA
        )
    return grid
