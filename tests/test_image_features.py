"""lib/image_features.py on synthetic arrays whose features can be worked out by hand."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lib.image_features import (
    FEATURE_NAMES,
    circular_hue_mean,
    edge_connected_share,
    features_from_bytes,
    image_features,
    laplacian_variance,
)
from lib.io import DecodeError


def solid(rgb: tuple[int, int, int], h: int = 40, w: int = 60) -> np.ndarray:
    return np.full((h, w, 3), rgb, np.uint8)


def test_every_feature_is_a_finite_float_in_the_declared_order():
    rng = np.random.default_rng(0)
    features = image_features(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8), 1234)
    assert tuple(features) == FEATURE_NAMES
    assert all(isinstance(v, float) and np.isfinite(v) for v in features.values())


def test_size_aspect_and_bytes_per_pixel():
    f = image_features(solid((10, 20, 30), h=40, w=60), n_bytes=600)
    assert (f["width"], f["height"], f["aspect_ratio"]) == (60.0, 40.0, 1.5)
    assert f["bytes_per_pixel"] == pytest.approx(600 / 2400)


def test_uniform_grey_image_has_no_spread_no_colour_no_edges():
    f = image_features(solid((128, 128, 128)), 100)
    assert f["brightness_mean"] == pytest.approx(128 / 255)
    assert f["brightness_std"] == 0.0
    assert f["red_mean"] == f["green_mean"] == f["blue_mean"] == pytest.approx(128 / 255)
    assert f["saturation_mean"] == 0.0 and f["hue_mean"] == 0.0  # no colour, no hue
    assert f["value_mean"] == pytest.approx(128 / 255)
    assert f["sharpness"] == 0.0
    assert f["black_border_share"] == 0.0 and f["specular_share"] == 0.0


@pytest.mark.parametrize(
    ("rgb", "hue"),
    [((255, 0, 0), 0.0), ((0, 255, 0), 120.0), ((0, 0, 255), -120.0), ((0, 255, 255), 180.0)],
)
def test_pure_colours_have_full_saturation_and_their_hue_centred_on_red(rgb, hue):
    f = image_features(solid(rgb), 100)
    assert f["hue_mean"] == pytest.approx(hue, abs=1e-3)
    assert f["saturation_mean"] == pytest.approx(1.0)
    assert f["value_mean"] == pytest.approx(1.0)
    assert (f["red_mean"], f["green_mean"], f["blue_mean"]) == pytest.approx(tuple(c / 255 for c in rgb))


def test_hue_mean_is_circular_and_ignores_grey_pixels():
    # Half the pixels at 350 degrees, half at 10: both red, so the mean is 0, not 180.
    assert circular_hue_mean(np.array([350.0, 10.0]), np.array([1.0, 1.0])) == pytest.approx(0.0, abs=1e-9)
    # A grey pixel (weight 0) does not pull the mean.
    assert circular_hue_mean(np.array([120.0, 0.0]), np.array([1.0, 0.0])) == pytest.approx(120.0)
    assert circular_hue_mean(np.array([30.0]), np.array([0.0])) == 0.0


def test_greyscale_copy_of_a_colour_image_has_zero_saturation():
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    grey = cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert image_features(colour, 1)["saturation_mean"] > 0.3
    assert image_features(grey, 1)["saturation_mean"] == 0.0


def test_sharpness_is_the_laplacian_variance_worked_out_by_hand():
    # One white pixel inside black: the 3x3 Laplacian is -4*255 there and 255 at its 4 neighbours.
    grey = np.zeros((10, 10), np.uint8)
    grey[5, 5] = 255
    values = np.array([-4 * 255] + [255] * 4 + [0] * 95, np.float64)
    assert laplacian_variance(grey) == pytest.approx(values.var())


def test_blur_lowers_sharpness():
    checker = (np.indices((64, 64)).sum(axis=0) // 4 % 2 * 255).astype(np.uint8)
    rgb = np.repeat(checker[..., None], 3, axis=2)
    blurred = cv2.GaussianBlur(rgb, (0, 0), 2.0)
    assert image_features(blurred, 1)["sharpness"] < 0.2 * image_features(rgb, 1)["sharpness"]


def test_black_frame_counts_as_border_but_a_dark_centre_does_not():
    framed = solid((180, 60, 50), h=100, w=100)
    framed[:10], framed[-10:], framed[:, :10], framed[:, -10:] = 0, 0, 0, 0
    assert image_features(framed, 1)["black_border_share"] == pytest.approx((100 * 100 - 80 * 80) / 10000)
    lumen = solid((180, 60, 50), h=100, w=100)
    lumen[40:60, 40:60] = 5  # dark, but not touching the edge
    assert image_features(lumen, 1)["black_border_share"] == 0.0


def test_black_corner_box_connected_to_the_edge_counts_with_diagonal_contact():
    mask = np.zeros((10, 10), bool)
    mask[7:, :3] = True  # a corner box: 9 pixels
    mask[6, 3] = True  # touches the box only diagonally (8-connectivity)
    mask[3, 5] = True  # an isolated pixel inside
    assert edge_connected_share(mask) == pytest.approx(10 / 100)
    assert edge_connected_share(np.ones((4, 4), bool)) == 1.0
    assert edge_connected_share(np.zeros((4, 4), bool)) == 0.0


def test_specular_share_counts_near_white_low_saturation_pixels_only():
    rgb = solid((200, 80, 70), h=100, w=100)
    rgb[:10, :10] = (250, 250, 245)  # a highlight: 1 % of the image
    rgb[50:60, 50:60] = (255, 40, 40)  # bright but saturated red: tissue, not a highlight
    assert image_features(rgb, 1)["specular_share"] == pytest.approx(0.01)


def test_darkening_halves_brightness_and_keeps_saturation_and_hue():
    rng = np.random.default_rng(2)
    rgb = rng.integers(60, 256, (40, 40, 3), dtype=np.uint8)
    dark = (rgb.astype(np.float32) * 0.5).round().astype(np.uint8)
    f, g = image_features(rgb, 1), image_features(dark, 1)
    assert g["brightness_mean"] == pytest.approx(f["brightness_mean"] / 2, rel=0.02)
    assert g["saturation_mean"] == pytest.approx(f["saturation_mean"], abs=0.02)
    assert g["hue_mean"] == pytest.approx(f["hue_mean"], abs=1.0)


def test_features_from_bytes_uses_the_file_size_and_refuses_garbage():
    rgb = solid((120, 40, 30), h=20, w=30)
    data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    f = features_from_bytes(data)
    assert f["bytes_per_pixel"] == pytest.approx(len(data) / 600)
    assert f["red_mean"] == pytest.approx(120 / 255)
    with pytest.raises(DecodeError):
        features_from_bytes(b"not an image")


@pytest.mark.parametrize(
    ("array", "n_bytes"),
    [
        (np.zeros((4, 4), np.uint8), 1),
        (np.zeros((4, 4, 3), np.float32), 1),
        (np.zeros((4, 4, 3), np.uint8), -1),
    ],
)
def test_bad_input_is_refused(array, n_bytes):
    with pytest.raises(ValueError):
        image_features(array, n_bytes)
