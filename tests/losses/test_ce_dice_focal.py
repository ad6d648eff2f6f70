"""HBFormer's CE + Dice + focal loss against hand computations and an independent formula."""

from __future__ import annotations

import math

import pytest
import torch

from medattn.errors import ConfigError
from medattn.losses import DeepSupervisionLoss, available_losses, create_loss
from medattn.losses.ce_dice_focal import CEDiceFocalLoss


def test_three_pixels_by_hand():
    """Two classes, logits (0, a): p1 = 1 / (1 + e^-a); CE = -log p_true; focal = (1 - p_true)^2 CE; Dice per
    class over all pixels with squared sums and smoothing 1e-5, averaged over both classes."""
    a = [2.0, -1.0, 0.5]
    truth = [1, 1, 0]
    logits = torch.tensor([[0.0, 0.0, 0.0], a]).view(1, 2, 1, 3)
    labels = torch.tensor(truth).view(1, 1, 1, 3)
    p1 = [1 / (1 + math.exp(-v)) for v in a]
    p = [[1 - q for q in p1], p1]  # p[class][pixel]
    p_true = [p[t][i] for i, t in enumerate(truth)]
    ce = [-math.log(q) for q in p_true]
    focal = [(1 - q) ** 2 * c for q, c in zip(p_true, ce, strict=True)]
    smooth = 1e-5
    dice = []
    for k in (0, 1):
        g = [1.0 if t == k else 0.0 for t in truth]
        intersection = sum(pk * gk for pk, gk in zip(p[k], g, strict=True))
        denominator = sum(pk**2 for pk in p[k]) + sum(gk**2 for gk in g)
        dice.append(1 - (2 * intersection + smooth) / (denominator + smooth))
    expected = 0.33 * sum(ce) / 3 + 0.33 * sum(dice) / 2 + 0.34 * sum(focal) / 3
    assert CEDiceFocalLoss()(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    via_registry = create_loss("ce_dice_focal", num_classes=2)(logits, labels)
    assert via_registry.item() == pytest.approx(expected, rel=1e-6)


def test_matches_an_independent_formula_on_a_3d_batch():
    """Dice sums run over the whole batch (their nDiceLoss flattens it), background included."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 3, generator=generator)
    labels = torch.randint(0, 3, (2, 1, 4, 5, 3), generator=generator)
    probabilities = logits.softmax(dim=1)
    one_hot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1).float()
    p_true = (probabilities * one_hot).sum(dim=1)
    ce = -p_true.log()
    axes = (0, 2, 3, 4)
    intersection = (probabilities * one_hot).sum(dim=axes)
    denominator = probabilities.square().sum(dim=axes) + one_hot.square().sum(dim=axes)
    dice = (1 - (2 * intersection + 1e-5) / (denominator + 1e-5)).mean()
    weights, gamma = (0.2, 0.5, 0.3), 1.5
    expected = weights[0] * ce.mean() + weights[1] * dice + weights[2] * ((1 - p_true) ** gamma * ce).mean()
    got = CEDiceFocalLoss(weights, gamma)(logits, labels)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_it_trains_through_deep_supervision_and_refuses_bad_settings():
    assert "ce_dice_focal" in available_losses()
    generator = torch.Generator().manual_seed(1)
    outputs = [
        torch.randn(2, 2, 8, 8, generator=generator, requires_grad=True),
        torch.randn(2, 2, 4, 4, generator=generator, requires_grad=True),
    ]
    labels = torch.randint(0, 2, (2, 1, 8, 8), generator=generator)
    DeepSupervisionLoss(create_loss("ce_dice_focal", num_classes=2), weights=[0.6, 0.4])(
        outputs, labels
    ).backward()
    assert all(o.grad.abs().sum() > 0 for o in outputs)
    with pytest.raises(ConfigError, match="three non-negative weights"):
        CEDiceFocalLoss((0.5, 0.5))
    with pytest.raises(ConfigError, match="2 classes but the network returns 3"):
        create_loss("ce_dice_focal", num_classes=2)(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
