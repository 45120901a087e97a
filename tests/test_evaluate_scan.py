"""lib/evaluation.py's Scan and operating-point choice, and logging evaluation results to the training run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lib.decision import Decision, min_area_candidates, save_decision
from lib.evaluation import Scan, decide, decision_for_data
from lib.tracking import log_to_run

THRESHOLDS = [0.4, 0.5]


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
    cfg = SimpleNamespace(threshold="auto", choose_on="val", min_area_fraction="auto")
    decision = decide(cfg, scan(), THRESHOLDS, trained=0.4)
    assert decision.threshold == 0.5  # mean Dice 1 against 0.94 at 0.4
    # the smallest candidate above the crop's 3 % that still counts the polyp's 20 %
    assert decision.min_area_fraction == min(c for c in min_area_candidates() if 0.03 < c <= 0.2)
    assert decision.chosen_on == "val (2 images + 1 negative crops)"


def test_decide_keeps_the_checkpoint_threshold_and_a_configured_min_area():
    cfg = SimpleNamespace(threshold="checkpoint", choose_on="val", min_area_fraction=0.01)
    assert decide(cfg, scan(), THRESHOLDS, trained=0.4) == Decision(
        0.4, 0.01, "val (2 images; min area from the config)"
    )
    no_negatives = Scan(["a"], [np.array([[20, 5, 0, 75], [20, 0, 0, 80]])])
    cfg = SimpleNamespace(threshold="auto", choose_on="val", min_area_fraction="auto")
    assert decide(cfg, no_negatives, THRESHOLDS, trained=0.4).min_area_fraction == 0.0


def test_another_centre_reuses_the_main_decision_else_the_checkpoint(tmp_path):
    cfg = SimpleNamespace(out_dir=str(tmp_path), min_area_fraction="auto")
    fallback = decision_for_data(cfg, "conf/evaluate.yaml", trained=0.45)
    assert (fallback.threshold, fallback.min_area_fraction) == (0.45, 0.0)
    save_decision(tmp_path / "decision.json", Decision(0.6, 0.02, "val (150 images)"))
    reused = decision_for_data(cfg, "conf/evaluate.yaml", trained=0.45)
    assert (reused.threshold, reused.min_area_fraction) == (0.6, 0.02)
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
