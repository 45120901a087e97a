import dataclasses

import numpy as np
import pytest

from lib import transforms as T
from lib.config import from_dict


def square(size: int = 8, rows: slice = slice(1, 3), cols: slice = slice(5, 7)):
    """A black image and empty mask with the same square painted in both."""
    image = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    image[rows, cols] = (200, 100, 50)
    mask[rows, cols] = 1
    return image, mask


def random_pair(size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : size // 2, size // 3 : 3 * size // 4] = 1
    return image, mask


def off(config: T.AugmentConfig) -> T.AugmentConfig:
    """Every probability set to 0."""
    return T.AugmentConfig(
        flip=T.Flip(p_horizontal=0.0, p_vertical=0.0),
        rotate=dataclasses.replace(config.rotate, p=0.0),
        affine=dataclasses.replace(config.affine, p=0.0),
        elastic=dataclasses.replace(config.elastic, p=0.0),
        brightness_contrast=dataclasses.replace(config.brightness_contrast, p=0.0),
        hue_saturation_gamma=dataclasses.replace(config.hue_saturation_gamma, p=0.0),
        blur=dataclasses.replace(config.blur, p=0.0),
    )


def always() -> T.AugmentConfig:
    """Every transform applied."""
    c = T.AugmentConfig()
    return T.AugmentConfig(
        flip=T.Flip(p_horizontal=1.0, p_vertical=1.0),
        rotate=dataclasses.replace(c.rotate, p=1.0),
        affine=dataclasses.replace(c.affine, p=1.0),
        elastic=dataclasses.replace(c.elastic, p=1.0),
        brightness_contrast=dataclasses.replace(c.brightness_contrast, p=1.0),
        hue_saturation_gamma=dataclasses.replace(c.hue_saturation_gamma, p=1.0),
        blur=dataclasses.replace(c.blur, p=1.0),
    )


GEOMETRIC = {
    "hflip": lambda i, m: T.hflip(i, m),
    "vflip": lambda i, m: T.vflip(i, m),
    "rotate": lambda i, m: T.rotate(i, m, 33.0),
    "affine": lambda i, m: T.affine(i, m, 1.13, 0.07, -0.05),
    "elastic": lambda i, m: T.elastic(i, m, 4.0, 8.0, np.random.default_rng(0)),
}

PHOTOMETRIC = {
    "brightness_contrast": lambda i: T.adjust_brightness_contrast(i, 0.1, -0.15),
    "hue_saturation_gamma": lambda i: T.adjust_hue_saturation_gamma(i, 8.0, 0.2, 1.1),
    "blur": lambda i: T.blur(i, 5),
}


# --- geometric -------------------------------------------------------------------------------


def test_hflip_twice_is_identity():
    image, mask = random_pair()
    image2, mask2 = T.hflip(*T.hflip(image, mask))
    np.testing.assert_array_equal(image2, image)
    np.testing.assert_array_equal(mask2, mask)


def test_hflip_moves_square_to_the_left():
    image, mask = T.hflip(*square())  # columns 5..6 of 8 -> 1..2
    _, expected = square(cols=slice(1, 3))
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(image[..., 0] > 0, expected.astype(bool))


def test_vflip_moves_square_to_the_bottom():
    _, mask = T.vflip(*square())  # rows 1..2 of 8 -> 5..6
    _, expected = square(rows=slice(5, 7))
    np.testing.assert_array_equal(mask, expected)


def test_flips_return_contiguous_arrays():
    image, mask = T.hflip(*random_pair())
    assert image.flags.c_contiguous and mask.flags.c_contiguous


def test_rotate_90_turns_square_counter_clockwise():
    image, mask = square()  # top-right corner -> top-left corner
    rotated_image, rotated_mask = T.rotate(image, mask, 90.0)
    np.testing.assert_array_equal(rotated_mask, np.rot90(mask))
    np.testing.assert_array_equal(rotated_image, np.rot90(image))


def test_rotate_fills_uncovered_corners_with_zero():
    image = np.full((16, 16, 3), 255, np.uint8)
    mask = np.ones((16, 16), np.uint8)
    rotated_image, rotated_mask = T.rotate(image, mask, 45.0)
    assert rotated_mask[0, 0] == 0 and rotated_mask[8, 8] == 1
    assert rotated_image[0, 0].tolist() == [0, 0, 0]


def test_affine_shift_moves_image_and_mask_together():
    image, mask = square(size=16, rows=slice(4, 8), cols=slice(4, 8))
    shifted_image, shifted_mask = T.affine(image, mask, 1.0, 2 / 16, -1 / 16)  # 2 px right, 1 px up
    expected_image, expected_mask = square(size=16, rows=slice(3, 7), cols=slice(6, 10))
    np.testing.assert_array_equal(shifted_mask, expected_mask)
    np.testing.assert_array_equal(shifted_image, expected_image)


def test_affine_scale_2_doubles_centred_square():
    _, mask = square(rows=slice(3, 5), cols=slice(3, 5))  # 2x2 at the centre of 8x8
    _, zoomed = T.affine(np.zeros((8, 8, 3), np.uint8), mask, 2.0, 0.0, 0.0)
    _, expected = square(rows=slice(2, 6), cols=slice(2, 6))
    np.testing.assert_array_equal(zoomed, expected)


def test_elastic_with_zero_alpha_is_identity():
    image, mask = random_pair()
    image2, mask2 = T.elastic(image, mask, 0.0, 8.0, np.random.default_rng(0))
    np.testing.assert_array_equal(image2, image)
    np.testing.assert_array_equal(mask2, mask)


def test_elastic_moves_no_pixel_further_than_alpha():
    image, mask = square(size=32, rows=slice(10, 20), cols=slice(12, 22))
    _, warped = T.elastic(image, mask, 2.0, 8.0, np.random.default_rng(0))
    assert not np.array_equal(warped, mask)
    # Every foreground pixel of the result came from within alpha (+1 for rounding) of the square.
    assert warped[10 - 3 : 20 + 3, 12 - 3 : 22 + 3].sum() == warped.sum()
    assert warped[10 + 3 : 20 - 3, 12 + 3 : 22 - 3].all()


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_keeps_shapes_dtypes_and_binary_mask(name):
    image, mask = random_pair()
    image2, mask2 = GEOMETRIC[name](image, mask)
    assert image2.shape == image.shape and image2.dtype == np.uint8
    assert mask2.shape == mask.shape and mask2.dtype == np.uint8
    assert set(np.unique(mask2)) <= {0, 1}


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_does_not_modify_inputs(name):
    image, mask = random_pair()
    before = image.copy(), mask.copy()
    GEOMETRIC[name](image, mask)
    np.testing.assert_array_equal(image, before[0])
    np.testing.assert_array_equal(mask, before[1])


# --- photometric -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_keeps_shape_and_dtype(name):
    image, _ = random_pair()
    out = PHOTOMETRIC[name](image)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_brightness_adds_fraction_of_255():
    image = np.full((2, 2, 3), 100, np.uint8)
    assert T.adjust_brightness_contrast(image, 0.2, 0.0).tolist() == np.full((2, 2, 3), 151).tolist()


def test_brightness_clips_at_255():
    image = np.full((2, 2, 3), 250, np.uint8)
    assert (T.adjust_brightness_contrast(image, 0.2, 0.0) == 255).all()


def test_contrast_stretches_about_the_mean():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0], image[1] = 100, 200  # mean 150
    out = T.adjust_brightness_contrast(image, 0.0, 0.5)
    assert out[0, 0, 0] == 75 and out[1, 0, 0] == 225


