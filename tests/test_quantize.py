"""The quantize stage: real onnxruntime static quantization of the tiny model, its model.json, its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from bin_helpers import ROOT, load_bin, write_catalog

from lib.io import read_image, sha256_file
from lib.model_contract import read_model_json
from lib.onnx_session import make_session, session_runner
from lib.preprocess import prepare_input
from lib.quantize import (
    QuantizeReportError,
    conv_nodes,
    dice_within_budget,
    quantize_int8,
    read_quantize_report,
)
from tests.support.tinymodel import write_tiny_model

CONF = yaml.safe_load((ROOT / "conf" / "quantize.yaml").read_text())


def write_splits(samples: Path, out: Path) -> dict[str, Path]:
    """train.csv (first 8 stems of `samples`) and val.csv (the other 8), as the split CSVs are written."""
    stems = sorted(p.stem for p in (samples / "images").glob("*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": stems[:8], "val": stems[8:]}
    for name, part in splits.items():
        (out / f"{name}.csv").write_text("stem\n" + "".join(f"{s}\n" for s in part))
    return {name: out / f"{name}.csv" for name in splits}


def quantize_args(model: Path, samples: Path, out: Path, extra: dict | None = None) -> list[str]:
    """bin/quantize.py's arguments: conf/quantize.yaml with every path pointed into `out`."""
    splits = write_splits(samples, out / "splits")
    sets = {
        "model": model,
        "catalog": write_catalog(samples, out / "catalog")[0],
        "out_dir": out / "int8",
        "report": out / "quantize.json",
        "quantization.calibration_split": splits["train"],
        "quantization.calibration_images": 2,
        # The tiny model's one convolution is both the first and the last: the default keep_fp32 would
        # leave nothing to quantize. Keeping convolutions is tested on its own below.
        "quantization.keep_fp32": "[]",
        "eval_split": splits["val"],
        "eval_images": 3,
        "threads": 1,
    } | (extra or {})
    args = ["--conf", str(ROOT / "conf/quantize.yaml")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def run_quantize(model: Path, samples: Path, out: Path) -> Path:
    """Quantize `model` into `out/int8` with its report at `out/quantize.json`; returns the INT8 ONNX path."""
    assert load_bin("quantize").main(quantize_args(model, samples, out)) == 0
    return out / "int8" / "model.onnx"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, real_samples):
    """The tiny fp32 model, and the quantize stage run on it (INT8 model + report) once for this module."""
    root = tmp_path_factory.mktemp("quantize")
    fp32 = write_tiny_model(root / "fp32", size=64)
    return fp32, run_quantize(fp32, real_samples, root), root / "quantize.json"


