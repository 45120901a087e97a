"""Image in, probability map out: the one inference path (PyTorch or onnxruntime behind `run_model`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lib.preprocess import prepare_input, restore_mask, sigmoid

RunModel = Callable[[np.ndarray], np.ndarray]  # (1, 3, S, S) float32 -> (1, 1, S, S) logits


TTA_FLIPS = {"none": (), "hflip": ((3,),), "hvflip": ((3,), (2,), (2, 3))}  # flipped input axes


def predict_probability(
    run_model: RunModel, rgb: np.ndarray, size: int, mean, std, tta: str = "none"
) -> np.ndarray:
    """`(H, W, 3) uint8` -> `(H, W) float32` polyp probability at the original size.

    `tta` averages the probabilities of flipped copies of the input, each flipped back: "hflip"
    (2 passes) or "hvflip" (4 passes: none, left-right, up-down, both). Costs one model call per pass.
    """
    if tta not in TTA_FLIPS:
        raise ValueError(f"tta must be one of {sorted(TTA_FLIPS)}, got {tta!r}")
    x, geometry = prepare_input(rgb, size, mean, std)
    prob = sigmoid(np.asarray(run_model(x), dtype=np.float32)[0, 0])
    for axes in TTA_FLIPS[tta]:
        flipped = np.ascontiguousarray(np.flip(x, axis=axes))
        logits = np.asarray(run_model(flipped), dtype=np.float32)
        prob += np.flip(sigmoid(logits), axis=axes)[0, 0]
    return restore_mask(prob / (1 + len(TTA_FLIPS[tta])), geometry)


def torch_runner(model, threads: int | None = None) -> RunModel:
    """Wrap an eval-mode torch module as a RunModel (fp32, no autograd)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return run
