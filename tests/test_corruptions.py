import cv2
import numpy as np
import pytest

from lib.corruptions import SEVERITIES, corrupt

SEED = 7


def scene(h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A textured image in mid-grey levels (no clipping at either end) and an off-centre box mask."""
    yy, xx = np.mgrid[:h, :w]
    checker = ((yy // 8 + xx // 8) % 2).astype(np.float32)
    rgb = np.stack([60 + 120 * checker + 0.2 * xx, 70 + 100 * checker, 90 + 0.3 * yy], axis=2)
    mask = np.zeros((h, w), np.uint8)
    mask[20:60, 30:90] = 1
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def sharpness(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def change(name: str, severity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rgb, mask = scene()
    out, out_mask = corrupt(rgb, mask, name, severity, SEED, "frame")
    return rgb, mask, out, out_mask


ALL = [(name, s) for name, severities in SEVERITIES.items() for s in severities]


@pytest.mark.parametrize(("name", "severity"), ALL)
def test_same_seed_same_result_and_the_image_changes(name, severity):
    rgb, mask, first, first_mask = change(name, severity)
    again, again_mask = corrupt(rgb, mask, name, severity, SEED, "frame")
    assert np.array_equal(first, again) and np.array_equal(first_mask, again_mask)
    assert first.shape == rgb.shape and first.dtype == np.uint8
    assert first_mask.shape == mask.shape and set(np.unique(first_mask)) <= {0, 1}
    assert np.abs(first.astype(int) - rgb).mean() > 1.0


@pytest.mark.parametrize("name", [n for n in SEVERITIES if n != "rotation"])
def test_photometric_corruptions_leave_the_mask_alone(name):
    _, mask, _, out_mask = change(name, 2)
    assert np.array_equal(out_mask, mask)


def test_the_image_stem_enters_the_seed():
    rgb, mask = scene()
    a, _ = corrupt(rgb, mask, "gaussian_noise", 1, SEED, "frame-a")
    b, _ = corrupt(rgb, mask, "gaussian_noise", 1, SEED, "frame-b")
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", ["gaussian_blur", "motion_blur", "downscale"])
def test_blur_removes_more_detail_at_higher_severity(name):
    rgb, _ = scene()
    values = [sharpness(rgb)] + [sharpness(change(name, s)[2]) for s in sorted(SEVERITIES[name])]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)


@pytest.mark.parametrize("name", ["jpeg", "gaussian_noise", "brightness"])
def test_higher_severity_moves_pixels_further(name):
    errors = []
    for s in sorted(SEVERITIES[name]):
        rgb, _, out, _ = change(name, s)
        errors.append(np.abs(out.astype(float) - rgb).mean())
    assert errors == sorted(errors) and len(set(errors)) == len(errors)


def test_contrast_flattens_more_at_higher_severity():
    rgb, _ = scene()
    spreads = [rgb.std()] + [change("contrast", s)[2].std() for s in sorted(SEVERITIES["contrast"])]
    assert spreads == sorted(spreads, reverse=True)


def test_rotation_moves_image_and_mask_together():
    rgb, mask = scene()
    rgb[mask == 1] = (250, 0, 0)  # the object is pure red, nothing else is
    out, out_mask = corrupt(rgb, mask, "rotation", 2, SEED, "frame")
    red = (out[..., 0] > 200) & (out[..., 1] < 50) & (out[..., 2] < 50)
    overlap = np.count_nonzero(red & (out_mask == 1)) / np.count_nonzero(red | (out_mask == 1))
    assert overlap > 0.9  # only interpolated edge pixels may disagree
    assert not np.array_equal(out_mask, mask)
    assert abs(int(out_mask.sum()) - int(mask.sum())) < 0.05 * mask.sum()  # the box stays inside the frame


def test_stronger_rotation_moves_the_mask_further():
    _, mask = scene()
    ious = []
    for s in sorted(SEVERITIES["rotation"]):
        out_mask = change("rotation", s)[3]
        ious.append(np.count_nonzero(out_mask & mask) / np.count_nonzero(out_mask | mask))
    assert ious == sorted(ious, reverse=True)


def test_unknown_corruption_is_named():
    rgb, mask = scene()
    with pytest.raises(KeyError, match="fog"):
        corrupt(rgb, mask, "fog", 1, SEED, "frame")
