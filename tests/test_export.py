"""ONNX export: the contract (names, shapes, opset), parity arithmetic, model.json, and the real CLI.

Unit tests export a one-layer torch module (sub-second); the CLI tests export a tiny smp U-Net
checkpoint in bin/train.py's format on 5 real validation images and log to a SQLite MLflow store.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from bin_helpers import load_bin, write_catalog
from torch import nn

from lib.decision import Decision, save_decision
from lib.io import sha256_file
from lib.model_contract import meta_to_dict, read_model_json
from lib.onnx_export import check_onnx, export_onnx, model_metadata, parity
from lib.onnx_session import make_session, session_runner
from lib.pyfunc_model import example_frame

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw" / "Kvasir-SEG"
REQUIRED_KEYS = {
    "input_size",
    "input_name",
    "output_name",
    "mean",
    "std",
    "threshold",
    "min_area_fraction",
    "decision_chosen_on",
    "model_version",
    "git_sha",
    "data_rev",
    "opset",
}
DECISION = Decision(
    threshold=0.4, min_area_fraction=0.02, chosen_on="val (5 images)", min_component_ratio=0.3
)


def save_tiny_checkpoint(path: Path, run_id: str = "0" * 32, size: int = 64, val_dice: float = 0.5) -> Path:
    """A random-weight Lite0 U-Net saved with bin/train.py's checkpoint keys."""
    from lib.model import ModelConfig, build_model, normalisation

    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="Unet",
        encoder="tu-tf_efficientnet_lite0",
        encoder_weights=None,
        decoder_channels=(16, 16, 16, 16, 8),
        input_size=size,
    )
    mean, std = normalisation(cfg.encoder)
    torch.save(
        {
            "state_dict": build_model(cfg).state_dict(),
            "model_config": asdict(cfg),
            "config": {},
            "mean": list(mean),
            "std": list(std),
            "metadata": {
                "git_sha": "abc1234def",
                "git_dirty": False,
                "data_rev": "rev0",
                "model_version": "abc1234-tiny",
                "run_id": run_id,
                "epoch": 1,
                "val_dice": val_dice,
            },
        },
        path,
    )
    return path


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1)).eval()


def test_static_export_has_the_contract_names_shapes_and_a_current_opset(tmp_path):
    path = export_onnx(tiny_net(), tmp_path / "model.onnx", size=32, opset=20)
    info = check_onnx(path)
    assert info["inputs"] == {"input": [1, 3, 32, 32]} and info["outputs"] == {"logits": [1, 1, 32, 32]}
    assert info["opset"] >= 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # weights inside, no .data file


def test_dynamic_export_runs_any_batch_and_matches_torch(tmp_path):
    net = tiny_net()
    path = export_onnx(net, tmp_path / "model_dynamic.onnx", size=32, opset=20, dynamic_batch=True)
    assert check_onnx(path)["inputs"]["input"][0] == "batch"
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    got = session_runner(make_session(path))(x)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 1, 32, 32) and np.abs(got - want).max() < 1e-5


def test_parity_is_zero_for_identical_runners_and_exact_for_a_constant_offset():
    rgb = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)

    def zeros(x):
        return np.zeros((1, 1, 32, 32), np.float32)

    def ones(x):
        return np.ones((1, 1, 32, 32), np.float32)

    same = parity(zeros, zeros, {"a": rgb}, 32, (0.5,) * 3, (0.5,) * 3, threshold=0.5)
    assert same["mean_abs_diff"] == 0.0 and same["images"][0]["mask_agreement"] == 1.0
    off = parity(zeros, ones, {"a": rgb, "b": rgb}, 32, (0.5,) * 3, (0.5,) * 3, threshold=0.5)
    expected = 1 / (1 + np.exp(-1.0)) - 0.5  # sigmoid(1) - sigmoid(0) on every pixel
    assert off["mean_abs_diff"] == pytest.approx(expected, rel=1e-6)
    assert off["max_abs_diff"] == pytest.approx(expected, rel=1e-6) and len(off["images"]) == 2


