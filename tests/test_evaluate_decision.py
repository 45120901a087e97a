"""Choosing the operating point (lib/decision.py) from the per-point counts of lib/evaluation.py, and the
one mask function every consumer uses."""

import numpy as np
import pytest
from bin_helpers import ROOT, load_bin

from lib.config import ConfigError
from lib.decision import (
    Decision,
    binary_mask,
    checkpoint_threshold,
    choose_min_area,
    choose_point,
    component_block,
    image_level,
    masks_at_points,
    min_area_candidates,
    operating_points,
    polyp_detected,
)
from lib.evaluation import point_confusions
from lib.metrics import confusion, count_metrics, image_metrics
from lib.model_contract import meta_from_dict
from lib.negatives import false_alarm_summary

GRID = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]
RATIOS = [0.0, 0.1, 0.3, 0.5]


def dice_matrix(images: list[tuple[np.ndarray, np.ndarray]], thresholds, ratios=(0.0,)) -> np.ndarray:
    return np.array(
        [[count_metrics(*c)["dice"] for c in point_confusions(p, t, thresholds, ratios)] for p, t in images]
    )


def blobs(*boxes, shape=(40, 40), value=0.9) -> np.ndarray:
    """A probability map at 0.1 with `value` inside each (y0, y1, x0, x1) box."""
    prob = np.full(shape, 0.1, np.float32)
    for y0, y1, x0, x1 in boxes:
        prob[y0:y1, x0:x1] = value
    return prob


def test_without_the_filter_the_mask_is_the_threshold():
    rng = np.random.default_rng(0)
    prob = rng.random((20, 30)).astype(np.float32)
    assert np.array_equal(binary_mask(prob, 0.6), prob >= 0.6)
    assert np.array_equal(binary_mask(prob, 0.6, 0.0), prob >= 0.6)


def test_the_filter_drops_specks_and_keeps_the_largest_region():
    prob = blobs((5, 25, 5, 25), (30, 32, 30, 32))  # a 400-pixel polyp and a 4-pixel speck
    mask = binary_mask(prob, 0.5, 0.1)
    assert mask.sum() == 400 and not mask[30:32, 30:32].any()
    assert binary_mask(prob, 0.5, 0.0).sum() == 404  # 0 keeps every region
    assert binary_mask(prob, 0.5, 1.0).sum() == 400  # the largest always survives
    # a region of exactly the ratio's share survives (>=)
    assert binary_mask(blobs((0, 10, 0, 10), (20, 25, 20, 25)), 0.5, 0.25).sum() == 125


def test_two_polyps_of_similar_size_are_both_kept():
    prob = blobs((2, 12, 2, 12), (25, 34, 25, 35))  # 100 and 90 pixels
    assert binary_mask(prob, 0.5, 0.5).sum() == 190
    assert binary_mask(np.zeros((8, 8), np.float32), 0.5, 0.3).sum() == 0  # nothing predicted: nothing kept


def test_regions_touching_at_a_corner_are_one_region():
    prob = blobs((0, 10, 0, 10), (10, 11, 10, 11))  # the single pixel touches the square diagonally
    assert binary_mask(prob, 0.5, 0.5).sum() == 101  # 8-connectivity, as count_components counts


def test_the_decision_and_model_json_make_the_same_mask():
    prob = blobs((5, 25, 5, 25), (30, 32, 30, 32))
    decision = Decision(0.5, 0.0, "test", min_component_ratio=0.2)
    meta = meta_from_dict(
        {
            "input_size": 32,
            "input_name": "input",
            "output_name": "logits",
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "threshold": 0.5,
            "min_area_fraction": 0.0,
            "decision_chosen_on": "test",
            "model_version": "t",
            "git_sha": "t",
            "data_rev": "t",
            "opset": 17,
            "sha256": "0" * 64,
            "min_component_ratio": 0.2,
        }
    )
    assert np.array_equal(decision.mask(prob), binary_mask(prob, 0.5, 0.2))
    assert np.array_equal(meta.mask(prob), decision.mask(prob))
    assert meta.mask(prob, threshold=0.95).sum() == 0  # a client's threshold, the model's filter


