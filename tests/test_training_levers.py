"""Training levers of issue 9: negatives per batch, progressive sizes, EMA, structure loss, frozen stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lib.losses import BceDiceLoss, StructureLoss, build_loss
from lib.negatives import CropSpec, crop_negatives, find_crops
from lib.training import MixedBatchSampler, WeightAverage, resize_batch, size_for_epoch


def test_every_batch_holds_the_configured_negatives_and_each_positive_once():
    sampler = MixedBatchSampler(n_pos=70, n_neg=9, batch_size=8, per_batch=1, seed=3)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10
    positives = [i for b in batches for i in b if i < 70]
    assert sorted(positives) == list(range(70))  # 7 per batch, each exactly once
    assert all(sum(i >= 70 for i in b) == 1 and len(b) == 8 for b in batches)
    assert all(70 <= i < 79 for b in batches for i in b if i >= 70)


def test_sampler_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        s = MixedBatchSampler(40, 5, 8, 2, seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(1, 1) == order(1, 1)
    assert order(1, 1) != order(1, 2)
    assert order(1, 1) != order(2, 1)


def test_sampler_refuses_impossible_mixes():
    with pytest.raises(ValueError, match="negatives per batch"):
        MixedBatchSampler(10, 5, 4, 4, 0)
    with pytest.raises(ValueError, match="no negatives"):
        MixedBatchSampler(10, 0, 4, 1, 0)


def test_progressive_schedule_and_batch_resize():
    schedule = ((0.5, 192), (0.8, 224))
    sizes = [size_for_epoch(e, 10, schedule, 256) for e in range(1, 11)]
    assert sizes == [192] * 5 + [224] * 3 + [256] * 2
    assert size_for_epoch(3, 10, (), 256) == 256
    x = torch.rand(2, 3, 256, 256)
    y = torch.zeros(2, 1, 256, 256)
    y[:, :, 64:192, 64:192] = 1
    xs, ys = resize_batch(x, y, 192)
    assert xs.shape == (2, 3, 192, 192) and ys.shape == (2, 1, 192, 192)
    assert set(ys.unique().tolist()) == {0.0, 1.0}
    assert ys.mean().item() == pytest.approx(0.25, abs=0.01)  # the square keeps its share


def test_weight_average_follows_the_model_with_its_decay():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # first update copies (AveragedModel starts from the first seen weights)
    with torch.no_grad():
        model.weight.fill_(3.0)
    average.update(model)
    assert average.module().weight.flatten().tolist() == pytest.approx([2.0, 2.0])  # 0.5*1 + 0.5*3


def test_structure_loss_weights_edges_and_rewards_the_right_answer():
    target = torch.zeros(1, 1, 64, 64)
    target[..., 16:48, 16:48] = 1
    good = torch.where(target > 0, 8.0, -8.0)
    bad = -good
    loss = StructureLoss(kernel=15)
    assert loss(good, target).item() < 0.01 < loss(bad, target).item()
    empty = torch.zeros(1, 1, 64, 64)
    assert loss(torch.full_like(empty, -8.0), empty).item() < 0.01  # nothing predicted on a negative
    assert isinstance(build_loss("bce_dice", 1, 1, 31), BceDiceLoss)
    with pytest.raises(ValueError, match="loss.kind"):
        build_loss("focal", 1, 1, 31)
    with pytest.raises(ValueError, match="odd"):
        StructureLoss(kernel=4)


def test_negative_crops_stay_clear_of_the_polyp_and_the_dark_border():
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 200, (300, 400, 3), dtype=np.uint8)
    rgb[:, :40] = 0  # vignette
    mask = np.zeros((300, 400), np.uint8)
    mask[100:200, 150:260] = 1
    spec = CropSpec(sizes=(0.2, 0.3), per_size=3, margin=0.05)
    boxes = find_crops(rgb, mask, spec, np.random.default_rng(1))
    assert boxes
    grown = 15  # margin 0.05 of the shorter side (300)
    for y, x, side in boxes:
        assert not mask[max(0, y - grown) : y + side + grown, max(0, x - grown) : x + side + grown].any()
        assert (rgb[y : y + side, x : x + side].max(axis=2) < 20).mean() <= spec.max_dark
    crops = crop_negatives(rgb, mask, spec, seed=7, key="stem-a", size=64)
    assert all(c.shape == (64, 64, 3) for c in crops)
    again = crop_negatives(rgb, mask, spec, seed=7, key="stem-a", size=64)
    assert all(np.array_equal(a, b) for a, b in zip(crops, again))  # seeded by (seed, stem)
    assert crop_negatives(np.zeros_like(rgb), mask, spec, seed=7, key="stem-a") == []  # all dark


def lite_unet(stages_frozen: int):
    """A small Lite0 U-Net (random weights: no download) with its first `stages_frozen` stages frozen."""
    from lib.model import ModelConfig, build_model, freeze_encoder_stages

    torch.manual_seed(0)
    cfg = ModelConfig("Unet", "tu-tf_efficientnet_lite0", None, (16, 16, 16, 16, 8), 64)
    model = build_model(cfg)
    return model, freeze_encoder_stages(model, stages_frozen)


def test_frozen_stages_keep_weights_and_batchnorm_statistics_through_training_steps():
    from lib.training import Trainer, train_one_epoch

    model, frozen = lite_unet(3)  # stem, blocks 0 and 1
    encoder = model.encoder.model
    assert frozen == (encoder.conv_stem, encoder.bn1, encoder.blocks[0], encoder.blocks[1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    trainer = Trainer(
        model=model,
        loss_fn=nn.BCEWithLogitsLoss(),
        optimiser=optimiser,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 1.0),
        device=torch.device("cpu"),
        amp=False,
        channels_last=False,
        frozen=frozen,
    )
    x = torch.rand(4, 3, 64, 64)
    y = (torch.rand(4, 1, 64, 64) > 0.5).float()
    train_one_epoch(trainer, [(x, y), (x, y)])
    after = model.state_dict()
    changed = {k for k in before if "num_batches_tracked" not in k and not torch.equal(before[k], after[k])}
    frozen_keys = {k for k in before if k.startswith(("encoder.model.conv_stem", "encoder.model.bn1"))}
    frozen_keys |= {k for k in before if k.startswith(("encoder.model.blocks.0.", "encoder.model.blocks.1."))}
    assert frozen_keys and not frozen_keys & changed  # weights and BN running stats untouched
    assert any(k.startswith("encoder.model.blocks.2.") for k in changed)  # the next stage trains
    assert any(k.startswith("decoder.") for k in changed)
    assert all(not m.training for m in frozen) and encoder.blocks[2].training


def test_freezing_nothing_freezes_nothing_and_bad_counts_are_refused():
    model, frozen = lite_unet(0)
    assert frozen == () and all(p.requires_grad for p in model.parameters())
    from lib.model import ModelConfig, build_model, freeze_encoder_stages

    n_blocks = len(model.encoder.model.blocks)
    with pytest.raises(ValueError, match=f"must be 0-{1 + n_blocks}"):
        freeze_encoder_stages(model, 2 + n_blocks)
    resnet = build_model(ModelConfig("Unet", "resnet34", None, (16, 16, 16, 16, 8), 64))
    with pytest.raises(ValueError, match="timm EfficientNet encoder"):
        freeze_encoder_stages(resnet, 1)