def test_int8_model_is_quantized_and_its_model_json_keeps_the_contract(quantized):
    fp32, int8, _ = quantized
    ops = {node.op_type for node in onnx.load(int8).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops  # QOperator format: the conv itself runs in INT8

    meta, fp32_meta = (
        read_model_json(int8.with_name("model.json")),
        read_model_json(fp32.with_name("model.json")),
    )
    assert meta.precision == "int8" and fp32_meta.precision == "fp32"
    assert meta.sha256 == sha256_file(int8) != fp32_meta.sha256
    assert meta.fp32_sha256 == sha256_file(fp32)
    assert meta.quantization == {
        "activation_type": "uint8",
        "weight_type": "int8",
        "calibrate_method": CONF["quantization"]["calibrate_method"],
        "calibration_split": meta.quantization["calibration_split"],
        "calibration_images": 2,
        "format": "QOperator",
        "per_channel": True,
        "keep_fp32": [],
    }
    assert meta.quantization["calibration_split"].endswith("train.csv")
    # Everything a runtime needs is the fp32 model's: same tensors, normalisation, operating point, version.
    for key in ("input_size", "input_name", "output_name", "mean", "std", "threshold", "model_version"):
        assert getattr(meta, key) == getattr(fp32_meta, key), key


def test_int8_model_predicts_like_the_fp32_model(quantized, real_samples):
    fp32, int8, _ = quantized
    meta = read_model_json(fp32.with_name("model.json"))
    rgb = read_image(sorted((real_samples / "images").glob("*.jpg"))[-1])
    x, _ = prepare_input(rgb, meta.input_size, meta.mean, meta.std)
    logits = {p: session_runner(make_session(p))(x) for p in (fp32, int8)}
    assert logits[int8].shape == logits[fp32].shape == (1, 1, 64, 64)
    # uint8 output scale over the calibrated logit range (about 12 wide): within a few steps of fp32
    assert np.abs(logits[int8] - logits[fp32]).max() < 0.2


def test_report_holds_the_dice_check_and_names_both_models(quantized):
    fp32, int8, report_path = quantized
    report = json.loads(report_path.read_text())
    assert 0.0 < report["dice_fp32"] <= 1.0 and 0.0 < report["dice_int8"] <= 1.0
    assert report["dice_loss"] == pytest.approx(report["dice_fp32"] - report["dice_int8"])
    assert abs(report["dice_loss"]) < 0.05  # a 1x1 conv quantizes almost losslessly
    assert report["dice_within_budget"] == (report["dice_loss"] < report["max_dice_loss"])
    assert (
        report["max_dice_loss"] == CONF["max_dice_loss"]
    )  # conf/quantize.yaml's budget, carried to the bench
    assert report["eval_images"] == 3 and report["eval_split"].endswith("val.csv")
    assert report["fp32"]["sha256"] == sha256_file(fp32) and report["int8"]["sha256"] == sha256_file(int8)
    assert report["fp32"]["model_version"] == report["int8"]["model_version"] == "tiny-test-0"
    # The bench's reader accepts it for these two files and refuses it for any other.
    assert read_quantize_report(report_path, sha256_file(fp32), sha256_file(int8)) == report
    with pytest.raises(QuantizeReportError, match="another int8 model"):
        read_quantize_report(report_path, sha256_file(fp32), sha256_file(fp32))


def test_dice_budget_is_strict():
    assert dice_within_budget(0.850, 0.846, 0.005)
    assert not dice_within_budget(0.850, 0.845, 0.005)  # losing exactly the budget is too much
    assert dice_within_budget(0.850, 0.860, 0.005)  # a gain is within any budget


def test_model_whose_model_json_describes_another_file_is_refused(tmp_path, real_samples, capsys):
    fp32 = write_tiny_model(tmp_path / "fp32", size=64)
    other = write_tiny_model(tmp_path / "other", size=32)
    other.replace(fp32)  # model.json still has the 64 px graph's sha256
    assert load_bin("quantize").main(quantize_args(fp32, real_samples, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("quantize: ") and "not the file its model.json describes" in err
    assert not (tmp_path / "int8").exists()


@pytest.mark.parametrize(
    "extra, reason",
    [
        ({"eval_images": 0}, "at least 1"),
        ({"model": "/nonexistent/model.onnx"}, "cannot read model metadata"),
        ({"quantization.format": "QDQX"}, "must be one of"),
        ({"eval_split": ROOT / "data/splits/test.csv"}, "never for a decision"),
    ],
)
def test_bad_input_exits_2_with_the_reason(tmp_path, real_samples, capsys, extra, reason):
    fp32 = write_tiny_model(tmp_path / "fp32", size=64)
    assert load_bin("quantize").main(quantize_args(fp32, real_samples, tmp_path, extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("quantize: ") and reason in err
    assert not (tmp_path / "quantize.json").exists()


def test_keep_fp32_leaves_the_named_convolutions_unquantized(tmp_path, real_samples):
    fp32 = write_tiny_model(tmp_path / "fp32", size=64)
    meta = read_model_json(fp32.with_name("model.json"))
    calib = [
        prepare_input(read_image(p), 64, meta.mean, meta.std)[0]
        for p in sorted((real_samples / "images").glob("*.jpg"))[:2]
    ]
    ops = {}
    for keep in ((), ("first_conv",)):
        out = quantize_int8(fp32, tmp_path / f"int8-{len(keep)}.onnx", calib, meta.input_name, keep_fp32=keep)
        ops[keep] = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "QLinearConv" in ops[()] and "Conv" not in ops[()]
    assert "Conv" in ops[("first_conv",)] and "QLinearConv" not in ops[("first_conv",)]  # its one convolution
    with pytest.raises(ValueError, match="keep_fp32"):
        conv_nodes(fp32, ("middle_conv",))
