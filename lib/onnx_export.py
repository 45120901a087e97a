"""ONNX export of the trained U-Net, the PyTorch/onnxruntime parity check, and the export's model.json.

The export contract (read by serve/ and the MLflow pyfunc): `model.onnx` with input INPUT_NAME
`(1, 3, S, S) float32` (batch "batch" in the dynamic variant) and output OUTPUT_NAME `(1, 1, S, S)`,
plus `model.json` beside it (lib/model_contract.py). torch is imported inside `export_onnx` only.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from lib.decision import Decision
from lib.inference import RunModel
from lib.model_contract import INPUT_NAME, OUTPUT_NAME, ModelMeta
from lib.preprocess import prepare_input, sigmoid


def export_onnx(model, path: str | Path, size: int, opset: int, dynamic_batch: bool = False) -> Path:
    """Export an eval-mode torch module to one self-contained ONNX file (weights inside)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(1, 3, size, size),)
    # A tuple matches inputs by position, so it works whatever forward() calls its argument.
    dynamic = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic_batch else None
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress even when not verbose
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=dynamic,
            external_data=False,  # one file: serving and the MLflow artifact expect model.onnx alone
            verbose=False,
        )
    return path


def check_onnx(path: str | Path) -> dict:
    """Run `onnx.checker` (full check, with shape inference); returns opset and I/O shapes."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path), load_external_data=False)

    def dims(values):
        return {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in values}

    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {"opset": int(opset), "inputs": dims(proto.graph.input), "outputs": dims(proto.graph.output)}


def parity(
    reference: RunModel,
    candidate: RunModel,
    images: dict[str, np.ndarray],
    size: int,
    mean,
    std,
    threshold: float,
) -> dict:
    """Compare post-sigmoid probabilities `(S, S)` of two runners on the same prepared inputs.

    `images`: {stem: `(H, W, 3) uint8` RGB}. Returns per-image mean/max absolute difference and the
    share of pixels whose mask at `threshold` agrees, the mean over all pixels of all images
    (`mean_abs_diff`) and the largest (`max_abs_diff`).
    """
    rows, total, count, worst = [], 0.0, 0, 0.0
    for stem, rgb in images.items():
        x, _ = prepare_input(rgb, size, mean, std)
        a = sigmoid(np.asarray(reference(x))[0, 0])
        b = sigmoid(np.asarray(candidate(x))[0, 0])
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        rows.append(
            {
                "stem": stem,
                "mean_abs_diff": float(diff.mean()),
                "max_abs_diff": float(diff.max()),
                "mask_agreement": float(np.mean((a >= threshold) == (b >= threshold))),
            }
        )
        total, count, worst = total + float(diff.sum()), count + diff.size, max(worst, float(diff.max()))
    return {"mean_abs_diff": total / max(count, 1), "max_abs_diff": worst, "images": rows}


def model_metadata(ckpt: dict, opset: int, decision: Decision, onnx_sha256: str) -> ModelMeta:
    """The contract written as `model.json` beside `model.onnx`: everything a server needs besides the graph.

    `decision` is the operating point bin/evaluate.py chose on validation (lib/decision.py); serving
    and the pyfunc read the threshold, the component filter and the image-level rule from here and
    nowhere else.
    """
    meta = ckpt["metadata"]
    return ModelMeta(
        input_size=int(ckpt["model_config"]["input_size"]),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        mean=tuple(float(v) for v in ckpt["mean"]),
        std=tuple(float(v) for v in ckpt["std"]),
        threshold=float(decision.threshold),
        min_area_fraction=float(decision.min_area_fraction),
        decision_chosen_on=decision.chosen_on,
        min_component_ratio=float(decision.min_component_ratio),
        model_version=meta["model_version"],
        git_sha=meta["git_sha"],
        data_rev=meta["data_rev"],
        opset=int(opset),
        sha256=onnx_sha256,  # of model.onnx, so a server can tell which file it holds
        run_id=meta["run_id"],
        git_dirty=bool(meta.get("git_dirty", False)),
        val_dice=None if meta.get("val_dice") is None else float(meta["val_dice"]),
        epoch=int(meta.get("epoch", 0)),
        encoder=ckpt["model_config"].get("encoder", ""),
        precision="fp32",
    )
