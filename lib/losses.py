"""Training loss: binary cross-entropy plus soft Dice, on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BceDiceLoss(nn.Module):
    """`bce_weight * BCE + dice_weight * (1 - soft Dice)`, a scalar float32 tensor.

    BCE gives every pixel a gradient from the first step; Dice optimises the overlap the model is
    scored on and is insensitive to how small the polyp is. Soft Dice is computed per image and
    then averaged, matching the per-image Dice that evaluation reports. `smooth` (in pixels) is
    added to numerator and denominator so an empty mask predicted empty scores 1, not 0/0.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`logits` `(N, 1, H, W)` any float dtype, `target` `(N, 1, H, W)` float {0, 1}."""
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        # In float32 even under bf16 autocast: bf16 keeps 8 bits of mantissa, too few for sums over
        # 65k pixels, and autocast would otherwise pick the dtype of these ops for us.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            target = target.float()
            bce = F.binary_cross_entropy_with_logits(logits, target)
            prob = torch.sigmoid(logits)
            dims = (1, 2, 3)
            overlap = (prob * target).sum(dims)
            total = prob.sum(dims) + target.sum(dims)
            dice = (2.0 * overlap + self.smooth) / (total + self.smooth)
            return self.bce_weight * bce + self.dice_weight * (1.0 - dice.mean())
