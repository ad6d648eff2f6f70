"""The focal region loss against a hand computation, plain cross-entropy at beta 0, and its grid regions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medattn.errors import ConfigError
from medattn.losses import DeepSupervisionLoss, create_loss
from medattn.losses.focal_region import FocalRegionLoss


def _softplus(x: float) -> float:
    return math.log(1 + math.exp(x))


def test_hand_computed_loss_on_two_samples_of_four_pixels():
    # Two classes; a pixel with logits (0, a) costs log(1 + e^-a) if labelled 1, log(1 + e^a) if labelled 0.
    logits = torch.zeros(2, 2, 1, 4)
    logits[0, 1, 0] = torch.tensor([0.0, 0.0, 2.0, -1.0])
    logits[1, 1, 0] = torch.tensor([3.0, 3.0, 3.0, -2.0])
    labels = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]]).view(2, 1, 1, 4)
    regions = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]]).view(2, 1, 1, 4)  # id 0 in both: two regions
    pixel = [
        [math.log(2), math.log(2), _softplus(-2), _softplus(1)],
        [_softplus(-3), _softplus(-3), _softplus(3), _softplus(-2)],
    ]
    means = [
        [(pixel[0][0] + pixel[0][1]) / 2] * 2 + [(pixel[0][2] + pixel[0][3]) / 2] * 2,
        [sum(pixel[1][:3]) / 3] * 3 + [pixel[1][3]],
    ]
    largest = max(max(row) for row in means)
    beta = 0.7
    expected = (
        sum(
            loss * (beta * mean / largest + 1)
            for loss_row, mean_row in zip(pixel, means, strict=True)
            for loss, mean in zip(loss_row, mean_row, strict=True)
        )
        / 8
    )
    got = FocalRegionLoss(beta=beta)(logits, labels, regions)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_beta_zero_is_mean_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, 4, generator=generator)
    labels = torch.randint(0, 3, (2, 1, 5, 6, 4), generator=generator)
    expected = F.cross_entropy(logits, labels[:, 0]).item()
    assert FocalRegionLoss(beta=0)(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    regions = torch.randint(0, 4, labels.shape, generator=generator)
    assert FocalRegionLoss(beta=0)(logits, labels, regions).item() == pytest.approx(expected, rel=1e-6)


def test_without_regions_the_grid_cells_are_the_regions():
    """Cells of 3 pixels per side, cut at the edges of a 7 x 5 image, as an explicit region map."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 7, 5, generator=generator)
    labels = torch.randint(0, 2, (2, 1, 7, 5), generator=generator)
    rows, cols = torch.meshgrid(torch.arange(7), torch.arange(5), indexing="ij")
    cells = (rows // 3 * 2 + cols // 3).expand(2, 1, 7, 5)
    loss = FocalRegionLoss(grid_size=3)
    assert loss(logits, labels).item() == pytest.approx(loss(logits, labels, cells).item(), rel=1e-6)


def test_one_region_weighs_every_pixel_one_plus_beta():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 2, 4, 4, 4, generator=generator)
    labels = torch.randint(0, 2, (1, 1, 4, 4, 4), generator=generator)
    cross_entropy = F.cross_entropy(logits, labels[:, 0]).item()
    assert FocalRegionLoss(beta=2, grid_size=8)(logits, labels).item() == pytest.approx(3 * cross_entropy)


def test_trainer_path_create_loss_with_deep_supervision():
    """`--loss focal_region`: via create_loss and the deep-supervision wrapper, gradients reach the logits."""
    generator = torch.Generator().manual_seed(3)
    outputs = [torch.randn(2, 3, 16, 16, generator=generator, requires_grad=True) for _ in range(2)]
    outputs[1] = torch.randn(2, 3, 8, 8, generator=generator, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 16, 16), generator=generator)
    loss = DeepSupervisionLoss(create_loss("focal_region", num_classes=3), weights=[0.6, 0.4])
    value = loss(outputs, labels)
    value.backward()
    plain = FocalRegionLoss()(outputs[0].detach(), labels)
    assert torch.isfinite(value) and value.item() > 0.6 * plain.item()
    assert all(o.grad.abs().sum() > 0 for o in outputs)


def test_mistakes_are_reported():
    logits, labels = torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4)
    with pytest.raises(ConfigError, match="region map"):
        FocalRegionLoss()(logits, labels, torch.zeros(1, 1, 2, 2))
    with pytest.raises(ConfigError, match="beta"):
        FocalRegionLoss(beta=-1)
    with pytest.raises(ConfigError, match="2 classes but the network returns 3"):
        create_loss("focal_region", num_classes=2)(torch.zeros(1, 3, 4, 4), labels)
