"""Smoke integration: train and evaluate on 16 real images; the model learns and every report exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bin_helpers import ROOT, run_script

pytestmark = pytest.mark.integration

DICE_FLOOR = 0.5  # an untrained net scores ~0.25 here; the overfit run reaches far more (see README)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    if not (ROOT / "data" / "processed" / "images.npy").exists():
        pytest.skip("data/processed missing: run `make data` first (make ci does)")
    out = tmp_path_factory.mktemp("smoke")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{out}/mlruns.db", "MLFLOW_DISABLE_TELEMETRY": "true"}
    train = run_script(
        "train.py", "--conf", "conf/smoke/train.yaml",
        "--set", f"out_dir={out}/models", "--set", f"metrics={out}/train_metrics.json", env=env,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    evaluate = run_script(
        "evaluate.py", "--conf", "conf/smoke/evaluate.yaml",
        "--set", f"checkpoint={out}/models/best.pt", "--set", f"out_dir={out}/eval", env=env,
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    return out, train.stdout, evaluate.stdout, env


def test_overfit_run_learns(smoke_run):
    out, *_ = smoke_run
    metrics = json.loads((out / "eval" / "train16" / "metrics.json").read_text())
    assert metrics["n_images"] == 16
    assert metrics["dice_mean"] >= DICE_FLOOR


def test_every_report_file_exists(smoke_run):
    out, *_ = smoke_run
    split = out / "eval" / "train16"
    for name in ("metrics.json", "per_image.csv", "pr_curve.png", "dice_hist.png", "montage.png"):
        assert (split / name).stat().st_size > 0, name
    assert len(list((split / "overlays").glob("*.png"))) == 6  # 2 each of worst, best, random
    assert (out / "eval" / "index.html").read_text().count("NOT FOR CLINICAL USE") == 1
    metrics = json.loads((split / "metrics.json").read_text())
    for key in ("dice_mean", "iou_mean", "precision_mean", "recall_mean", "n_images", "threshold",
                "git_sha", "data_rev", "model_version"):  # fmt: skip
        assert key in metrics


def test_progress_and_summary_lines(smoke_run):
    _, train_out, eval_out, _ = smoke_run
    assert "epoch 1/" in train_out and "eta" in train_out
    assert train_out.strip().splitlines()[-1].startswith("train: best val_dice=")
    assert eval_out.strip().splitlines()[-1].startswith("evaluate: train16: 16 images dice=")


def test_mlflow_run_holds_params_metrics_tags_artifacts(smoke_run):
    out, _, _, env = smoke_run
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("polyp-seg-smoke")
    (run,) = client.search_runs([experiment.experiment_id])
    for key in ("model.encoder", "model.input_size", "optim.lr", "seed", "augment.enabled"):
        assert key in run.data.params
    for key in ("loss", "val_dice", "best_val_dice", "train16_dice_mean"):
        assert key in run.data.metrics
    for key in ("git_sha", "git_dirty", "data_rev", "model_version"):
        assert run.data.tags.get(key)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "training")}
    assert {"training/config.yaml", "training/requirements.lock", "training/best.pt"} <= artifacts
    assert client.list_artifacts(run.info.run_id, "eval")


def test_checkpoint_carries_normalisation_and_config(smoke_run):
    out, *_ = smoke_run
    import torch

    ckpt = torch.load(Path(out) / "models" / "best.pt", weights_only=False)
    assert ckpt["mean"] == [0.5, 0.5, 0.5] and ckpt["std"] == [0.5, 0.5, 0.5]
    assert ckpt["model_config"]["encoder"] == "tu-tf_efficientnet_lite0"
    assert ckpt["config"]["limit"] == 16
