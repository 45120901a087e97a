"""INT8 static quantization of the exported ONNX model (onnxruntime.quantization) and the adoption rule.

Activations uint8, weights int8 (U8S8), calibrated with MinMax on prepared training images; the
AVX-512 VNNI CPUs here run U8S8 convolutions natively.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


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
        quantize_static(
            str(prepared),
            str(out_path),
            _Batches(input_name, calibration),
            quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return out_path


def int8_decision(
    fp32_p50_ms: float, int8_p50_ms: float, fp32_dice: float, int8_dice: float, max_dice_loss: float
) -> dict:
    """INT8 becomes the default only when it is faster and loses less than `max_dice_loss` Dice."""
    faster = bool(int8_p50_ms < fp32_p50_ms)
    loss = float(fp32_dice - int8_dice)
    adopt = faster and loss < max_dice_loss
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
