"""Training-loop pieces: seeding, device/precision choice, schedule, one epoch, validation."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

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


def resize_batch(x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Downscale a training batch to `size` px (progressive resizing); masks stay {0, 1}."""
    if x.shape[-1] == size:
        return x, y
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    y = nn.functional.interpolate(y, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x, (y >= 0.5).float()  # same rule as resize_mask: a pixel is polyp if half of it was


def size_for_epoch(epoch: int, epochs: int, schedule: tuple[tuple[float, int], ...], full: int) -> int:
    """Training side for `epoch` (1-based): the first `(until, size)` whose `until` share covers it.

    `schedule` like ((0.5, 192), (0.8, 224)) trains the first half at 192 px, up to 80 % at 224 px
    and the rest at `full`. Smaller inputs make an epoch cheaper (cost grows with pixels).
    """
    for until, size in schedule:
        if epoch <= round(until * epochs):
            return int(size)
    return full


class WeightAverage:
    """Exponential moving average of a model's weights (and BatchNorm buffers), for evaluation.

    The average follows the trained weights with `decay` per step; it smooths the noise of the
    last steps and usually scores a little better than the raw weights at the same cost.
    """

    def __init__(self, model: nn.Module, decay: float):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def update(self, model: nn.Module) -> None:
        self.model.update_parameters(model)

    def module(self) -> nn.Module:
        return self.model.module


@dataclass(frozen=True)
class Trainer:
    """What every training step uses and the loop never replaces: built once, before the first epoch."""

    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped after every optimiser step
    device: torch.device
    amp: bool  # autocast of the forward pass (bf16 on CPU, fp16 on CUDA)
    channels_last: bool  # NHWC inputs, to match a channels-last model
    scaler: torch.amp.GradScaler | None = None  # fp16 loss scaling on CUDA; None = plain backward
    log_every: int = 0  # steps between progress lines; 0 = none
    average: WeightAverage | None = None  # updated after every step when given
    frozen: tuple[nn.Module, ...] = ()  # from lib.model.freeze_encoder_stages: kept in eval mode

    def scored(self) -> nn.Module:
        """The weights to validate and save: the running average when there is one, else the model."""
        return self.average.module() if self.average else self.model


def train_step(t: Trainer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimiser step on a prepared batch (on the device, at its size and memory format): forward
    under autocast, loss, backward (scaled on CUDA fp16), optimiser and scheduler step, weight average.
    Returns the loss (not synchronised: calling .item() waits for the step)."""
    t.optimiser.zero_grad(set_to_none=True)
    with autocast(t.device, t.amp):
        logits = t.model(x)
    loss = t.loss_fn(logits.float(), y)
    if t.scaler is not None:
        t.scaler.scale(loss).backward()
        t.scaler.step(t.optimiser)
        t.scaler.update()
    else:
        loss.backward()
        t.optimiser.step()
    t.scheduler.step()
    if t.average is not None:
        t.average.update(t.model)
    return loss


def train_one_epoch(t: Trainer, loader, size: int | None = None) -> float:
    """One pass over `loader` at `size` px (None = as loaded); returns the mean training loss per image."""
    model, device = t.model, t.device
    model.train()
    for module in t.frozen:  # frozen stages keep ImageNet's BatchNorm statistics
        module.eval()
    total, n, start = 0.0, 0, time.time()
    for step, (x, y) in enumerate(loader, 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if size:
            x, y = resize_batch(x, y, size)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = train_step(t, x, y)
        total += loss.item() * len(x)
        n += len(x)
        if t.log_every and step % t.log_every == 0:
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


def validate(model, loader, device, amp, channels_last, threshold: float) -> dict[str, float]:
    """Mean per-image Dice/IoU/precision/recall at the model input size, pixels at `threshold` foreground."""
    probs, masks = predict_probs(model, loader, device, amp, channels_last)
    rows = [image_metrics(p, m, threshold) for p, m in zip(probs, masks)]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "iou", "precision", "recall")}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class MixedBatchSampler(torch.utils.data.Sampler):
    """Batches of `batch_size - per_batch` positives plus `per_batch` negatives.

    Indices below `n_pos` are positives (each seen once per epoch, as with plain shuffling), the
    rest negatives (drawn in a fresh shuffled order, cycling when there are fewer than needed).
    Order comes from (seed, epoch) only; call `set_epoch` before each epoch.
    """

    def __init__(
        self,
        n_pos: int,
        n_neg: int,
        batch_size: int,
        per_batch: int,
        seed: int,
        drop_last=True,
        blocks: tuple[tuple[int, float], ...] | None = None,
    ):
        if not 0 <= per_batch < batch_size:
            raise ValueError(f"negatives per batch must be in [0, {batch_size}), got {per_batch}")
        if per_batch and not n_neg:
            raise ValueError("negatives per batch > 0 but there are no negatives")
        if blocks is not None and (sum(n for n, _ in blocks) != n_pos or any(w < 0 for _, w in blocks)):
            raise ValueError(f"source blocks {blocks} must cover the {n_pos} positives with weights >= 0")
        # blocks: ((count, weight), ...) of consecutive positives, one per source; None = every positive
        # once per epoch. A weight w draws each image of its block int(w) times plus a fresh random
        # share w - int(w) of them each epoch.
        self.blocks = None if blocks is None or all(w == 1.0 for _, w in blocks) else blocks
        self.n_draws = (
            n_pos if self.blocks is None else sum(int(w) * n + round((w % 1) * n) for n, w in blocks)
        )
        self.n_pos, self.n_neg, self.per_batch = n_pos, n_neg, per_batch
        self.n_pos_batch, self.seed, self.epoch, self.drop_last = batch_size - per_batch, seed, 0, drop_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n_draws, self.n_pos_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch, 7))
        pos = rng.permutation(self.n_pos) if self.blocks is None else self._weighted_draws(rng)
        neg = (
            np.concatenate([rng.permutation(self.n_neg) for _ in range(self._cycles())])
            if self.per_batch
            else []
        )
        for b in range(len(self)):
            batch = [int(i) for i in pos[b * self.n_pos_batch : (b + 1) * self.n_pos_batch]]
            batch += [self.n_pos + int(i) for i in neg[b * self.per_batch : (b + 1) * self.per_batch]]
            yield batch

    def _weighted_draws(self, rng: np.random.Generator) -> np.ndarray:
        parts, start = [], 0
        for n, w in self.blocks:
            block = np.arange(start, start + n)
            parts += [block] * int(w)
            if share := round((w % 1) * n):
                parts.append(rng.choice(block, share, replace=False))
            start += n
        return rng.permutation(np.concatenate(parts)) if parts else np.zeros(0, int)

    def _cycles(self) -> int:
        return max(1, -(-len(self) * self.per_batch // max(1, self.n_neg)))


def mixed_loader(
    positives: Dataset,
    negatives: Dataset | None,
    batch_size: int,
    per_batch: int,
    seed: int,
    workers: int,
    blocks: tuple[tuple[int, float], ...] | None = None,
) -> DataLoader:
    """Training batches of `batch_size - per_batch` positives plus `per_batch` negatives (MixedBatchSampler).

    The last, short batch is dropped, except when there are no more positives than `batch_size`: a
    tiny split (the smoke run's 16 images) would otherwise give no batch at all.
    """
    n_neg = len(negatives) if negatives is not None else 0
    sampler = MixedBatchSampler(
        len(positives),
        n_neg,
        batch_size,
        per_batch,
        seed,
        drop_last=len(positives) > batch_size,
        blocks=blocks,
    )
    sets = [positives] if negatives is None else [positives, negatives]
    return DataLoader(ConcatDataset(sets), batch_sampler=sampler, num_workers=workers)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Give a `mixed_loader` its epoch: augmentation and batch order depend only on (seed, epoch)."""
    for dataset in loader.dataset.datasets:
        dataset.set_epoch(epoch)
    loader.batch_sampler.set_epoch(epoch)
