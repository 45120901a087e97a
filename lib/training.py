"""Training-loop pieces: seeding, device/precision choice, schedule, one epoch, validation."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib.metrics import image_metrics


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 (AVX-512 BF16 or AMX); without it bf16 autocast is far slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_speed_switches(
    device: torch.device, amp: bool | str, channels_last: bool | str
) -> tuple[bool, bool]:
    """Turn "auto" into a choice: both levers help on CUDA and on bf16-capable CPUs, and hurt elsewhere.

    Measured on an AVX2-only CPU (no bf16): bf16 autocast made a training step about 10x slower and
    channels-last about 1.7x slower than plain fp32.
    """
    fast = device.type == "cuda" or cpu_has_fast_bf16()
    for name, value in (("amp", amp), ("channels_last", channels_last)):
        if value not in (True, False, "auto"):
            raise ValueError(f"runtime.{name} must be true, false or auto, got {value!r}")
    return (fast if amp == "auto" else bool(amp)), (fast if channels_last == "auto" else bool(channels_last))


def autocast(device: torch.device, enabled: bool):
    """bf16 on CPU (AVX-512 BF16 here), fp16 on CUDA; a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def warmup_cosine(step: int, total: int, warmup: int, floor: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine down to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_one_epoch(
    model, loader, loss_fn, optimiser, scheduler, device, amp, channels_last, scaler, log_every
):
    model.train()
    total, n, start = 0.0, 0, time.time()
    for step, (x, y) in enumerate(loader, 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimiser.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
        else:
            loss.backward()
            optimiser.step()
        scheduler.step()
        total += loss.item() * len(x)
        n += len(x)
        if log_every and step % log_every == 0:
            ms = (time.time() - start) / n * 1000
            print(f"  step {step}/{len(loader)} loss {total / n:.4f} ({ms:.0f} ms/img)", flush=True)
    return total / max(1, n)


@torch.no_grad()
def predict_probs(model, loader, device, amp, channels_last) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sigmoid probabilities `(S, S) float32` and masks for every item of `loader`."""
    model.eval()
    probs, masks = [], []
    for x, y in loader:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x)
        p = torch.sigmoid(logits.float()).cpu().numpy()[:, 0]
        probs.extend(p)
        masks.extend(y.numpy()[:, 0].astype(np.uint8))
    return probs, masks


def validate(model, loader, device, amp, channels_last, threshold: float = 0.5) -> dict[str, float]:
    """Mean per-image Dice/IoU/precision/recall at the model input size."""
    probs, masks = predict_probs(model, loader, device, amp, channels_last)
    rows = [image_metrics(p, m, threshold) for p, m in zip(probs, masks)]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "iou", "precision", "recall")}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