def test_hue_shift_of_120_degrees_turns_red_into_green():
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    green = T.adjust_hue_saturation_gamma(red, 120.0, 0.0, 1.0)
    assert green[0, 0].tolist() == [0, 255, 0]


def test_gamma_maps_intensity_through_power():
    image = np.full((2, 2, 3), 64, np.uint8)
    out = T.adjust_hue_saturation_gamma(image, 0.0, 0.0, 0.5)
    assert (out == 128).all()  # 255 * sqrt(64 / 255) = 127.75


def test_neutral_hue_saturation_gamma_is_identity():
    image, _ = random_pair()
    np.testing.assert_array_equal(T.adjust_hue_saturation_gamma(image, 0.0, 0.0, 1.0), image)


def test_blur_leaves_a_uniform_image_unchanged():
    image = np.full((8, 8, 3), 77, np.uint8)
    np.testing.assert_array_equal(T.blur(image, 5), image)


def test_blur_spreads_a_bright_dot():
    image = np.zeros((7, 7, 3), np.uint8)
    image[3, 3] = 255
    out = T.blur(image, 3)
    assert 0 < out[3, 3, 0] < 255 and out[3, 4, 0] > 0 and out[3, 5, 0] == 0


def test_blur_rejects_an_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        T.blur(np.zeros((4, 4, 3), np.uint8), 4)


