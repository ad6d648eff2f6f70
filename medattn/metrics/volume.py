"""Voxel geometry from an affine (spacing in mm, voxel volume in mL) and mask volumes in millilitres."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _linear_part(affine: ArrayLike, spatial_dims: int) -> np.ndarray:
    """The (3, spatial_dims) block of an affine that maps voxel steps to mm (a 3x3 2D affine gets a z row)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.ndim != 2 or affine.shape[0] != affine.shape[1] or affine.shape[0] < spatial_dims + 1:
        raise ValueError(f"need a square affine for {spatial_dims} spatial axes, got shape {affine.shape}")
    linear = affine[:-1, :spatial_dims]
    if linear.shape[0] < 3:
        linear = np.vstack([linear, np.zeros((3 - linear.shape[0], spatial_dims))])
    return linear


def spacing_from_affine(affine: ArrayLike, spatial_dims: int = 3) -> tuple[float, ...]:
    """Voxel spacing in mm: the length of each affine column, so oblique and flipped grids work.

    Args:
        affine: the voxel-index -> world (mm) affine, 4x4 (3D, or 2D embedded in 3D) or 3x3 (2D).
        spatial_dims: how many array axes are spatial (2 or 3).

    Returns:
        One spacing per spatial axis, in mm. Sheared grids (non-orthogonal columns) are measured along
        each column, which is what every distance-transform metric assumes.
    """
    return tuple(float(v) for v in np.linalg.norm(_linear_part(affine, spatial_dims), axis=0))


def voxel_volume_ml(affine: ArrayLike, spatial_dims: int = 3) -> float:
    """Volume of one voxel in mL: |det| of the affine's 3x3 linear part (mm^3) / 1000.

    A 2D grid is completed to 3D with the affine's third column when it has one (a single-slice volume
    keeps its slice thickness) and with a 1 mm unit normal otherwise, so 2D "volumes" are areas x 1 mm.
    """
    affine = np.asarray(affine, dtype=np.float64)
    linear = _linear_part(affine, spatial_dims)
    if spatial_dims == 2:
        if affine.shape[0] >= 4 and np.linalg.norm(affine[:3, 2]) > 0:
            third = affine[:3, 2:3]
        else:
            normal = np.cross(linear[:, 0], linear[:, 1])
            length = np.linalg.norm(normal)
            third = (normal / length if length > 0 else np.array([0.0, 0.0, 1.0]))[:, None]
        linear = np.hstack([linear, third])
    return float(abs(np.linalg.det(linear)) / 1000.0)


def volume_ml(mask: ArrayLike, voxel_ml: float) -> float:
    """Volume of a binary mask in mL: voxel count x the volume of one voxel (see `voxel_volume_ml`)."""
    return float(np.count_nonzero(mask)) * voxel_ml


def label_voxel_counts(labels: ArrayLike, names: dict[int, str]) -> list[tuple[int, str, int]]:
    """(value, name, voxels) for each foreground label of `names` in a label map, absent labels as 0."""
    array = np.asarray(labels).reshape(-1).astype(np.int64)
    counts = np.bincount(array, minlength=max(names) + 1)
    return [(value, name, int(counts[value])) for value, name in sorted(names.items()) if value != 0]