def plain_filter(prob: np.ndarray, t: float, r: float, block: int = 1) -> np.ndarray:
    """The filter written plainly, over the whole image: mark every `block` x `block` tile (from the
    top-left corner) holding a mask pixel, label the marked tiles, size each region by its mask pixels,
    keep regions >= r x the largest. The reference binary_mask's box-only labelling must agree with."""
    import cv2

    mask = prob >= t
    if r <= 0:
        return mask
    h, w = mask.shape
    gh, gw = -(-h // block), -(-w // block)
    padded = np.zeros((gh * block, gw * block), np.int64)
    padded[:h, :w] = mask
    counts = padded.reshape(gh, block, gw, block).sum(axis=(1, 3))
    n, labels = cv2.connectedComponents((counts > 0).astype(np.uint8), connectivity=8)
    areas = np.bincount(labels.ravel(), weights=counts.ravel(), minlength=n)[1:]
    if len(areas) <= 1:
        return mask
    kept_tiles = np.isin(labels, np.flatnonzero(areas >= r * areas.max()) + 1)
    return mask & kept_tiles.repeat(block, axis=0).repeat(block, axis=1)[:h, :w]


def test_masks_at_points_are_binary_mask_at_each_point():
    rng = np.random.default_rng(3)
    prob = cv2_blur(rng.random((48, 64)).astype(np.float32))
    masks = list(masks_at_points(prob, GRID, RATIOS))
    points = operating_points(GRID, RATIOS)
    assert len(masks) == len(points) == len(GRID) * len(RATIOS)
    for (t, r), mask in zip(points, masks):
        assert np.array_equal(mask, binary_mask(prob, t, r)), (t, r)
        assert np.array_equal(mask, plain_filter(prob, t, r)), (t, r)  # under 512 px: pixel regions


@pytest.mark.parametrize("shape", [(512, 700), (1070, 1348), (1072, 1920), (600, 515)])
def test_large_images_are_labelled_on_blocks(shape):
    """At 512 px and more a region is a group of blocks (component_block): the box-only labelling with
    block sums must equal the plain whole-image tiling, also where the box starts off the tile grid."""
    rng = np.random.default_rng(shape[1])
    import cv2

    small = cv2_blur(rng.random((shape[0] // 8, shape[1] // 8)).astype(np.float32))
    prob = cv2.resize(small, shape[::-1], interpolation=cv2.INTER_LINEAR)
    prob[:37] = 0.0  # the predicted pixels' box starts off the block grid
    block = component_block(*shape)
    assert block == min(shape) // 256 > 1
    dropped = 0
    for t in (0.45, 0.55, 0.65):
        for r in (0.1, 0.5):
            mask = binary_mask(prob, t, r)
            assert np.array_equal(mask, plain_filter(prob, t, r, block)), (shape, t, r)
            dropped += int((prob >= t).sum() - mask.sum())
    assert dropped > 0  # the blobs gave the filter something to drop


def test_on_blocks_a_narrow_gap_joins_and_a_speck_goes_by_its_pixels():
    prob = np.zeros((1070, 1348), np.float32)  # 4-px blocks
    prob[100:400, 100:400] = 0.9  # the polyp: 90,000 px
    prob[100:400, 402:405] = 0.9  # 2 px away: the same region on the block grid
    prob[700:703, 900:903] = 0.9  # a 9-px speck far away
    mask = binary_mask(prob, 0.5, 0.3)
    assert mask[100:400, 402:405].all() and not mask[700:703, 900:903].any()
    assert mask.sum() == 90_000 + 900
    prob[700:1000, 900:1200] = 0.9  # now a second polyp the size of the first: both stay
    assert binary_mask(prob, 0.5, 0.5).sum() == (prob >= 0.5).sum()


def cv2_blur(x: np.ndarray) -> np.ndarray:
    """Smooth noise into blobs of several sizes, so the filter has something to drop."""
    import cv2

    return cv2.GaussianBlur(x, (0, 0), 2.0)


def test_point_confusions_match_image_metrics_of_the_mask():
    rng = np.random.default_rng(0)
    prob, target = cv2_blur(rng.random((20, 30)).astype(np.float32)), rng.random((20, 30)) < 0.4
    counts = point_confusions(prob, target, GRID, RATIOS)
    for (t, r), row in zip(operating_points(GRID, RATIOS), counts):
        assert tuple(row) == confusion(binary_mask(prob, t, r), target)
        if r == 0:
            m = image_metrics(prob, target, t)
            assert count_metrics(*row) == m


def test_the_threshold_separating_polyp_from_background_is_chosen():
    # Polyp pixels at 0.62, background at 0.58: only thresholds in (0.58, 0.62] give Dice 1.
    target = np.zeros((10, 10), np.uint8)
    target[2:6, 3:8] = 1
    prob = np.where(target == 1, 0.62, 0.58).astype(np.float32)
    dice = dice_matrix([(prob, target)], GRID)
    assert choose_point(dice, operating_points(GRID, [0.0]), prefer=0.5) == (0.6, 0.0)
    assert dice[0, GRID.index(0.6)] == 1.0 and dice[0, GRID.index(0.55)] < 1.0


def test_a_filter_that_removes_a_false_speck_is_chosen():
    target = np.zeros((40, 40), bool)
    target[5:25, 5:25] = True
    prob = blobs((5, 25, 5, 25), (30, 33, 30, 33))  # the polyp, and a 9-pixel false alarm
    points = operating_points([0.5], RATIOS)
    dice = dice_matrix([(prob, target)], [0.5], RATIOS)
    assert dice[0, 0] < 1.0 and dice[0, 1] == 1.0
    assert choose_point(dice, points, prefer=0.5) == (0.5, 0.1)  # ties go to the weaker filter


def test_the_mean_over_images_decides():
    # Image 1 is best at 0.4, image 2 at 0.65; image 2 loses more away from its best.
    points = operating_points(GRID, [0.0])
    dice = np.zeros((2, len(GRID)))
    dice[0, GRID.index(0.4)], dice[1, GRID.index(0.65)] = 0.9, 1.0
    assert choose_point(dice, points, prefer=0.5) == (0.65, 0.0)


def test_ties_go_to_the_threshold_closest_to_the_checkpoints_then_the_weaker_filter():
    points = operating_points(GRID, [0.0])
    assert choose_point(np.ones((3, len(GRID))), points, prefer=0.5) == (0.5, 0.0)
    assert choose_point(np.ones((3, len(GRID))), points, prefer=0.62) == (0.6, 0.0)
    dice = np.zeros((1, len(GRID)))
    dice[0, GRID.index(0.4)] = dice[0, GRID.index(0.65)] = 0.8
    assert choose_point(dice, points, prefer=0.5) == (0.4, 0.0)
    assert choose_point(dice, points, prefer=0.6) == (0.65, 0.0)
    both = operating_points(GRID, RATIOS)
    assert choose_point(np.ones((2, len(both))), both, prefer=0.45) == (0.45, 0.0)


def test_the_checkpoint_threshold_is_read_by_name():
    assert checkpoint_threshold({"threshold": 0.45}) == 0.45
    with pytest.raises(ValueError, match="no 'threshold'"):
        checkpoint_threshold({"mean": [0.5] * 3})
    with pytest.raises(ValueError, match="'threshold' must be"):
        checkpoint_threshold({"threshold": 1.5})


def test_separable_areas_give_perfect_balanced_accuracy():
    positives, negatives = [0.05, 0.1, 0.3], [0.0, 0.002, 0.004, 0.01]
    chosen = choose_min_area(positives, negatives, min_area_candidates())
    result = image_level(positives, negatives, chosen)
    assert result["sensitivity"] == 1.0 and result["specificity"] == 1.0
    # the smallest candidate that works: just above the largest negative
    assert chosen == min(c for c in min_area_candidates() if 0.01 < c <= 0.05)


def test_min_area_ties_go_to_the_smaller_value():
    # Negatives with nothing predicted are never detected, so 0 already separates.
    assert choose_min_area([0.2, 0.4], [0.0, 0.0], min_area_candidates()) == 0.0


def test_image_level_counts():
    result = image_level([0.0, 0.02, 0.2], [0.0, 0.03, 0.001], 0.01)
    assert (result["true_positives"], result["false_negatives"]) == (2, 1)
    assert (result["true_negatives"], result["false_positives"]) == (2, 1)
    assert result["sensitivity"] == pytest.approx(2 / 3) and result["specificity"] == pytest.approx(2 / 3)
    assert image_level([0.1], [], 0.0)["specificity"] is None


def test_image_level_agrees_with_polyp_detected_on_masks():
    rng = np.random.default_rng(1)
    masks = [rng.random((20, 20)) < p for p in (0.0, 0.004, 0.01, 0.05, 0.3)]
    areas = [m.mean() for m in masks]
    for min_area in (0.0, 0.005, 0.01, 0.1):
        detected = sum(polyp_detected(m, min_area) for m in masks)
        assert image_level(areas, [], min_area)["true_positives"] == detected


def test_false_alarm_summary():
    summary = false_alarm_summary([0.0, 0.005, 0.02, 0.5], fp_area=0.01)
    assert summary["n_images"] == 4 and summary["fp_image_rate"] == 0.5
    assert summary["fp_area_mean"] == pytest.approx(0.525 / 4)
    assert false_alarm_summary([])["n_images"] == 0 and false_alarm_summary([])["fp_image_rate"] is None


@pytest.mark.parametrize("conf", ["conf/evaluate.yaml", "conf/smoke/evaluate.yaml"])
def test_evaluate_configs_load(conf):
    evaluate = load_bin("evaluate")
    cfg = evaluate.load_config(evaluate.EvaluateConfig, ROOT / conf)
    assert cfg.choose_on in cfg.splits and cfg.threshold == "auto" and cfg.min_component_ratio == "auto"
    assert 0.0 in cfg.component_ratio_grid and max(cfg.component_ratio_grid) <= 0.5  # off is a candidate
    assert set(cfg.negatives.splits) <= set(cfg.splits) and cfg.robustness.split in cfg.splits


def test_the_config_holds_no_threshold_number_only_how_to_choose_it():
    evaluate = load_bin("evaluate")
    cfg = evaluate.load_config(
        evaluate.EvaluateConfig, ROOT / "conf/smoke/evaluate.yaml", ["threshold=checkpoint"]
    )
    assert cfg.threshold == "checkpoint"
    for value in ("0.4", "high"):  # a number here would be a second source beside conf/train.yaml
        with pytest.raises(ConfigError, match="threshold"):
            evaluate.load_config(
                evaluate.EvaluateConfig, ROOT / "conf/smoke/evaluate.yaml", [f"threshold={value}"]
            )


@pytest.mark.parametrize("override", ["component_ratio_grid=[0.1, 1.5]", "min_component_ratio=-0.2"])
def test_component_ratios_outside_0_1_are_refused(override, capsys):
    evaluate = load_bin("evaluate")
    assert evaluate.main(["--conf", str(ROOT / "conf/smoke/evaluate.yaml"), "--set", override]) == 2
    assert "component ratios must be in [0, 1]" in capsys.readouterr().err
