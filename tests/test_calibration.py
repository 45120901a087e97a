import numpy as np
import pytest

from lib.calibration import calibration_bins, reliability


def pixels(groups: list[tuple[float, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """`(1, N)` probabilities and targets from (probability, pixels, of which polyp) groups."""
    prob, target = [], []
    for p, n, positives in groups:
        prob += [p] * n
        target += [1] * positives + [0] * (n - positives)
    return np.array([prob], np.float32), np.array([target], np.uint8)


def test_perfectly_calibrated_pixels_have_zero_ece():
    # 5 bins of width 0.2; each group sits at a bin centre with exactly that share of polyp pixels.
    prob, target = pixels([(0.1, 10, 1), (0.3, 10, 3), (0.5, 10, 5), (0.7, 10, 7), (0.9, 10, 9)])
    result = reliability(calibration_bins(prob, target, bins=5))
    assert result["ece"] == pytest.approx(0.0, abs=1e-6)
    assert result["n_pixels"] == 50


def test_confidently_wrong_pixels_give_the_known_ece():
    # 10 pixels at 0.9 that are all background, 30 at 0.1 that are all polyp: every bin is 0.9 off.
    prob, target = pixels([(0.9, 10, 0), (0.1, 30, 30)])
    assert reliability(calibration_bins(prob, target, bins=10))["ece"] == pytest.approx(0.9)


def test_ece_weights_bins_by_pixels():
    # Bins of 0.25: 30 pixels at 0.8, half polyp (gap 0.3); 10 at 0.25, none polyp (gap 0.25).
    prob, target = pixels([(0.8, 30, 15), (0.25, 10, 0)])
    result = reliability(calibration_bins(prob, target, bins=4))
    assert result["ece"] == pytest.approx(30 / 40 * 0.3 + 10 / 40 * 0.25)
    assert result["count"].tolist() == [0, 10, 0, 30]
    assert np.isnan(result["accuracy"][0]) and np.isnan(result["confidence"][2])


def test_summing_images_equals_one_split():
    rng = np.random.default_rng(0)
    prob, target = rng.random((2, 8, 8)).astype(np.float32), rng.random((2, 8, 8)) < 0.3
    per_image = calibration_bins(prob[0], target[0]) + calibration_bins(prob[1], target[1])
    assert np.allclose(per_image, calibration_bins(prob.reshape(16, 8), target.reshape(16, 8)))


def test_probability_one_lands_in_the_last_bin():
    sums = calibration_bins(np.array([[1.0, 0.0]]), np.array([[1, 0]]), bins=4)
    assert sums[:, 0].tolist() == [1, 0, 0, 1]


def test_no_pixels_is_an_error():
    with pytest.raises(ValueError):
        reliability(np.zeros((15, 3)))
