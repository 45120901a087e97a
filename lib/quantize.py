"""INT8 static quantization of the exported ONNX model (onnxruntime.quantization) and the adoption rule.

Activations uint8, weights int8 (U8S8), calibrated on prepared training images (MinMax, Entropy or
Percentile); the first and last convolutions can stay in fp32, where quantization error costs the most
(the raw image input, and the logits the threshold is applied to). The settings were chosen on validation
by bin/quantize_sweep.py (docs/experiments.md).

bin/quantize.py (the `quantize` stage) builds the INT8 model and writes the Dice check to its report;
bin/bench_latency.py times both models and calls `int8_decision` with the Dice numbers it reads back
through `read_quantize_report`, which refuses a report written for other model files.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

# What `quantize_int8` fixes, recorded beside the configured settings in the INT8 model.json.
FIXED_SETTINGS = {"activation_type": "uint8", "weight_type": "int8"}
CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")
KEEP_FP32_CHOICES = ("first_conv", "last_conv")


@dataclass(frozen=True)
class Quantization:
    """How the INT8 graph is built: copied into the INT8 model.json."""

    calibration_split: str  # calibration images come from here
    calibration_images: int  # first N stems
    format: Literal["QOperator", "QDQ"]  # quantized node style
    per_channel: bool  # per-channel weight scales
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"]  # how activation ranges are set
    keep_fp32: tuple[str, ...]  # convolutions left unquantized: first_conv, last_conv


@dataclass(frozen=True)
class QuantizeConfig:
    """conf/quantize.yaml: bin/quantize.py builds with it, bin/int8_test_report.py reads the same models."""

    model: str  # models/model.onnx, with model.json beside it
    catalog: str  # data/catalog.csv: originals and their masks (calibration, Dice check)
    out_dir: str  # model.onnx + model.json of the INT8 variant
    report: str  # reports/quantize.json
    quantization: Quantization
    eval_split: str  # Dice fp32 vs int8 here: a decision input, so validation
    eval_images: int | None  # first N stems (None = whole split)
    max_dice_loss: float  # INT8 is adopted only if it loses less Dice than this
    threads: int  # onnxruntime intra-op threads for the Dice check


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of `(1, 3, S, S) float32` inputs."""

    def __init__(self, input_name: str, inputs: list[np.ndarray]):
        self._items = iter([{input_name: x} for x in inputs])

    def get_next(self):
        return next(self._items, None)

    def rewind(self):  # not needed by MinMax; part of the protocol
        pass


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: list[np.ndarray],
    input_name: str = "input",
    fmt: str = "QOperator",
    per_channel: bool = True,
    calibrate_method: str = "MinMax",
    keep_fp32: tuple[str, ...] = (),
) -> Path:
    """Write a statically quantized copy of `fp32_path` to `out_path`; returns `out_path`.

    `calibration`: prepared model inputs `(1, 3, S, S) float32`. `fmt`: "QOperator" (QLinearConv
    nodes) or "QDQ" (Quantize/DequantizeLinear pairs that onnxruntime fuses at load time).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference + graph clean-up first, as onnxruntime recommends before quantizing.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        excluded = conv_nodes(prepared, keep_fp32)
        quantize_static(
            str(prepared),
            str(out_path),
            _Batches(input_name, calibration),
            quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=getattr(CalibrationMethod, calibrate_method),
            nodes_to_exclude=excluded,
        )
    return out_path


def conv_nodes(model_path: str | Path, which: tuple[str, ...]) -> list[str]:
    """Names of the first and/or last Conv node at `model_path` (ONNX nodes are in topological order)."""
    import onnx

    unknown = set(which) - set(KEEP_FP32_CHOICES)
    if unknown:
        raise ValueError(f"keep_fp32: unknown {sorted(unknown)}; choose from {KEEP_FP32_CHOICES}")
    convs = [
        n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node if n.op_type == "Conv"
    ]
    if which and not convs:
        raise ValueError(f"{model_path}: no Conv node to keep in fp32")
    return [convs[0]] * ("first_conv" in which) + [convs[-1]] * ("last_conv" in which)


def mean_dice(run_model, stems: list[str], catalog, meta) -> float:
    """Mean per-image Dice at the original size, as bin/evaluate.py computes it (the INT8 yardstick)."""
    from lib.inference import predict_probability
    from lib.io import read_image, read_mask
    from lib.metrics import confusion, count_metrics

    scores = []
    for s in stems:
        prob = predict_probability(
            run_model, read_image(catalog.images[s]), meta.input_size, meta.mean, meta.std
        )
        mask = meta.mask(prob)  # the served mask: threshold and component filter of model.json
        scores.append(count_metrics(*confusion(mask, read_mask(catalog.masks[s])))["dice"])
    return float(np.mean(scores))


def dice_within_budget(fp32_dice: float, int8_dice: float, max_dice_loss: float) -> bool:
    """The Dice half of the adoption rule: INT8 loses strictly less than `max_dice_loss`."""
    return bool(fp32_dice - int8_dice < max_dice_loss)


def int8_decision(
    fp32_p50_ms: float, int8_p50_ms: float, fp32_dice: float, int8_dice: float, max_dice_loss: float
) -> dict:
    """INT8 becomes the default only when it is faster and loses less than `max_dice_loss` Dice."""
    faster = bool(int8_p50_ms < fp32_p50_ms)
    loss = float(fp32_dice - int8_dice)
    adopt = faster and dice_within_budget(fp32_dice, int8_dice, max_dice_loss)
    reasons = [
        f"p50 {int8_p50_ms:.1f} ms vs fp32 {fp32_p50_ms:.1f} ms ({'faster' if faster else 'not faster'})",
        f"Dice loss {loss:+.4f} ({'<' if loss < max_dice_loss else '>='} {max_dice_loss})",
    ]
    return {
        "default_model": "int8" if adopt else "fp32",
        "adopted": adopt,
        "faster": faster,
        "dice_loss": loss,
        "max_dice_loss": max_dice_loss,
        "reason": "; ".join(reasons),
    }


class QuantizeReportError(ValueError):
    """A quantize report that is unreadable, lacks a field, or was written for other model files."""


def read_quantize_report(path: str | Path, fp32_sha256: str, int8_sha256: str) -> dict:
    """The quantize stage's report at `path`, checked to describe these two ONNX files (by sha256).

    FileNotFoundError when it is absent (the stage has not run); QuantizeReportError otherwise.
    """
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no quantize report {path}: run `make quantize` (dvc repro quantize)"
        ) from None
    except (OSError, ValueError) as err:
        raise QuantizeReportError(f"cannot read quantize report {path}: {err}") from err
    needed = ("dice_fp32", "dice_int8", "max_dice_loss", "eval_images", "eval_split", "fp32", "int8")
    missing = [k for k in needed if not isinstance(report, dict) or k not in report]
    if missing:
        raise QuantizeReportError(f"quantize report {path}: no {', '.join(missing)}")
    for name, sha in (("fp32", fp32_sha256), ("int8", int8_sha256)):
        written = report[name].get("sha256") if isinstance(report[name], dict) else None
        if written != sha:
            raise QuantizeReportError(
                f"quantize report {path} was written for another {name} model (sha256 {str(written)[:12]}, "
                f"this one {sha[:12]}): rerun `make quantize` (dvc repro quantize)"
            )
    return report
