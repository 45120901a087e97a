"""Run-length encoding of binary masks, as returned by the serving API (`format=rle`).

Format (a JSON object): `{"size": [H, W], "counts": [c0, c1, c2, ...]}`. The mask is flattened
in row-major order (row 0 left to right, then row 1, ...); `counts` are the lengths of
alternating runs, starting with a run of 0s (which is 0 long when the first pixel is 1); the
counts sum to `H * W`. An all-zero 2x3 mask is `[6]`; an all-one mask is `[0, 6]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """`(H, W)` mask (any dtype; nonzero counts as 1) -> `{"size": [H, W], "counts": [...]}`."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    height, width = mask.shape
    flat = np.asarray(mask).reshape(-1) != 0
    if flat.size == 0:
        return {"size": [height, width], "counts": []}
    # Indices where the value changes, plus both ends, give the run boundaries.
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return {"size": [height, width], "counts": runs}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of `encode_rle` -> `(H, W) uint8` {0, 1}; raises ValueError on a malformed encoding."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"malformed RLE: {err}") from err
    if height < 0 or width < 0:
        raise ValueError(f"RLE size must be non-negative, got {[height, width]}")
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("RLE counts must be a flat list of non-negative integers")
    if int(counts.sum()) != height * width:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {height * width}")
    values = (np.arange(counts.size) % 2).astype(np.uint8)
    return np.repeat(values, counts).reshape(height, width)
