"""Dice + CE and the AGUNet paper's Dice against hand computations and torch's own cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from scipy.special import softmax

from medattn.errors import ConfigError
from medattn.losses import available_losses, create_loss


def _case(seed: int = 0, classes: int = 3):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 4, 5, 3, generator=generator)
    labels = torch.randint(0, classes, (2, 1, 4, 5, 3), generator=generator)
    return logits, labels


def _reference_dice(logits, labels, *, squared: bool, smooth: float, batch: bool, background: bool) -> float:
    """1 - mean soft Dice, written out with NumPy: over classes, and over samples unless `batch`."""
    probs = softmax(logits.numpy().astype(np.float64), axis=1)
    classes = probs.shape[1]
    onehot = np.eye(classes)[labels.numpy()[:, 0]].transpose(0, 4, 1, 2, 3)
    first = 0 if background else 1
    axes = (0, 2, 3, 4) if batch else (2, 3, 4)
    p, g = probs[:, first:], onehot[:, first:]
    intersection = (p * g).sum(axis=axes)
    volumes = (
        (p**2).sum(axis=axes) + (g**2).sum(axis=axes) if squared else p.sum(axis=axes) + g.sum(axis=axes)
    )
    return float(np.mean(1 - (2 * intersection + smooth) / (volumes + smooth)))


@pytest.mark.parametrize("batch_dice", [True, False])
def test_dice_ce_is_soft_dice_plus_torch_cross_entropy(batch_dice):
    logits, labels = _case()
    loss = create_loss("dice_ce", num_classes=3, batch_dice=batch_dice)(logits, labels)
    dice = _reference_dice(logits, labels, squared=False, smooth=1e-5, batch=batch_dice, background=False)
    cross_entropy = F.cross_entropy(logits, labels[:, 0]).item()  # every class, background included
    assert loss.item() == pytest.approx(dice + cross_entropy, rel=1e-5)


def test_dice_paper_has_squared_denominator_and_smooth_one():
    logits, labels = _case(seed=1)
    loss = create_loss("dice_paper", num_classes=3)(logits, labels)
    assert loss.item() == pytest.approx(
        _reference_dice(logits, labels, squared=True, smooth=1.0, batch=True, background=False), rel=1e-5
    )


def test_hand_computed_values_on_four_voxels():
    # Zero logits: every voxel is 50 % foreground; one voxel of four is labelled.
    logits = torch.zeros(1, 2, 4, 1, 1)
    labels = torch.tensor([1, 0, 0, 0]).view(1, 1, 4, 1, 1)
    # Paper Dice: (2 * 0.5 + 1) / (4 * 0.25 + 1 + 1) = 2/3.
    assert create_loss("dice_paper", num_classes=2)(logits, labels).item() == pytest.approx(1 / 3, rel=1e-6)
    # Dice + CE: 1 - (2 * 0.5) / (4 * 0.5 + 1) = 2/3, plus ln 2 per voxel.
    expected = 2 / 3 + math.log(2)
    assert create_loss("dice_ce", num_classes=2)(logits, labels).item() == pytest.approx(expected, rel=1e-4)


def test_perfect_prediction_has_no_dice_loss():
    labels = torch.tensor([1, 0, 2, 0, 1, 2]).view(1, 1, 6, 1, 1)
    logits = 50.0 * F.one_hot(labels[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    assert create_loss("dice_ce", num_classes=3)(logits, labels).item() == pytest.approx(0.0, abs=1e-5)


def test_metatensor_inputs_give_the_same_value_and_gradients():
    logits, labels = _case(seed=2)
    loss = create_loss(num_classes=3)
    plain = loss(logits, labels)
    leaf = logits.clone().requires_grad_()
    meta = loss(MetaTensor(leaf), MetaTensor(labels.float()))
    meta.backward()
    assert meta.item() == pytest.approx(plain.item(), rel=1e-6)
    assert leaf.grad is not None and torch.count_nonzero(leaf.grad) > 0


def test_mistakes_are_reported():
    logits, labels = _case()
    with pytest.raises(ConfigError, match="3 classes but the network returns 2 channels"):
        create_loss(num_classes=3)(logits[:, :2], labels)
    with pytest.raises(ConfigError, match="label map"):
        create_loss(num_classes=3)(logits, labels[:, :, :2])
    with pytest.raises(ConfigError, match="unknown loss"):
        create_loss("dice_focal", num_classes=3)
    with pytest.raises(ConfigError, match="num_classes >= 2"):
        create_loss(num_classes=1)
    assert {"dice_ce", "dice_paper", "structure", "focal_region"} <= set(available_losses())