# --- augment ---------------------------------------------------------------------------------


def test_augment_is_deterministic_for_a_seed():
    image, mask = random_pair(64)
    a = T.augment(image, mask, always(), np.random.default_rng(7))
    b = T.augment(image, mask, always(), np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_augment_differs_between_seeds():
    image, mask = random_pair(64)
    a = T.augment(image, mask, always(), np.random.default_rng(7))
    b = T.augment(image, mask, always(), np.random.default_rng(8))
    assert not np.array_equal(a[0], b[0])


def test_augment_with_zero_probabilities_is_identity():
    image, mask = random_pair()
    image2, mask2 = T.augment(image, mask, off(T.AugmentConfig()), np.random.default_rng(0))
    np.testing.assert_array_equal(image2, image)
    np.testing.assert_array_equal(mask2, mask)


def test_augment_disabled_is_identity():
    image, mask = random_pair()
    image2, mask2 = T.augment(image, mask, T.AugmentConfig(enabled=False), np.random.default_rng(0))
    np.testing.assert_array_equal(image2, image)
    np.testing.assert_array_equal(mask2, mask)


@pytest.mark.parametrize("seed", range(5))
def test_augment_keeps_shapes_dtypes_and_binary_mask(seed):
    image, mask = random_pair(64)
    image2, mask2 = T.augment(image, mask, always(), np.random.default_rng(seed))
    assert image2.shape == image.shape and image2.dtype == np.uint8
    assert mask2.shape == mask.shape and mask2.dtype == np.uint8
    assert set(np.unique(mask2)) <= {0, 1}


def test_augment_photometric_only_leaves_mask_untouched():
    c = always()
    config = dataclasses.replace(
        off(c),
        brightness_contrast=c.brightness_contrast,
        hue_saturation_gamma=c.hue_saturation_gamma,
        blur=c.blur,
    )
    image, mask = random_pair()
    image2, mask2 = T.augment(image, mask, config, np.random.default_rng(0))
    assert not np.array_equal(image2, image)
    np.testing.assert_array_equal(mask2, mask)


def test_augment_keeps_image_and_mask_aligned():
    image, mask = square(size=64, rows=slice(10, 30), cols=slice(20, 44))
    image[mask == 1] = 255
    c = always()
    config = dataclasses.replace(off(c), flip=c.flip, rotate=c.rotate, affine=c.affine)
    for seed in range(3):
        image2, mask2 = T.augment(image, mask, config, np.random.default_rng(seed))
        painted = image2[..., 0] >= 128
        # Linear vs nearest interpolation may disagree on the boundary, never inside the square.
        agree = np.count_nonzero(painted & (mask2 == 1)) / np.count_nonzero(painted | (mask2 == 1))
        assert agree > 0.9


def test_augment_rejects_mismatched_sizes():
    image, mask = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.uint8)
    with pytest.raises(ValueError, match="differ"):
        T.augment(image, mask, T.AugmentConfig(), np.random.default_rng(0))


def test_augment_config_loads_from_nested_yaml_values():
    config = from_dict(T.AugmentConfig, {"rotate": {"max_degrees": 90}, "affine": {"scale": [0.9, 1.1]}})
    assert config.rotate == T.Rotate(p=0.5, max_degrees=90.0)
    assert config.affine.scale == (0.9, 1.1)
    assert config.elastic == T.Elastic()
