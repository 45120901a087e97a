"""A tiny real ONNX segmentation model (one 1x1 convolution) for tests and container smoke runs.

It follows the export contract exactly: `model.onnx` with input `(batch, 3, S, S) float32` named
"input", output `(batch, 1, S, S)` logits named "logits", and `model.json` beside it (with the
default operating point of lib/decision.py, or the one given). Its logits are a fixed colour rule
(redder than green -> polyp), so masks vary across a real image.

Usage: python -m tests.support.tinymodel OUT_DIR [--size 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lib.decision import Decision
from lib.io import sha256_file
from lib.model_contract import INPUT_NAME, OUTPUT_NAME, ModelMeta, write_model_json
from lib.preprocess import LITE_MEAN, LITE_STD

TINY_VERSION = "tiny-test-0"
TINY_DECISION = Decision(
    threshold=0.5, min_area_fraction=0.0, chosen_on="nothing: tiny stand-in model for tests"
)


def write_tiny_model(
    out_dir: str | Path, size: int = 64, version: str = TINY_VERSION, decision: Decision | None = None
) -> Path:
    """Write `model.onnx` + `model.json` into `out_dir`; returns the ONNX path."""
    decision = decision or TINY_DECISION
    import onnx  # imported here: only tests and the stand-in build need it, never the container
    from onnx import TensorProto, helper, numpy_helper

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Inputs are normalised to [-1, 1]; logit = 3 * (R - G) - 2 puts about half of a Kvasir frame above 0.5.
    weight = np.array([3.0, -3.0, 0.0], np.float32).reshape(1, 3, 1, 1)
    bias = np.array([-2.0], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", [INPUT_NAME, "weight", "bias"], [OUTPUT_NAME], kernel_shape=[1, 1])],
        "tiny_polyp_seg",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1, size, size])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # readable by any onnxruntime >= 1.15
    onnx.checker.check_model(model)
    onnx_path = out_dir / "model.onnx"
    onnx.save(model, onnx_path)
    meta = ModelMeta(
        input_size=size,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        mean=LITE_MEAN,  # inputs in [-1, 1], as the weights above assume
        std=LITE_STD,
        threshold=decision.threshold,
        min_area_fraction=decision.min_area_fraction,
        decision_chosen_on=decision.chosen_on,
        min_component_ratio=decision.min_component_ratio,
        model_version=version,
        git_sha="0000000",
        data_rev="none",
        opset=18,
        sha256=sha256_file(onnx_path),
    )
    write_model_json(out_dir / "model.json", meta)
    return onnx_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--size", type=int, default=64, help="model input side in pixels")
    args = parser.parse_args(argv)
    path = write_tiny_model(args.out_dir, args.size)
    print(f"tinymodel: {args.size}x{args.size} stand-in model -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
