"""Overlay drawing and montage layout."""

from __future__ import annotations

import numpy as np
import pytest

from lib.overlay import GT_COLOUR, PRED_COLOUR, draw_overlay, montage, outline


def test_outline_is_a_band_on_the_boundary():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    band = outline(mask, thickness=1)
    assert band[5, 10] and band[4, 10] and not band[10, 10] and not band[0, 0]


def test_prediction_is_red_and_ground_truth_green():
    rgb = np.full((40, 40, 3), 100, np.uint8)
    pred = np.zeros((40, 40), np.uint8)
    pred[10:30, 10:30] = 1
    gt = np.zeros((40, 40), np.uint8)
    gt[0:8, 0:8] = 1
    out = draw_overlay(rgb, pred, gt)
    assert tuple(out[10, 20]) == PRED_COLOUR
    assert tuple(out[8, 4]) == GT_COLOUR
    assert out[20, 20, 0] > 100 and out[20, 20, 1] < 100  # translucent red fill
    assert tuple(out[39, 39]) == (100, 100, 100)  # untouched background


def test_montage_grid_shape():
    tiles = [np.zeros((30, 50, 3), np.uint8)] * 5
    assert montage(tiles, columns=2, tile_size=16).shape == (48, 32, 3)
    with pytest.raises(ValueError):
        montage([], columns=2)
