"""Image in, probability map out: the one inference path (PyTorch or onnxruntime behind `run_model`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lib.preprocess import prepare_input, restore_mask, sigmoid

RunModel = Callable[[np.ndarray], np.ndarray]  # (1, 3, S, S) float32 -> (1, 1, S, S) logits


def predict_probability(run_model: RunModel, rgb: np.ndarray, size: int, mean, std) -> np.ndarray:
    """`(H, W, 3) uint8` -> `(H, W) float32` polyp probability at the original size."""
    x, geometry = prepare_input(rgb, size, mean, std)
    logits = np.asarray(run_model(x), dtype=np.float32)
    return restore_mask(sigmoid(logits[0, 0]), geometry)


def torch_runner(model, threads: int | None = None) -> RunModel:
    """Wrap an eval-mode torch module as a RunModel (fp32, no autograd)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return run
