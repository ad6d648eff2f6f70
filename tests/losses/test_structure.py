"""PraNet's structure loss against the official formula written out in NumPy/SciPy, with per-pixel weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from scipy.ndimage import uniform_filter
from scipy.special import log_softmax

from medattn.errors import ConfigError
from medattn.losses import available_losses, create_loss


def _reference(logits: np.ndarray, mask: np.ndarray) -> float:
    """MyTrain.py's structure_loss on (B, H, W) float64 arrays, BCE weighted per pixel, mean over samples.

    The box average is SciPy's 31-pixel uniform filter with zero padding (avg_pool2d counts the padding).
    """
    losses = []
    for x, m in zip(logits, mask, strict=True):
        weight = 1 + 5 * np.abs(uniform_filter(m, size=31, mode="constant", cval=0.0) - m)
        bce = np.maximum(x, 0) - x * m + np.log1p(np.exp(-np.abs(x)))
        weighted_bce = (weight * bce).sum() / weight.sum()
        p = 1 / (1 + np.exp(-x))
        intersection = (p * m * weight).sum()
        union = ((p + m) * weight).sum()
        losses.append(weighted_bce + 1 - (intersection + 1) / (union - intersection + 1))
    return float(np.mean(losses))


def _disks(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Integer label maps (batch, 1, size, size) with one disk of random centre and radius each."""
    axes = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(axes, axes, indexing="ij")
    labels = []
    for _ in range(batch):
        cy, cx = (size * (0.2 + 0.6 * torch.rand(2, generator=generator))).tolist()
        radius = size * (0.1 + 0.2 * torch.rand(1, generator=generator).item())
        labels.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).long())
    return torch.stack(labels).unsqueeze(1)


def test_structure_is_registered():
    assert "structure" in available_losses()


@pytest.mark.parametrize("classes", [1, 2])
def test_binary_loss_matches_the_official_formula(classes):
    generator = torch.Generator().manual_seed(0)
    labels = _disks(3, 48, generator)
    logits = 2 * torch.randn(3, classes, 48, 48, generator=generator, dtype=torch.float64)
    loss = create_loss("structure", num_classes=classes)(logits, labels)
    foreground = logits[:, -1] - (logits[:, 0] if classes == 2 else 0)  # K=2: softmax[1] = sigmoid(l1 - l0)
    expected = _reference(foreground.numpy(), labels[:, 0].double().numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_official_reduction_slip_is_not_reproduced():
    """MyTrain.py's `reduce='none'` averages the BCE unweighted; medattn's weighted BCE differs."""
    generator = torch.Generator().manual_seed(1)
    labels = _disks(2, 48, generator).float()
    logits = 2 * torch.randn(2, 1, 48, 48, generator=generator)
    weight = 1 + 5 * torch.abs(F.avg_pool2d(labels, kernel_size=31, stride=1, padding=15) - labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecated `reduce` argument warns
        slipped = F.binary_cross_entropy_with_logits(logits, labels, reduce="none")
    assert slipped.ndim == 0, "the official call reduces to one number"
    unweighted = (weight * slipped).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    ours_bce_only = (weight * F.binary_cross_entropy_with_logits(logits, labels, reduction="none")).sum(
        dim=(2, 3)
    ) / weight.sum(dim=(2, 3))
    loss = create_loss("structure", num_classes=1)(logits, labels)
    expected = _reference(logits[:, 0].double().numpy(), labels[:, 0].double().numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert not torch.allclose(unweighted, ours_bce_only, rtol=1e-3)


def test_multiclass_is_one_vs_rest_on_softmax_probabilities():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 40, 40, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 1, 40, 40), generator=generator)
    loss = create_loss("structure", num_classes=4)(logits, MetaTensor(labels))
    log_p = log_softmax(logits.numpy(), axis=1)
    per_class = [
        _reference(log_p[:, c] - np.log1p(-np.exp(log_p[:, c])), (labels[:, 0] == c).double().numpy())
        for c in (1, 2, 3)
    ]
    assert loss.item() == pytest.approx(np.mean(per_class), rel=1e-5)


def test_wrong_channel_count_is_a_config_error():
    with pytest.raises(ConfigError, match="2 classes but the network returns 3"):
        create_loss("structure", num_classes=2)(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8))
