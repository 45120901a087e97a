"""Training helpers: LR schedule, speed switches, the training loader and one epoch."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from lib.training import (
    Trainer,
    WeightAverage,
    mixed_loader,
    resolve_speed_switches,
    set_epoch,
    train_one_epoch,
    warmup_cosine,
)


def test_warmup_rises_linearly_then_cosine_falls_to_floor():
    assert warmup_cosine(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 0.01) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.01) == pytest.approx(0.505)
    assert warmup_cosine(100, 100, 10, 0.01) == pytest.approx(0.01)


def test_explicit_switches_are_kept():
    assert resolve_speed_switches(torch.device("cpu"), True, False) == (True, False)


def test_auto_enables_both_on_cuda():
    assert resolve_speed_switches(torch.device("cuda"), "auto", "auto") == (True, True)


def test_bad_switch_value_is_rejected():
    with pytest.raises(ValueError, match="runtime.amp"):
        resolve_speed_switches(torch.device("cpu"), "sometimes", True)


class Recorder(torch.utils.data.Dataset):
    """Items are (index as a 1-pixel image, zero mask); `set_epoch` is recorded."""

    def __init__(self, n: int, offset: int = 0):
        self.n, self.offset, self.epoch = n, offset, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int):
        return torch.full((1, 1, 1), float(self.offset + i)), torch.zeros(1, 1, 1)


def test_mixed_loader_batches_positives_with_negatives_and_takes_its_epoch():
    positives, negatives = Recorder(12), Recorder(5, offset=100)
    loader = mixed_loader(positives, negatives, batch_size=4, per_batch=1, seed=0, workers=0)
    set_epoch(loader, 3)
    assert positives.epoch == negatives.epoch == 3
    batches = [x.flatten().tolist() for x, _ in loader]
    assert len(batches) == len(loader) == 4  # 3 positives + 1 negative each
    assert sorted(v for b in batches for v in b if v < 100) == list(range(12))
    assert all(sum(v >= 100 for v in b) == 1 for b in batches)
    assert batches == [x.flatten().tolist() for x, _ in loader]  # the order is the epoch's


def test_a_split_smaller_than_a_batch_still_gives_one_batch():
    loader = mixed_loader(Recorder(3), None, batch_size=8, per_batch=0, seed=0, workers=0)
    (batch,) = [sorted(x.flatten().tolist()) for x, _ in loader]
    assert batch == [0.0, 1.0, 2.0]


def test_train_one_epoch_steps_optimiser_scheduler_and_average_once_per_batch():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 1, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model=model,
        loss_fn=nn.functional.binary_cross_entropy_with_logits,
        optimiser=optimiser,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 1.0),
        device=torch.device("cpu"),
        amp=False,
        channels_last=False,
        average=WeightAverage(model, 0.5),
    )
    loader = mixed_loader(Recorder(6), None, batch_size=2, per_batch=0, seed=0, workers=0)
    before = model.weight.item()
    loss = train_one_epoch(trainer, loader)
    assert loss > 0 and model.weight.item() != before
    assert trainer.scheduler.last_epoch == len(loader) == 3
    assert trainer.scored() is trainer.average.module() and trainer.scored() is not model
    assert replace(trainer, average=None).scored() is model  # no average: the model itself is scored
