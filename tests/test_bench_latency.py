"""Latency benchmark: the INT8 adoption rule, the timing summary, and a short real run of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bin_helpers import load_bin

from lib.quantize import int8_decision
from tests.support.tinymodel import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw" / "Kvasir-SEG"


def test_int8_is_adopted_only_when_faster_and_within_the_dice_budget():
    assert int8_decision(30.0, 12.0, 0.850, 0.848, 0.005)["default_model"] == "int8"
    assert int8_decision(30.0, 31.0, 0.850, 0.850, 0.005)["default_model"] == "fp32"  # slower
    too_lossy = int8_decision(30.0, 12.0, 0.850, 0.845, 0.005)  # loses exactly the budget
    assert too_lossy["default_model"] == "fp32" and too_lossy["dice_loss"] == pytest.approx(0.005)


def test_timings_are_ordered_percentiles_over_the_requested_runs():
    calls = []
    stats = load_bin("bench_latency").timings(lambda: calls.append(1), runs=50, warmup=5)
    assert len(calls) == 55 and stats["runs"] == 50
    assert 0 <= stats["min_ms"] <= stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]


@pytest.mark.skipif(not RAW.is_dir(), reason="needs data/raw/Kvasir-SEG (make data)")
def test_cli_times_onnxruntime_and_pytorch_and_records_the_int8_decision(tmp_path):
    from test_export import save_tiny_checkpoint

    model = write_tiny_model(tmp_path / "models", size=64)
    ckpt = save_tiny_checkpoint(tmp_path / "best.pt", size=64)
    sets = {
        "model": model,
        "checkpoint": ckpt,
        "out": tmp_path / "latency.json",
        "runs": 5,
        "warmup": 1,
        "threads": "[1]",
        "quantize.calibration_images": 2,
        "quantize.eval_images": 2,
        "quantize.out_dir": tmp_path / "int8",
    }
    args = ["--conf", str(ROOT / "conf/bench_latency.yaml")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    assert load_bin("bench_latency").main(args) == 0

    report = json.loads((tmp_path / "latency.json").read_text())
    row = report["results"]["threads_1"]
    assert set(row) == {
        "onnxruntime_fp32",
        "onnxruntime_int8",
        "pytorch_eager",
        "ratio_pytorch_to_onnxruntime_p50",
    }
    assert (
        row["onnxruntime_fp32"]["inference"]["runs"] == 5 and row["pytorch_eager"]["end_to_end"]["p50_ms"] > 0
    )
    assert report["gate"]["threads"] == 1 and report["gate"]["p50_ms"] > 0
    assert report["int8"]["default_model"] in ("fp32", "int8") and report["int8"]["eval_images"] == 2
    assert report["gate"]["model"] == report["int8"]["default_model"]
    int8_meta = json.loads((tmp_path / "int8" / "model.json").read_text())
    assert int8_meta["precision"] == "int8" and (tmp_path / "int8" / "model.onnx").is_file()
