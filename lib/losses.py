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


class StructureLoss(nn.Module):
    """PraNet's structure loss: boundary-weighted BCE plus boundary-weighted soft IoU, on logits.

    Each pixel's weight is `1 + gain * |local mean of the mask - mask|`: zero gain inside and far
    outside a polyp, largest on its edge, where a U-Net's mistakes (and the grey JPEG annotation
    edges) sit. `kernel` is the side of the local window in pixels (PraNet: 31 at 352 px). IoU is
    per image, then averaged, as evaluation scores Dice per image.
    """

    def __init__(self, kernel: int = 31, gain: float = 5.0, smooth: float = 1.0):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"structure loss kernel must be odd and positive, got {kernel}")
        self.kernel, self.gain, self.smooth = kernel, gain, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        with torch.autocast(device_type=logits.device.type, enabled=False):  # sums need float32
            logits, target = logits.float(), target.float()
            local = F.avg_pool2d(
                target, self.kernel, stride=1, padding=self.kernel // 2, count_include_pad=False
            )
            weight = 1.0 + self.gain * (local - target).abs()
            dims = (1, 2, 3)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            wbce = (weight * bce).sum(dims) / weight.sum(dims)
            prob = torch.sigmoid(logits)
            inter = (prob * target * weight).sum(dims)
            union = ((prob + target) * weight).sum(dims)
            wiou = 1.0 - (inter + self.smooth) / (union - inter + self.smooth)
            # On a polyp-free target the soft IoU is 1 - 1/(1 + sum of probabilities): even a
            # confident "nothing here" (p = 3e-4 everywhere) scores ~0.6 on 256x256. The region
            # term means nothing without a region, so polyp-free images get the weighted BCE only.
            has_region = target.sum(dims) > 0
            return (wbce + torch.where(has_region, wiou, torch.zeros_like(wiou))).mean()


def build_loss(kind: str, bce_weight: float, dice_weight: float, structure_kernel: int) -> nn.Module:
    """The training loss named in `loss.kind` of conf/train.yaml."""
    if kind == "bce_dice":
        return BceDiceLoss(bce_weight, dice_weight)
    if kind == "structure":
        return StructureLoss(structure_kernel)
    raise ValueError(f"loss.kind must be bce_dice or structure, got {kind!r}")
