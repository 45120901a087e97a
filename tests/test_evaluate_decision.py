"""Choosing the operating point (lib/decision.py) from the per-threshold counts of lib/metrics.py."""

import numpy as np
import pytest
from bin_helpers import ROOT, load_bin

from lib.config import ConfigError
from lib.decision import (
    checkpoint_threshold,
    choose_min_area,
    choose_threshold,
    image_level,
    min_area_candidates,
    polyp_detected,
)
from lib.metrics import count_metrics, image_metrics, threshold_confusions
from lib.negatives import false_alarm_summary

GRID = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]


def dice_matrix(images: list[tuple[np.ndarray, np.ndarray]], thresholds) -> np.ndarray:
    return np.array(
        [[count_metrics(*c)["dice"] for c in threshold_confusions(p, t, thresholds)] for p, t in images]
    )


def test_threshold_confusions_match_image_metrics_at_every_threshold():
    rng = np.random.default_rng(0)
    prob, target = rng.random((20, 30)).astype(np.float32), rng.random((20, 30)) < 0.4
    for threshold, counts in zip(GRID, threshold_confusions(prob, target, GRID)):
        m = image_metrics(prob, target, threshold)
        assert tuple(counts) == (m["tp"], m["fp"], m["fn"], m["tn"])
        assert count_metrics(*counts) == m


def test_the_threshold_separating_polyp_from_background_is_chosen():
    # Polyp pixels at 0.62, background at 0.58: only thresholds in (0.58, 0.62] give Dice 1.
    target = np.zeros((10, 10), np.uint8)
    target[2:6, 3:8] = 1
    prob = np.where(target == 1, 0.62, 0.58).astype(np.float32)
    dice = dice_matrix([(prob, target)], GRID)
    assert choose_threshold(dice, GRID, prefer=0.5) == 0.6
    assert dice[0, GRID.index(0.6)] == 1.0 and dice[0, GRID.index(0.55)] < 1.0


def test_the_mean_over_images_decides():
    # Image 1 is best at 0.4, image 2 at 0.65; image 2 loses more away from its best.
    dice = np.zeros((2, len(GRID)))
    dice[0, GRID.index(0.4)], dice[1, GRID.index(0.65)] = 0.9, 1.0
    assert choose_threshold(dice, GRID, prefer=0.5) == 0.65


def test_ties_go_to_the_threshold_closest_to_the_checkpoints():
    assert choose_threshold(np.ones((3, len(GRID))), GRID, prefer=0.5) == 0.5
    assert choose_threshold(np.ones((3, len(GRID))), GRID, prefer=0.62) == 0.6
    dice = np.zeros((1, len(GRID)))
    dice[0, GRID.index(0.4)] = dice[0, GRID.index(0.65)] = 0.8
    assert choose_threshold(dice, GRID, prefer=0.5) == 0.4
    assert choose_threshold(dice, GRID, prefer=0.6) == 0.65


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
    assert cfg.choose_on in cfg.splits and cfg.threshold == "auto"
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
