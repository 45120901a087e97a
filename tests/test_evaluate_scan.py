"""lib/evaluation.py's Scan and operating-point choice, and logging evaluation results to the training run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lib.decision import Decision, min_area_candidates, save_decision
from lib.evaluation import Scan, decide, decision_for_data, write_operating_points
from lib.tracking import log_to_run

POINTS = [(0.4, 0.0), (0.5, 0.0)]  # (threshold, min_component_ratio)


def settings(threshold="auto", min_area_fraction="auto", max_fp_image_rate=None, enabled=True):
    """The EvaluateConfig keys decide() reads; no false-alarm cap unless given."""
    negatives = SimpleNamespace(enabled=enabled, fp_area=0.01, max_fp_image_rate=max_fp_image_rate)
    return SimpleNamespace(
        threshold=threshold, choose_on="val", min_area_fraction=min_area_fraction, negatives=negatives
    )


def scan() -> Scan:
    """Two 10x10 images at thresholds 0.4 and 0.5: a polyp found at both, an empty frame with a false
    alarm at 0.4 only; and one polyp-free crop with 5 % predicted at 0.4 and 3 % at 0.5."""
    polyp = np.array([[20, 5, 0, 75], [20, 0, 0, 80]])  # tp, fp, fn, tn per threshold
    empty = np.array([[0, 10, 0, 90], [0, 0, 0, 100]])
    return Scan(["a", "b"], [polyp, empty], [(10, 10)] * 2, [("b", 0)], [np.array([0.05, 0.03])])


def test_scan_areas_split_into_positives_and_negatives():
    s = scan()
    assert s.areas(0).tolist() == [0.25, 0.1] and s.areas(1).tolist() == [0.2, 0.0]
    assert s.positive_areas(0).tolist() == [0.25]
    assert s.negative_areas(0).tolist() == [0.1, 0.05]  # the empty frame, then the crop
    assert s.dice(1).tolist() == [1.0, 1.0]  # nothing predicted on an empty mask counts as right
    assert s.dice().shape == (2, 2) and s.dice(0)[0] == pytest.approx(40 / 45)


def test_decide_picks_the_best_threshold_and_a_separating_min_area():
    cfg = settings()
    decision = decide(cfg, scan(), POINTS, trained=0.4)
    assert decision.threshold == 0.5  # mean Dice 1 against 0.94 at 0.4
    # the smallest candidate above the crop's 3 % that still counts the polyp's 20 %
    assert decision.min_area_fraction == min(c for c in min_area_candidates() if 0.03 < c <= 0.2)
    assert decision.chosen_on == "val (2 images + 1 negative crops)"


def test_decide_keeps_the_checkpoint_threshold_and_a_configured_min_area():
    cfg = settings("checkpoint", 0.01)
    assert decide(cfg, scan(), POINTS, trained=0.4) == Decision(
        0.4, 0.01, "val (2 images; min area from the config)"
    )
    no_negatives = Scan(["a"], [np.array([[20, 5, 0, 75], [20, 0, 0, 80]])])
    cfg = settings()
    assert decide(cfg, no_negatives, POINTS, trained=0.4).min_area_fraction == 0.0


def test_decide_chooses_threshold_and_filter_together_and_reads_areas_at_that_point():
    # Counts at (0.4, 0), (0.4, 0.3), (0.5, 0), (0.5, 0.3): the filter at 0.4 removes the polyp image's
    # speck (fp 5 -> 0) and most of the empty frame's false alarm.
    polyp = np.array([[20, 5, 0, 75], [20, 0, 0, 80], [18, 3, 2, 77], [18, 0, 2, 80]])
    empty = np.array([[0, 10, 0, 90], [0, 6, 0, 94], [0, 10, 0, 90], [0, 6, 0, 94]])
    s = Scan(["a", "b"], [polyp, empty], [(10, 10)] * 2, [("b", 0)], [np.array([0.05, 0.04, 0.03, 0.02])])
    points = [(0.4, 0.0), (0.4, 0.3), (0.5, 0.0), (0.5, 0.3)]
    cfg = settings()
    decision = decide(cfg, s, points, trained=0.5)
    assert (decision.threshold, decision.min_component_ratio) == (0.4, 0.3)
    # min area separates the polyp's 20 % from the negatives' 6 % and 4 % at that point, not at another
    assert 0.06 < decision.min_area_fraction <= 0.2
    cfg = settings("checkpoint", 0.01)
    assert (
        decide(cfg, s, points, trained=0.5).threshold,
        decide(cfg, s, points, trained=0.5).min_component_ratio,
    ) == (0.5, 0.3)


def test_every_point_tried_is_written_with_its_mean_dice_and_the_choice_marked(tmp_path):
    import csv

    cfg = settings()
    decision = decide(cfg, scan(), POINTS, trained=0.4)
    write_operating_points(tmp_path / "points.csv", POINTS, scan(), decision, fp_area=0.04)
    rows = list(csv.DictReader(open(tmp_path / "points.csv")))
    assert [(float(r["threshold"]), float(r["min_component_ratio"])) for r in rows] == POINTS
    assert float(rows[1]["dice_mean"]) == 1.0 and float(rows[0]["dice_mean"]) == pytest.approx((40 / 45) / 2)
    assert [r["chosen"] for r in rows] == ["0", "1"]
    assert [float(r["crop_fp_image_rate"]) for r in rows] == [1.0, 0.0]  # the crop: 5 % at 0.4, 3 % at 0.5
    no_crops = Scan(["a"], [np.array([[20, 5, 0, 75], [20, 0, 0, 80]])])
    write_operating_points(tmp_path / "points.csv", POINTS, no_crops, decision, fp_area=0.04)
    assert [r["crop_fp_image_rate"] for r in csv.DictReader(open(tmp_path / "points.csv"))] == ["", ""]


def alarming_scan() -> Scan:
    """One polyp image, best at 0.4 (Dice 0.95 against 0.9 at 0.5); two polyp-free crops, one of them
    with 5 % predicted at 0.4 and nothing at 0.5."""
    polyp = np.array([[19, 1, 1, 79], [18, 2, 2, 78]])
    return Scan(["a"], [polyp], [(10, 10)], [("a", 0), ("a", 1)], [np.array([0.05, 0.0]), np.zeros(2)])


def test_the_false_alarm_cap_rules_out_the_best_dice_point():
    s = alarming_scan()
    assert s.crop_fp_rates(0.01).tolist() == [0.5, 0.0]
    assert decide(settings(), s, POINTS, trained=0.5).threshold == 0.4  # no cap: best Dice
    assert decide(settings(max_fp_image_rate=0.5), s, POINTS, trained=0.5).threshold == 0.4  # within it
    capped = decide(settings(max_fp_image_rate=0.05), s, POINTS, trained=0.4)
    assert capped.threshold == 0.5
    assert capped.chosen_on == "val (1 images + 2 negative crops, false alarms <= 0.05)"
    # negatives off: no crops weigh in, the cap is not applied
    assert decide(settings(max_fp_image_rate=0.05, enabled=False), s, POINTS, trained=0.5).threshold == 0.4


def test_when_no_point_meets_the_cap_the_least_alarming_is_chosen_and_said(capsys):
    polyp = np.array([[19, 1, 1, 79], [18, 2, 2, 78]])
    crops = [np.array([0.05, 0.02]), np.array([0.05, 0.0])]  # alarms: both crops at 0.4, one at 0.5
    s = Scan(["a"], [polyp], [(10, 10)], [("a", 0), ("a", 1)], crops)
    decision = decide(settings(max_fp_image_rate=0.05), s, POINTS, trained=0.4)
    assert decision.threshold == 0.5 and "false-alarm cap 0.05 not met" in decision.chosen_on
    assert "fewest (0.500)" in capsys.readouterr().err
    # the cap narrows the candidates, it does not override threshold: checkpoint
    pinned = decide(settings("checkpoint", max_fp_image_rate=0.05), s, POINTS, trained=0.4)
    assert pinned.threshold == 0.4 and "not met" in pinned.chosen_on


def test_another_centre_reuses_the_main_decision_else_the_checkpoint(tmp_path):
    cfg = SimpleNamespace(out_dir=str(tmp_path), min_area_fraction="auto", min_component_ratio="auto")
    fallback = decision_for_data(cfg, "conf/evaluate.yaml", trained=0.45)
    assert (fallback.threshold, fallback.min_area_fraction, fallback.min_component_ratio) == (0.45, 0.0, 0.0)
    fixed = SimpleNamespace(out_dir=str(tmp_path), min_area_fraction=0.01, min_component_ratio=0.2)
    assert decision_for_data(fixed, "c.yaml", trained=0.45).min_component_ratio == 0.2
    save_decision(tmp_path / "decision.json", Decision(0.6, 0.02, "val (150 images)", 0.3))
    reused = decision_for_data(cfg, "conf/evaluate.yaml", trained=0.45)
    assert (reused.threshold, reused.min_area_fraction, reused.min_component_ratio) == (0.6, 0.02, 0.3)
    assert reused.chosen_on == f"val (150 images), via {tmp_path / 'decision.json'}"


def test_results_are_logged_to_the_training_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns.db")
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "index.html").write_text("<html></html>")
    results = {
        "test": {"dice_mean": 0.8, "n_images": 3, "git_sha": "abc"},  # only floats are results
        "robustness": {"corruptions": {"blur": {"1": {"params": {"sigma": 1.5}, "dice_mean": 0.7}}}},
    }
    assert log_to_run(run_id, results, str(tmp_path / "eval")) == f"logged to MLflow run {run_id}"
    metrics = client.get_run(run_id).data.metrics
    assert metrics == {"test_dice_mean": 0.8, "robustness_corruptions.blur.1.dice_mean": 0.7}
    assert [a.path for a in client.list_artifacts(run_id, "eval")] == ["eval/index.html"]
    assert log_to_run("0" * 32, results, str(tmp_path / "eval")).startswith("not logged to MLflow")
