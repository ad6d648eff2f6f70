"""Deep supervision: one loss applied to every decoder output, each against the label map at its own size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

from medattn.errors import ConfigError


def deep_supervision_weights(count: int) -> list[float]:
    """nnU-Net's weights for `count` outputs, finest first: 1/2^i, the coarsest set to 0, summing to 1.

    nnU-Net drops the coarsest output because at that size the label map is mostly a few blurred voxels;
    the finest output always weighs the most. One output gets weight 1.
    """
    if count < 1:
        raise ConfigError(f"deep supervision needs at least one output, got {count}")
    weights = [1.0 / 2**i for i in range(count)]
    if count > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def resize_labels(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour label map (B, 1, *spatial) at `size` voxels, dtype kept.

    ``nearest-exact`` (voxel centres, as nnU-Net v2's DownsampleSegForDSTransform) rather than ``nearest``,
    so a halving takes voxel 2i+1, not the first voxel of each pair, and non-integer ratios stay centred.
    """
    if tuple(target.shape[2:]) == tuple(size):
        return target
    resized = F.interpolate(target.float(), size=tuple(size), mode="nearest-exact")
    return resized.to(target.dtype)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of `loss` over deep-supervision outputs (finest first), each at its own resolution.

    The label map is resized to each output (`resize_labels`), never the output to the labels: that is
    cheaper and keeps coarse heads learning coarse structure, as nnU-Net does. A single tensor is passed
    straight to `loss`, so one wrapper serves train mode (a list) and eval mode (a tensor).

    Every output enters the sum, a zero weight included: its gradient is then exactly zero, but the head
    stays in the autograd graph, which DistributedDataParallel requires (nnU-Net uses 1e-6 under DDP for the
    same reason).

    Args:
        loss: the per-output loss, called as ``loss(logits, labels)``.
        weights: one factor per output, used as given; None = `deep_supervision_weights` (nnU-Net: 1/2^i,
            coarsest output 0, normalised to sum 1), computed for however many outputs arrive.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None):
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """The weighted loss; `target` is the full-resolution label map (B, 1, *spatial)."""
        if isinstance(target, MetaTensor):
            target = target.as_tensor()
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = self.weights if self.weights is not None else deep_supervision_weights(len(outputs))
        if len(weights) != len(outputs):
            raise ConfigError(
                f"deep supervision has {len(weights)} weights but the network returned {len(outputs)} "
                "outputs; give one weight per output or none for nnU-Net's"
            )
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for weight, output in zip(weights, outputs, strict=True):
            total = total + weight * self.loss(output, resize_labels(target, output.shape[2:]))
        return total
