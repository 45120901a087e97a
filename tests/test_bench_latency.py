"""Latency benchmark: the INT8 adoption rule, the timing summary, and short real runs of the CLI.

The INT8 model and its Dice report come from the quantize stage (tests/test_quantize.py's helpers);
the bench only reads them, and refuses them when missing or written for other model files.
"""

from __future__ import annotations

import json

import pytest
from bin_helpers import ROOT, load_bin
from test_quantize import run_quantize, write_splits

from lib.decision import component_block
from lib.io import sha256_file
from lib.quantize import int8_decision
from tests.support.tinymodel import write_tiny_model


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


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, real_samples):
    """The tiny fp32 model and the quantize stage's INT8 model + report for it (bench reads, never builds)."""
    root = tmp_path_factory.mktemp("bench")
    fp32 = write_tiny_model(root / "fp32", size=64)
    return fp32, run_quantize(fp32, real_samples, root), root / "quantize.json"


def bench_args(real_samples, tmp_path, fp32, int8, report, **extra) -> list[str]:
    """bin/bench_latency.py's arguments: conf/bench_latency.yaml, short runs, paths into `tmp_path`."""
    sets = {
        "model": fp32,
        "checkpoint": '""',
        "images_dir": real_samples / "images",
        "sample_split": write_splits(real_samples, tmp_path / "splits")["val"],
        "out": tmp_path / "latency.json",
        "int8_model": int8,
        "quantize_report": report,
        "runs": 5,
        "warmup": 1,
        "threads": "[1]",
        "api_requests": 5,
    } | extra
    args = ["--conf", str(ROOT / "conf/bench_latency.yaml")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def test_cli_times_onnxruntime_and_pytorch_and_records_the_int8_decision(tmp_path, real_samples, quantized):
    from test_export import save_tiny_checkpoint

    fp32, int8, report_path = quantized
    ckpt = save_tiny_checkpoint(tmp_path / "best.pt", size=64)
    int8_before = sha256_file(int8)
    assert (
        load_bin("bench_latency").main(bench_args(real_samples, tmp_path, *quantized, checkpoint=ckpt)) == 0
    )

    report = json.loads((tmp_path / "latency.json").read_text())
    assert list(report) == [
        "gate",
        "default_model",
        "api",
        "mask",
        "results",
        "int8",
        "image",
        "model_version",
        "onnx_sha256",
        "environment",
        "config",
    ]
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
    # The gate is the API's latency: real gunicorn, POST /predict of the sample image, every request answered.
    assert report["gate"]["measure"] == "http_api" and report["gate"]["p50_ms"] == report["api"]["p50_ms"]
    assert report["api"]["requests"] == 5 and report["api"]["errors"] == 0
    # Where the API's time went, from the server's access log, and the worker's page faults per request.
    stages = report["api"]["server_stage_p50_ms"]
    assert {"decode_ms", "inference_ms", "encode_ms", "total_ms"} <= set(stages)
    assert 0 < stages["inference_ms"] < stages["total_ms"]
    assert report["api"]["worker_minor_faults_per_request"] >= 0
    # The served mask timed against the threshold alone on the same probability map.
    mask = report["mask"]
    assert mask["threshold_only"]["runs"] == mask["served"]["runs"] == 5
    assert 0.0 <= mask["min_component_ratio"] <= 1.0
    assert mask["component_block"] == component_block(report["image"]["height"], report["image"]["width"])
    assert report["onnx_sha256"] == sha256_file(fp32)
    # The Dice half of the decision is the quantize report's; the latency half is this run's.
    dice = json.loads(report_path.read_text())
    decision = report["int8"]
    assert (decision["dice_fp32"], decision["dice_int8"]) == (dice["dice_fp32"], dice["dice_int8"])
    assert decision["eval_images"] == 3 and decision["dice_report"] == str(report_path)
    p50 = {k: row[f"onnxruntime_{k}"]["inference"]["p50_ms"] for k in ("fp32", "int8")}
    assert decision == {
        **int8_decision(
            p50["fp32"], p50["int8"], dice["dice_fp32"], dice["dice_int8"], dice["max_dice_loss"]
        ),
        **{k: decision[k] for k in ("dice_fp32", "dice_int8", "eval_images", "eval_split", "dice_report")},
    }
    assert report["gate"]["model"] == decision["default_model"]
    assert report["default_model"] == str({"fp32": fp32, "int8": int8}[decision["default_model"]])
    assert sha256_file(int8) == int8_before  # the bench measured the INT8 model, it did not rebuild it


def test_without_an_int8_model_only_fp32_is_timed(tmp_path, real_samples, quantized):
    fp32, _, _ = quantized
    args = bench_args(real_samples, tmp_path, fp32, '""', tmp_path / "absent.json")
    assert load_bin("bench_latency").main(args) == 0
    report = json.loads((tmp_path / "latency.json").read_text())
    assert set(report["results"]["threads_1"]) == {"onnxruntime_fp32"}
    assert report["int8"] is None and report["gate"]["model"] == "fp32"
    assert report["default_model"] == str(fp32)


def test_configured_but_missing_int8_model_exits_2_naming_the_quantize_stage(
    tmp_path, real_samples, quantized, capsys
):
    fp32, _, report = quantized
    args = bench_args(real_samples, tmp_path, fp32, tmp_path / "int8" / "model.onnx", report)
    assert load_bin("bench_latency").main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench_latency: no INT8 model") and "make quantize" in err
    assert not (tmp_path / "latency.json").exists()


def test_missing_quantize_report_exits_2(tmp_path, real_samples, quantized, capsys):
    fp32, int8, _ = quantized
    assert (
        load_bin("bench_latency").main(bench_args(real_samples, tmp_path, fp32, int8, tmp_path / "no.json"))
        == 2
    )
    assert "no quantize report" in capsys.readouterr().err


def test_report_of_other_models_is_refused(tmp_path, real_samples, quantized, capsys):
    fp32, int8, report = quantized
    # The fp32 model was re-exported after quantizing: same report and INT8 model, another fp32 file.
    reexported = write_tiny_model(tmp_path / "reexported", size=32)
    assert load_bin("bench_latency").main(bench_args(real_samples, tmp_path, reexported, int8, report)) == 2
    assert "written for another fp32 model" in capsys.readouterr().err
    # A report whose INT8 file is not this one.
    stale = json.loads(report.read_text())
    stale["int8"]["sha256"] = "0" * 64
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    assert (
        load_bin("bench_latency").main(
            bench_args(real_samples, tmp_path, fp32, int8, tmp_path / "stale.json")
        )
        == 2
    )
    assert "written for another int8 model" in capsys.readouterr().err
    assert not (tmp_path / "latency.json").exists()
