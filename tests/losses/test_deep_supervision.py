"""Deep-supervision loss: nnU-Net weights, nearest-exact label resizing, lists and single outputs."""

from __future__ import annotations

import pytest
import torch

from medattn import models
from medattn.errors import ConfigError
from medattn.losses import DeepSupervisionLoss, create_loss, deep_supervision_weights, resize_labels


def test_weights_follow_nnunet():
    # nnU-Net: 1/2^i, the coarsest set to 0, normalised.
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert deep_supervision_weights(4) == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])


def test_labels_are_resized_at_voxel_centres():
    labels = torch.randint(0, 3, (2, 1, 8, 8, 8))
    # Halving takes voxel 2i + 1, a quarter takes 4i + 2 (the voxel whose centre is nearest the new one).
    assert torch.equal(resize_labels(labels, (4, 4, 4)), labels[:, :, 1::2, 1::2, 1::2])
    assert torch.equal(resize_labels(labels, (2, 2, 2)), labels[:, :, 2::4, 2::4, 2::4])
    assert resize_labels(labels, (4, 4, 4)).dtype == labels.dtype
    assert resize_labels(labels, (8, 8, 8)) is labels


def test_list_of_outputs_is_the_weighted_sum_at_each_resolution():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (2, 1, 8, 8, 8), generator=generator)
    outputs = [torch.randn(2, 2, s, s, s, generator=generator, requires_grad=True) for s in (8, 4, 2)]
    base = create_loss("dice_ce", num_classes=2)
    total = DeepSupervisionLoss(base)(outputs, labels)
    expected = 2 / 3 * base(outputs[0], labels) + 1 / 3 * base(outputs[1], labels[:, :, 1::2, 1::2, 1::2])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    # The coarsest output weighs 0 but stays in the graph (DDP needs a gradient for every parameter).
    assert outputs[2].grad is not None and torch.count_nonzero(outputs[2].grad) == 0
    assert torch.count_nonzero(outputs[1].grad) > 0


def test_single_tensor_and_explicit_weights():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (1, 1, 4, 4, 4), generator=generator)
    logits = torch.randn(1, 2, 4, 4, 4, generator=generator)
    base = create_loss("dice_paper", num_classes=2)
    assert DeepSupervisionLoss(base)(logits, labels).item() == pytest.approx(base(logits, labels).item())
    equal = DeepSupervisionLoss(base, weights=[1.0, 1.0])([logits, logits], labels)
    assert equal.item() == pytest.approx(2 * base(logits, labels).item(), rel=1e-6)
    with pytest.raises(ConfigError, match="3 weights but the network returned 2"):
        DeepSupervisionLoss(base, weights=[1, 1, 1])([logits, logits], labels)


def test_agunet_deep_supervision_outputs_train():
    spec = models.describe("agunet")
    network = models.create("agunet", 3, 1, 2, deep_supervision=True, **spec.tiny)
    network.train()
    image = torch.randn(2, 1, 16, 16, 16)
    labels = (image > 0.5).long()
    outputs = network(image)
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 16, 16, 16), (2, 2, 8, 8, 8)]  # full res first
    base = create_loss(num_classes=2)
    loss = DeepSupervisionLoss(base)(outputs, labels)
    loss.backward()
    # Two heads: nnU-Net's weights are (1, 0) (the coarsest gets 0), so the loss is the first head's.
    assert loss.item() == pytest.approx(base(outputs[0], labels).item(), rel=1e-6)
    assert all(p.grad is not None for p in network.parameters() if p.requires_grad)
