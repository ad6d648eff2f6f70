"""Blob loss against a hand computation, and its point: a missed small lesion costs as much as a large one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medattn.losses import create_loss
from medattn.losses.blob import BlobLoss


def _labels() -> torch.Tensor:
    """One 2 x 6 x 6 x 6 batch: sample 0 holds a 27-voxel and a 1-voxel lesion (label 2) beside label 1."""
    labels = torch.zeros(2, 1, 6, 6, 6, dtype=torch.long)
    labels[0, 0, :2] = 1
    labels[0, 0, 2:5, 2:5, 2:5] = 2
    labels[0, 0, 0, 5, 5] = 2  # a lone voxel, not touching the large lesion (26-connectivity)
    return labels


def test_blob_term_is_the_mean_over_lesions_of_one_minus_their_masked_soft_dice():
    labels = _labels()
    logits = torch.randn(2, 3, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    loss = BlobLoss(torch.nn.Identity(), lesion_values=[2], smooth=1e-5)
    p = torch.softmax(logits, 1)[0, 2].numpy().astype(np.float64)
    lesion = labels[0, 0].numpy() == 2
    large = np.zeros_like(lesion)
    large[2:5, 2:5, 2:5] = True
    small = lesion & ~large
    expected = []
    for blob, other in ((large, small), (small, large)):
        kept = p * ~other
        expected.append(1 - (2 * (kept * blob).sum() + 1e-5) / (kept.sum() + blob.sum() + 1e-5))
    assert loss.blob_term(logits, labels).item() == pytest.approx(np.mean(expected), rel=1e-5)
    assert loss.blob_term(logits, torch.zeros_like(labels)) is None  # no lesion: no term


def test_missing_the_small_lesion_costs_as_much_as_missing_the_large_one():
    labels = _labels()
    perfect = torch.nn.functional.one_hot(labels[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 20
    loss = create_loss("dice_ce_blob", num_classes=3, lesion_values=[2])
    global_only = create_loss("dice_ce", num_classes=3)
    miss_small, miss_large = perfect.clone(), perfect.clone()
    miss_small[0, :, 0, 5, 5] = torch.tensor([20.0, 0, 0])
    miss_large[0, :, 2:5, 2:5, 2:5] = torch.tensor([20.0, 0, 0])[:, None, None, None]
    blob = BlobLoss(global_only, [2])
    assert blob.blob_term(miss_small, labels).item() == pytest.approx(0.5, abs=1e-3)
    assert blob.blob_term(miss_large, labels).item() == pytest.approx(0.5, abs=1e-3)
    # the global Dice + CE barely notices the small one: blob loss is what makes it cost
    small_share = (global_only(miss_small, labels) - global_only(perfect, labels)).item()
    assert (loss(miss_small, labels) - loss(perfect, labels)).item() > 5 * small_share
    assert create_loss("dice_ce_blob", num_classes=3)(perfect, labels) == global_only(perfect, labels)
