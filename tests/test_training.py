"""Training helpers: LR schedule and the speed switches."""

from __future__ import annotations

import pytest
import torch

from lib.training import resolve_speed_switches, warmup_cosine


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
