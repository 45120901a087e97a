"""Image in, probability map out: the one inference path (PyTorch or onnxruntime behind `run_model`).

Evaluation, the export parity check, the benchmarks, the MLflow pyfunc model and the server's timed
/predict path all call `predict_timed` (or `predict_probability`, its probabilities alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lib.preprocess import prepare_input, restore_mask, sigmoid

RunModel = Callable[[np.ndarray], np.ndarray]  # (1, 3, S, S) float32 -> (1, 1, S, S) logits


TTA_FLIPS = {"none": (), "hflip": ((3,),), "hvflip": ((3,), (2,), (2, 3))}  # flipped input axes


@dataclass(frozen=True)
class Prediction:
    prob: np.ndarray  # (H, W) float32 probabilities at the original image size
    preprocess_ms: float  # resize + normalise
    inference_ms: float  # the model calls (one per TTA pass)
    postprocess_ms: float  # sigmoid, TTA average, resize back to the original size


def predict_timed(
    run_model: RunModel, rgb: np.ndarray, size: int, mean, std, tta: str = "none"
) -> Prediction:
    """`(H, W, 3) uint8` -> `(H, W) float32` polyp probability at the original size, with stage timings.

    `tta` averages the probabilities of flipped copies of the input, each flipped back: "hflip"
    (2 passes) or "hvflip" (4 passes: none, left-right, up-down, both). Costs one model call per pass.
    """
    if tta not in TTA_FLIPS:
        raise ValueError(f"tta must be one of {sorted(TTA_FLIPS)}, got {tta!r}")
    t0 = time.perf_counter()
    x, geometry = prepare_input(rgb, size, mean, std)
    t1 = time.perf_counter()
    flips = TTA_FLIPS[tta]
    logits = [np.asarray(run_model(x), dtype=np.float32)]
    logits += [
        np.asarray(run_model(np.ascontiguousarray(np.flip(x, axis=a))), dtype=np.float32) for a in flips
    ]
    t2 = time.perf_counter()
    prob = sigmoid(logits[0][0, 0])
    for axes, flipped in zip(flips, logits[1:]):
        prob += np.flip(sigmoid(flipped), axis=axes)[0, 0]
    prob = restore_mask(prob / (1 + len(flips)) if flips else prob, geometry)
    t3 = time.perf_counter()
    return Prediction(prob, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)


def predict_probability(
    run_model: RunModel, rgb: np.ndarray, size: int, mean, std, tta: str = "none"
) -> np.ndarray:
    """`predict_timed`'s probabilities alone: `(H, W, 3) uint8` -> `(H, W) float32`."""
    return predict_timed(run_model, rgb, size, mean, std, tta).prob


def torch_runner(model, threads: int | None = None) -> RunModel:
    """Wrap an eval-mode torch module as a RunModel (fp32, no autograd)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return run
