import numpy as np
import pytest

from lib import metrics as M


def mask(cols: slice = slice(0, 0), size: int = 4) -> np.ndarray:
    """A `(size, size)` {0, 1} mask with whole columns set."""
    m = np.zeros((size, size), np.uint8)
    m[:, cols] = 1
    return m


def scores(pred: np.ndarray, target: np.ndarray) -> dict:
    return M.image_metrics(pred.astype(np.float32), target, threshold=0.5)  # pred is 0/1


def test_confusion_counts_each_cell():
    pred = np.array([[1, 1], [0, 0]])
    target = np.array([[1, 0], [1, 0]])
    assert M.confusion(pred, target) == (1, 1, 1, 1)


def test_confusion_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        M.confusion(np.zeros((2, 2)), np.zeros((2, 3)))


def test_identical_masks_score_one():
    s = scores(mask(slice(1, 3)), mask(slice(1, 3)))
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (1.0, 1.0, 1.0, 1.0)


def test_disjoint_masks_score_zero():
    s = scores(mask(slice(0, 2)), mask(slice(2, 4)))
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (0.0, 0.0, 0.0, 0.0)


def test_half_overlap():
    s = scores(mask(slice(1, 3)), mask(slice(0, 2)))  # tp = fp = fn = 4, tn = 4
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (4, 4, 4, 4)
    assert s["dice"] == 0.5 and s["iou"] == pytest.approx(1 / 3)
    assert s["precision"] == 0.5 and s["recall"] == 0.5


def test_empty_prediction_and_target_score_one():
    s = scores(mask(), mask())
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (1.0, 1.0, 1.0, 1.0)
    assert s["tn"] == 16


def test_prediction_on_empty_target_scores_zero_except_recall():
    s = scores(mask(slice(0, 1)), mask())
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (0.0, 0.0, 0.0, 1.0)


def test_empty_prediction_on_a_polyp_scores_zero_except_precision():
    s = scores(mask(), mask(slice(0, 1)))
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (0.0, 0.0, 1.0, 0.0)


def test_full_masks_score_one():
    s = scores(mask(slice(0, 4)), mask(slice(0, 4)))
    assert (s["dice"], s["iou"], s["tp"], s["tn"]) == (1.0, 1.0, 16, 0)


def test_image_metrics_threshold_is_inclusive():
    prob = np.array([[0.5, 0.49]])
    s = M.image_metrics(prob, np.array([[1, 0]]), threshold=0.5)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (1, 0, 0, 1)


def two_images() -> list[dict]:
    """A large polyp found perfectly (dice 1) and a 1-pixel polyp missed (dice 0)."""
    big = scores(np.ones((10, 10)), np.ones((10, 10)))
    tiny_target = np.zeros((10, 10))
    tiny_target[0, 0] = 1
    tiny = scores(np.zeros((10, 10)), tiny_target)
    return [big, tiny]


def test_summarise_mean_and_pooled_differ():
    s = M.summarise(two_images())
    assert s["dice_mean"] == 0.5
    assert s["dice_pooled"] == pytest.approx(200 / 201)  # tp = 100, fp = 0, fn = 1
    assert s["recall_pooled"] == pytest.approx(100 / 101)
    assert s["n_images"] == 2


def test_summarise_spread_over_images():
    s = M.summarise(two_images())
    assert s["dice_std"] == 0.5 and s["dice_median"] == 0.5


def test_summarise_rejects_no_images():
    with pytest.raises(ValueError):
        M.summarise([])


def test_threshold_histograms_bin_by_probability():
    prob = np.array([[0.05, 0.95], [1.0, 0.5]])
    target = np.array([[0, 1], [1, 0]])
    pos, neg = M.threshold_histograms(prob, target, bins=10)
    assert pos.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert neg.tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]


def hand_curve() -> dict:
    prob = np.array([[0.9, 0.6, 0.4, 0.1]])
    target = np.array([[1, 0, 1, 0]])
    return M.pr_curve(*M.threshold_histograms(prob, target, bins=10))


def test_pr_curve_at_threshold_zero_predicts_everything():
    curve = hand_curve()
    assert curve["thresholds"][0] == 0.0
    assert curve["recall"][0] == 1.0
    assert curve["precision"][0] == 0.5  # 2 polyp pixels of 4


def test_pr_curve_at_top_threshold():
    curve = hand_curve()  # only prob 0.9 is >= 0.9
    assert curve["thresholds"][-1] == 0.9
    assert (curve["precision"][-1], curve["recall"][-1]) == (1.0, 0.5)


def test_pr_curve_average_precision_by_hand():
    # Recall 0 -> 0.5 at precision 1 (t = 0.9), 0.5 -> 1 at precision 2/3 (t = 0.4).
    assert hand_curve()["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_pr_curve_dice_matches_pooled_image_metrics_summed_over_images():
    rng = np.random.default_rng(0)
    probs = [rng.random((8, 8)) for _ in range(3)]
    targets = [rng.random((8, 8)) < 0.3 for _ in range(3)]
    hists = [M.threshold_histograms(p, t, bins=100) for p, t in zip(probs, targets, strict=True)]
    curve = M.pr_curve(sum(h[0] for h in hists), sum(h[1] for h in hists))
    pooled = M.summarise([M.image_metrics(p, t, threshold=0.5) for p, t in zip(probs, targets, strict=True)])
    assert curve["dice"][50] == pytest.approx(pooled["dice_pooled"])


def test_pr_curve_needs_a_foreground_pixel():
    with pytest.raises(ValueError, match="foreground"):
        M.pr_curve(np.zeros(10), np.ones(10))
