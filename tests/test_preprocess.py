"""The shared preprocessing: shapes, dtypes, normalisation round trip, geometry restore."""

from __future__ import annotations

import numpy as np

from lib.preprocess import (
    LITE_MEAN,
    LITE_STD,
    normalise,
    prepare_input,
    resize_image,
    resize_mask,
    restore_mask,
    sigmoid,
)


def test_prepare_input_shape_dtype_and_geometry():
    rgb = np.zeros((300, 500, 3), np.uint8)
    x, geometry = prepare_input(rgb, 256, LITE_MEAN, LITE_STD)
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32
    assert (geometry.height, geometry.width, geometry.size) == (300, 500, 256)
    assert np.allclose(x, -1.0)  # black is -1 under mean 0.5, std 0.5


def test_normalise_puts_channels_first():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255
    x = normalise(rgb, (0, 0, 0), (1, 1, 1))
    assert x.shape == (3, 4, 5) and x[0].min() == 1.0 and x[1].max() == 0.0


def test_resize_mask_stays_binary_and_keeps_area():
    mask = np.zeros((400, 600), np.uint8)
    mask[100:300, 150:450] = 1
    small = resize_mask(mask, 256)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1}
    assert abs(small.mean() - mask.mean()) < 0.01


def test_resize_image_shape():
    assert resize_image(np.zeros((1072, 1920, 3), np.uint8), 256).shape == (256, 256, 3)


def test_restore_mask_returns_original_size():
    prob = np.zeros((256, 256), np.float32)
    prob[:, 128:] = 1.0
    _, geometry = prepare_input(np.zeros((300, 500, 3), np.uint8), 256, LITE_MEAN, LITE_STD)
    restored = restore_mask(prob, geometry)
    assert restored.shape == (300, 500)
    assert restored[:, :240].max() == 0.0 and restored[:, 260:].min() == 1.0


def test_sigmoid_is_stable_at_extremes():
    out = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert np.allclose(out, [0.0, 0.5, 1.0]) and np.isfinite(out).all()
