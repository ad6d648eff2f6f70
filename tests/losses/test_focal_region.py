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


def test_the_networks_regions_are_resampled_to_each_output_by_hand():
    """A (1, 2) region map from the network covers a 2 x 4 output as two 2 x 2 halves (nearest neighbour);
    at a (1, 2) deep-supervision output it is used as it is."""
    logits = torch.zeros(1, 2, 2, 4)
    logits[0, 1] = torch.tensor([[1.0, -1.0, 2.0, 0.0], [0.0, 3.0, -2.0, 1.0]])
    labels = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]]).view(1, 1, 2, 4)
    source = torch.tensor([[7, 3]]).view(1, 1, 1, 2)  # left half region 7, right half region 3
    # Logits (0, a): a pixel labelled 1 costs softplus(-a), labelled 0 softplus(a).
    pixel = [
        [_softplus(-1), _softplus(1), _softplus(2), _softplus(0)],
        [_softplus(0), _softplus(-3), _softplus(2), _softplus(1)],
    ]
    left = (pixel[0][0] + pixel[0][1] + pixel[1][0] + pixel[1][1]) / 4
    right = (pixel[0][2] + pixel[0][3] + pixel[1][2] + pixel[1][3]) / 4
    largest = max(left, right)
    expected = (
        sum(
            pixel[row][col] * ((left if col < 2 else right) / largest + 1)
            for row in range(2)
            for col in range(4)
        )
        / 8
    )
    loss = FocalRegionLoss(beta=1.0, regions=lambda: source)
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # The grid (one 8-pixel cell here) would weigh every pixel 2x: the network's regions are what counts.
    assert FocalRegionLoss(beta=1.0)(logits, labels).item() == pytest.approx(2 * sum(map(sum, pixel)) / 8)

    coarse_logits = torch.tensor([[0.0, 0.0], [1.0, -2.0]]).view(1, 2, 1, 2)
    coarse_labels = torch.tensor([1, 0]).view(1, 1, 1, 2)
    losses = [_softplus(-1), _softplus(-2)]
    expected_coarse = (
        losses[0] * (losses[0] / max(losses) + 1) + losses[1] * (losses[1] / max(losses) + 1)
    ) / 2
    assert loss(coarse_logits, coarse_labels).item() == pytest.approx(expected_coarse, rel=1e-6)


def test_without_network_regions_the_grid_is_used_and_a_wrong_batch_is_refused():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 2, 8, 8, generator=generator)
    labels = torch.randint(0, 2, (2, 1, 8, 8), generator=generator)
    grid = FocalRegionLoss(grid_size=4)(logits, labels)
    assert FocalRegionLoss(grid_size=4, regions=lambda: None)(logits, labels).item() == pytest.approx(
        grid.item()
    )
    with pytest.raises(ConfigError, match="same forward"):
        FocalRegionLoss(regions=lambda: torch.zeros(3, 1, 2, 2))(logits, labels)


def test_ratunet_trains_with_the_regions_it_attended_within():
    """create_loss("focal_region", regions=model.loss_regions), as `medattn train` builds it for ratunet:
    the loss weighs the model's own SLIC regions (upsampled from its attention grid), or a given map."""
    from medattn.models import create
    from medattn.models.ratunet import RATUNet
    from medattn.transforms.regions import nearest_regions

    torch.manual_seed(0)
    model: RATUNet = create(
        "ratunet",
        2,
        1,
        2,
        deep_supervision=False,
        base_channels=4,
        depth=2,
        num_heads=2,
        blocks=1,
        layers_per_block=1,
        window_size=2,
        region_size=4,
    )
    generator = torch.Generator().manual_seed(5)
    image = torch.rand(2, 1, 32, 32, generator=generator)
    labels = (image > 0.6).long()
    loss = create_loss("focal_region", num_classes=2, regions=model.loss_regions)
    assert model.loss_regions() is None  # nothing before the first forward
    logits = model(image)
    own = model.loss_regions()
    assert own is model.last_regions and own.shape == (2, 1, 8, 8)
    expected = FocalRegionLoss()(logits, labels, nearest_regions(own, (32, 32)))
    assert loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(logits, labels).item() != pytest.approx(FocalRegionLoss()(logits, labels).item(), rel=1e-4)

    given = (torch.arange(32).view(1, 1, 32, 1) // 5).expand(2, 1, 32, 32)  # stripes 5 pixels high
    logits = model(image, regions=given)
    assert torch.equal(model.loss_regions(), given)  # full resolution, as their loss takes SAM's masks
    expected = FocalRegionLoss()(logits, labels, given)
    assert loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
