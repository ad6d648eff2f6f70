"""Focal region loss (Region Attention Transformer, MICCAI 2024): cross-entropy weighted up in hard regions.

Per-voxel loss l (here cross-entropy on integer labels); weight map w = l detached, averaged within each
region, divided by its maximum over the batch and clamped to [0, 1]; loss = mean(l * (beta * w + 1)).
Regions whose voxels are mispredicted on average (a missed lesion, a false-positive blob, a badly placed
boundary) count up to 1 + beta times as much as regions already learned. As in the authors' code
(losses.py, FocalRegionLoss, with the batch maximum), where the per-pixel loss is L1 because they restore
images. Their class defaults to beta 1 and their training script passes 1e-3 on L1 errors of image
intensities; on cross-entropy 1e-3 would leave the loss within 0.1 % of plain cross-entropy, so medattn
keeps beta 1, where the hardest region counts twice.

Regions, first found first used:
- a map given to the call (e.g. SLIC superpixels from `SuperpixelRegionsd`, or SAM masks as in the paper);
- the network's own: `regions`, a callable returning the region map of the network's last forward
  (`RATUNet.loss_regions`), resampled by nearest neighbour to each output's grid. Their training passes the
  same map to the network and to the loss, so the loss weighs exactly the regions the attention stays
  within; ``medattn train`` wires it for ratunet;
- a fixed grid of cubes of `grid_size` voxels per side on each output's grid, for networks without
  regions (the trainer calls losses as ``loss(logits, labels)``, and the loss cannot run SLIC itself: it
  sees no image).
The grid is chosen over connected components of the label map because:
- components split only the foreground; the background is then one huge region whose mean loss is small,
  so false positives (a main failure on small lesions) would get weight near 0, while a grid cell around
  a false-positive blob gets a high mean and a large weight;
- a grid is an average pooling on the device; components need the labels on the CPU (scipy) every step;
- deep-supervision outputs get the same kind of regions at every resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn

from medattn.errors import ConfigError
from medattn.transforms.regions import nearest_regions

#: Returns the region ids (B, 1, *grid) of a network's last forward, or None (`RATUNet.loss_regions`).
RegionSource = Callable[[], torch.Tensor | None]


def region_mean(values: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Each voxel of `values` (B, *spatial) replaced by the mean over its region of `regions` (same shape).

    Region ids are per sample: the same id in two samples is two regions.
    """
    ids = (regions.round() if regions.is_floating_point() else regions).long().flatten(1)
    low = ids.amin()
    span = ids.amax() - low + 1
    keys = (ids - low) + span * torch.arange(ids.shape[0], device=ids.device).unsqueeze(1)
    _, group = torch.unique(keys.flatten(), return_inverse=True)
    flat = values.flatten().float()
    sums = torch.zeros(int(group.max()) + 1, device=flat.device).index_add_(0, group, flat)
    counts = torch.bincount(group, minlength=sums.numel()).float()
    return (sums / counts)[group].view(values.shape)


def grid_mean(values: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Each voxel of `values` (B, *spatial) replaced by the mean over its cube of `grid_size` voxels per side.

    Cubes start at voxel 0; those at the far edges are cut off where the size is not a multiple of the
    side (their mean covers only their voxels: average pooling with ceil_mode and no padding).
    """
    pool = F.avg_pool2d if values.ndim == 3 else F.avg_pool3d
    sides = [min(grid_size, size) for size in values.shape[1:]]  # pooling refuses kernels beyond the input
    means = pool(values.unsqueeze(1).float(), sides, stride=sides, ceil_mode=True)[:, 0]
    for axis, (side, size) in enumerate(zip(sides, values.shape[1:], strict=True)):
        means = means.repeat_interleave(side, dim=axis + 1).narrow(axis + 1, 0, size)
    return means


class FocalRegionLoss(nn.Module):
    """Cross-entropy weighted by the detached mean loss of each voxel's region (see the module docstring).

    Called as ``loss(logits, labels, regions=None)`` with logits (B, K, *spatial), class indices
    (B, 1, *spatial) and optionally region ids (B, 1, *spatial). `create_loss("focal_region", ...)` wraps
    it in `LabelLoss` (shape checks, float32), which passes no regions: the network's regions are used
    where `regions` is given, else the grid.

    Args:
        beta: how much more the hardest region weighs than an easy one (the authors' class default);
            0 gives plain mean cross-entropy.
        grid_size: cube side in voxels of the regions used when neither a map nor `regions` gives any.
        regions: the network's regions of its last forward (see the module docstring).
    """

    def __init__(self, beta: float = 1.0, grid_size: int = 8, regions: RegionSource | None = None):
        super().__init__()
        if beta < 0 or grid_size < 1:
            raise ConfigError(
                f"focal region loss: beta must be >= 0 and grid_size >= 1, got {beta}, {grid_size}"
            )
        self.beta = beta
        self.grid_size = grid_size
        self.region_source = regions

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, regions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss (a scalar); `target` holds class indices as any number dtype."""
        if isinstance(regions, MetaTensor):
            regions = regions.as_tensor()
        if regions is not None and (
            regions.shape[:2] != (target.shape[0], 1) or regions.shape[2:] != target.shape[2:]
        ):
            raise ConfigError(
                f"the focal region loss needs a region map (B, 1, *spatial) matching the labels "
                f"{tuple(target.shape)}; got {tuple(regions.shape)}"
            )
        if regions is None and self.region_source is not None:
            regions = self._network_regions(target)
        voxel_loss = F.cross_entropy(logits.float(), target[:, 0].long(), reduction="none")
        with torch.no_grad():
            if regions is None:
                weight = grid_mean(voxel_loss, self.grid_size)
            else:
                weight = region_mean(voxel_loss, regions[:, 0])
            weight = (weight / weight.max().clamp_min(1e-12)).clamp(0.0, 1.0)
        return (voxel_loss * (self.beta * weight + 1)).mean()

    def _network_regions(self, target: torch.Tensor) -> torch.Tensor | None:
        """The network's last regions on the labels' grid, or None when it has none."""
        regions = self.region_source()
        if regions is None:
            return None
        if isinstance(regions, MetaTensor):
            regions = regions.as_tensor()
        if regions.ndim != target.ndim or regions.shape[:2] != (target.shape[0], 1):
            raise ConfigError(
                f"the network's region map {tuple(regions.shape)} does not match the batch of labels "
                f"{tuple(target.shape)}; the focal region loss needs the regions of the same forward"
            )
        return nearest_regions(regions.to(target.device), tuple(target.shape[2:]))
