"""Separable trilinear resampling between axis-aligned grids: the spacing step of preprocessing and back.

The preprocessing only reorients (a permutation and flips of the axes) and rescales (new spacing), so the
map from an input voxel index to a model-grid index is, up to that permutation, a scale and an offset per
axis. Trilinear interpolation on such a map is separable: three 1D linear interpolations, one per axis,
each a gather of two neighbouring slabs and a weighted sum. That gives the same values as MONAI's Invertd
(`grid_sample` over the whole output grid, with border padding) at a fraction of the time and memory (no
N x 3 sampling grid; BENCHMARKS.md, end-to-end prediction). Grids that are not aligned (an oblique scan
resampled to RAS) return None and the caller falls back to Invertd.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Relative size below which an off-diagonal entry of the voxel-to-voxel map counts as zero.
_ALIGNED_TOLERANCE = 1e-6


def aligned_axis_map(
    source_affine: np.ndarray, target_affine: np.ndarray
) -> list[tuple[int, float, float]] | None:
    """For each target axis j: (source axis, scale, offset) with source index = scale * j_index + offset.

    Args:
        source_affine: voxel -> world of the grid the values are on (the model's grid), 4x4.
        target_affine: voxel -> world of the grid wanted (the input's), 4x4.

    Returns:
        One (source axis, scale, offset) per target axis, or None when the grids are not axis-aligned
        (the voxel-to-voxel map mixes axes), in which case only a general resampler can do it.
    """
    voxel_map = np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ np.asarray(
        target_affine, dtype=np.float64
    )
    linear = voxel_map[:3, :3]
    largest = np.abs(linear).max()
    axes = []
    for j in range(3):
        column = np.abs(linear[:, j])
        i = int(column.argmax())
        if np.delete(column, i).max(initial=0.0) > _ALIGNED_TOLERANCE * largest:
            return None
        axes.append((i, float(linear[i, j]), float(voxel_map[i, 3])))
    if sorted(i for i, _, _ in axes) != [0, 1, 2]:
        return None
    return axes


def resample_aligned(
    volume: torch.Tensor,
    source_affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: Sequence[int],
) -> torch.Tensor | None:
    """Trilinear resampling of `volume` (C, *source grid) onto the target grid, border-padded.

    Args:
        volume: float values (C, X, Y, Z) on the source grid (e.g. softmax probabilities).
        source_affine: the source grid's voxel -> world matrix (4x4).
        target_affine: the target grid's voxel -> world matrix (4x4).
        target_shape: the target grid's (X, Y, Z) voxels.

    Returns:
        (C, *target_shape) float tensor, or None when the grids are not axis-aligned.
    """
    axes = aligned_axis_map(source_affine, target_affine)
    if axes is None or volume.ndim != 4:
        return None
    # Interpolate along each source axis in turn (placing the result at that target axis's size), then
    # permute the source axes into target order.
    for target_axis, (source_axis, scale, offset) in enumerate(axes):
        volume = _interpolate_axis(
            volume, source_axis + 1, source_positions(scale, offset, target_shape[target_axis])
        )
    return volume.permute(0, *(axis + 1 for axis in source_order(axes))).contiguous()


def source_order(axes: list[tuple[int, float, float]]) -> list[int]:
    """The source axis of each target axis: the permutation from source to target order."""
    return [source_axis for source_axis, _, _ in axes]


def _interpolate_axis(volume: torch.Tensor, dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of `volume` along `dim` at fractional `positions` (clamped to the border)."""
    lower, upper, weight = axis_neighbours(positions, volume.shape[dim], volume.dtype)
    shape = [1] * volume.ndim
    shape[dim] = -1
    low = volume.index_select(dim, lower)
    high = volume.index_select(dim, upper)
    return low.lerp_(high, weight.view(shape))


def axis_neighbours(
    positions: torch.Tensor, size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper source index and the upper one's weight for each position (border-clamped)."""
    positions = positions.clamp(0, size - 1)
    lower = positions.floor().long().clamp(max=size - 1)
    upper = (lower + 1).clamp(max=size - 1)
    return lower, upper, (positions - lower).to(dtype)


def source_positions(scale: float, offset: float, size: int) -> torch.Tensor:
    """Source index (fractional) of each of `size` target voxels: scale * index + offset."""
    return scale * torch.arange(int(size), dtype=torch.float64) + offset