def test_model_metadata_carries_every_required_key():
    ckpt = {
        "model_config": {"input_size": 256, "encoder": "x"},
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "metadata": {"model_version": "v", "git_sha": "s", "data_rev": "d", "run_id": "r"},
    }
    meta = meta_to_dict(model_metadata(ckpt, opset=20, decision=DECISION, onnx_sha256="0" * 64))
    assert REQUIRED_KEYS <= set(meta) and meta["input_name"] == "input" and meta["output_name"] == "logits"
    assert (meta["threshold"], meta["min_area_fraction"], meta["decision_chosen_on"]) == (
        0.4,
        0.02,
        "val (5 images)",
    )
    assert meta["min_component_ratio"] == 0.3  # the served mask's filter, chosen with the threshold
    assert json.loads(json.dumps(meta)) == meta  # plain JSON (no NaN, no numpy types)


def export_args(tmp_path: Path, ckpt: Path, *extra: str) -> list[str]:
    """CLI arguments exporting `ckpt` into tmp_path with DECISION as the operating point."""
    if not (tmp_path / "decision.json").exists():
        save_decision(tmp_path / "decision.json", DECISION)
    sets = {
        "checkpoint": ckpt,
        "out_dir": tmp_path / "models",
        "parity_report": tmp_path / "parity.json",
        "mlflow_report": tmp_path / "mlflow.json",
        "parity_split": ROOT / "data/splits/val.csv",
        "dynamic": "false",
        "decision": tmp_path / "decision.json",
    }
    if RAW.is_dir():  # the originals' catalog (tests of bad input fail before reading it)
        catalog, summary = write_catalog(RAW, tmp_path / "catalog")
        sets |= {"catalog": catalog, "sources_summary": summary}
    args = ["--conf", str(ROOT / "conf/export.yaml")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args + [a for e in extra for a in ("--set", e)]


@pytest.mark.integration
@pytest.mark.skipif(not RAW.is_dir(), reason="needs data/raw/Kvasir-SEG (make data)")
def test_cli_exports_checks_parity_and_logs_loadable_models_into_the_training_run(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("polyp-seg", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:  # stands for the training run
        mlflow.log_metric("best_val_dice", 0.5)
    ckpt = save_tiny_checkpoint(tmp_path / "best.pt", run_id=run.info.run_id)

    assert load_bin("export").main(export_args(tmp_path, ckpt)) == 0
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["passed"] and report["mean_abs_diff"] < 1e-4 and report["n_images"] == 5
    meta = json.loads((tmp_path / "models/model.json").read_text())
    assert REQUIRED_KEYS <= set(meta) and meta["opset"] >= 18 and meta["run_id"] == run.info.run_id
    models = tmp_path / "models"
    assert read_model_json(models / "model.json").sha256 == sha256_file(models / "model.onnx")  # the contract
    # the operating point comes from decision.json, nowhere else
    assert (meta["threshold"], meta["min_area_fraction"], meta["min_component_ratio"]) == (0.4, 0.02, 0.3)
    assert (tmp_path / "models/model.onnx").is_file() and (tmp_path / "models/export_config.yaml").is_file()

    logged = json.loads((tmp_path / "mlflow.json").read_text())
    assert logged["run_id"] == run.info.run_id and not logged["created_run"]
    stem = (ROOT / "data/splits/val.csv").read_text().splitlines()[1].split(",")[0]
    image = RAW / "images" / f"{stem}.jpg"
    out = mlflow.pyfunc.load_model(logged["pyfunc_model_uri"]).predict(example_frame(image.read_bytes()))
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(out.mask_png[0]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (out.height[0], out.width[0])
    assert out.polyp_detected[0] == (out.polyp_fraction[0] >= 0.02 and out.polyp_fraction[0] > 0)


@pytest.mark.integration
@pytest.mark.skipif(not RAW.is_dir(), reason="needs data/raw/Kvasir-SEG (make data)")
def test_cli_fails_when_parity_is_outside_the_tolerance(tmp_path, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "best.pt")
    args = export_args(tmp_path, ckpt, "tolerance=0.0", "log_to_mlflow=false")
    assert load_bin("export").main(args) == 1
    assert not json.loads((tmp_path / "parity.json").read_text())["passed"]
    assert "FAILED" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content",
    [None, "{not json", '{"threshold": 0.5}', '{"threshold": 0.5, "min_area_fraction": 1.5}', "[]"],
    ids=["missing", "not-json", "no-min-area", "out-of-range", "not-an-object"],
)
def test_cli_refuses_a_missing_or_malformed_decision_file(tmp_path, capsys, content):
    path = tmp_path / "eval" / "decision.json"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    args = export_args(tmp_path, tmp_path / "absent.pt", f"decision={path}")
    assert load_bin("export").main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "run the evaluate stage" in err
    assert not (tmp_path / "models").exists()  # refused before exporting anything
