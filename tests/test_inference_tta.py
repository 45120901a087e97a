"""Flip test-time augmentation: each flipped pass is flipped back before averaging."""

from __future__ import annotations

import numpy as np
import pytest

from lib.inference import predict_probability
from lib.preprocess import sigmoid

SIZE = 16
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def left_half_model(x: np.ndarray) -> np.ndarray:
    """Logit +4 on the left half of the input, -4 on the right: not flip-equivariant."""
    out = np.full((1, 1, SIZE, SIZE), -4.0, np.float32)
    out[..., : SIZE // 2] = 4.0
    return out


def brightness_model(x: np.ndarray) -> np.ndarray:
    """Logit = first channel of the input: flip-equivariant, so TTA must not change it."""
    return x[:, :1] * 3.0


def test_tta_averages_flipped_back_passes():
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    plain = predict_probability(left_half_model, rgb, SIZE, MEAN, STD)
    hflip = predict_probability(left_half_model, rgb, SIZE, MEAN, STD, tta="hflip")
    high, low = sigmoid(np.float32([4.0]))[0], sigmoid(np.float32([-4.0]))[0]
    assert plain[:, 0] == pytest.approx(high) and plain[:, -1] == pytest.approx(low)
    # The flipped pass says "left half" of the flipped image = right half once flipped back.
    assert hflip == pytest.approx(np.full_like(hflip, (high + low) / 2), abs=1e-6)


def test_tta_leaves_an_equivariant_model_unchanged():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    plain = predict_probability(brightness_model, rgb, SIZE, MEAN, STD)
    for mode in ("hflip", "hvflip"):
        assert predict_probability(brightness_model, rgb, SIZE, MEAN, STD, tta=mode) == pytest.approx(
            plain, abs=1e-6
        )


def test_unknown_tta_mode_is_refused():
    with pytest.raises(ValueError, match="tta must be one of"):
        predict_probability(brightness_model, np.zeros((4, 4, 3), np.uint8), SIZE, MEAN, STD, tta="rot90")
