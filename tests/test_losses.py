import pytest
import torch

from lib.losses import BceDiceLoss


def target_square() -> torch.Tensor:
    t = torch.zeros(2, 1, 8, 8)
    t[:, :, 2:6, 2:6] = 1.0
    return t


def confident(target: torch.Tensor, sign: float = 1.0) -> torch.Tensor:
    """Logits of +-20: sigmoid is 1 or 0 to float32 precision."""
    return sign * 20.0 * (2.0 * target - 1.0)


def test_perfect_logits_give_near_zero_dice_loss():
    target = target_square()
    loss = BceDiceLoss(bce_weight=0.0)(confident(target), target)
    assert loss.item() < 1e-4


def test_empty_target_predicted_empty_gives_near_zero_dice_loss():
    target = torch.zeros(1, 1, 8, 8)
    assert BceDiceLoss(bce_weight=0.0)(confident(target), target).item() < 1e-4


def test_wrong_prediction_costs_more_than_right_one():
    target = target_square()
    loss = BceDiceLoss()
    assert loss(confident(target, -1.0), target) > loss(confident(target), target) + 1.0


def test_dice_is_averaged_per_image_not_pooled():
    target = torch.ones(2, 1, 4, 4)
    logits = torch.stack([confident(target[0]), confident(target[1], -1.0)])  # dice 1 and 0
    loss = BceDiceLoss(bce_weight=0.0, smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)  # pooled would give 1 - 32 / 48


def test_gradient_flows_to_logits():
    target = target_square()
    logits = torch.zeros_like(target, requires_grad=True)
    BceDiceLoss()(logits, target).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # Raising a polyp logit lowers the loss: its gradient is negative.
    assert logits.grad[0, 0, 3, 3] < 0 and logits.grad[0, 0, 0, 0] > 0


def test_loss_is_float32_under_bf16_autocast():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    target = target_square()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        loss = BceDiceLoss()(logits, target)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(BceDiceLoss()(logits.float(), target).item())
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ"):
        BceDiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
