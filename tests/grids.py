"""Voxel-to-world matrices of scanner-like grids (RAS, DICOM's LPS, permuted axes, oblique) for tests."""

from __future__ import annotations

import numpy as np


def grid_affine(axes_order, signs, spacing, origin, rotation_deg: float = 0.0) -> np.ndarray:
    """4x4 affine: array axis j points along world axis `axes_order[j]` (sign, spacing mm), then an optional
    rotation about the world S axis (an oblique acquisition), origin in mm."""
    affine = np.zeros((4, 4))
    for column, (row, sign, step) in enumerate(zip(axes_order, signs, spacing, strict=True)):
        affine[row, column] = sign * step
    if rotation_deg:
        angle = np.radians(rotation_deg)
        rotation = np.eye(4)
        rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        affine = rotation @ affine
    affine[:3, 3] = origin
    affine[3, 3] = 1
    return affine


ALIGNED_GRIDS = {
    "RAS, anisotropic": grid_affine((0, 1, 2), (1, 1, 1), (0.8, 0.9, 2.5), (-10, 5, 3)),
    "LPS (DICOM)": grid_affine((0, 1, 2), (-1, -1, 1), (1.1, 1.1, 1.7), (40, 30, -20)),
    "axes permuted and flipped": grid_affine((2, 0, 1), (1, -1, -1), (1.3, 0.7, 0.9), (0, 12, -8)),
}
