"""Lesion measures on a visit's own grid: volume, centroid, RANO/RECIST axial diameters."""

from __future__ import annotations

import numpy as np
import pytest

from medattn.longitudinal.lesions import axial_axis, measure_lesions, slice_diameters


def _ball(shape, centre, radius, spacing):
    grid = np.stack(
        np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    )
    return np.linalg.norm(grid - np.reshape(centre, (3, 1, 1, 1)), axis=0) <= radius


def test_volume_centroid_and_diameters_of_a_ball():
    spacing = (1.0, 1.0, 2.0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 20.0)
    mask = _ball((40, 40, 20), (20.0, 20.0, 20.0), 8.0, spacing)
    mask |= _ball((40, 40, 20), (5.0, 5.0, 6.0), 2.0, spacing)  # a smaller second lesion
    components, lesions = measure_lesions(mask, affine)
    big = lesions[0]
    assert big.component == 1 and big.voxels == int((components == 1).sum())
    assert big.volume_ml == pytest.approx(big.voxels * 2.0 / 1000.0)
    assert big.centroid_ras == pytest.approx((10.0, 25.0, 40.0), abs=1e-6)
    # Edge to edge on the widest axial slice: 2 r plus up to a pixel diagonal.
    assert 16.0 <= big.diameter_mm <= 16.0 + np.sqrt(2) + 1e-6
    assert 16.0 <= big.perpendicular_mm <= big.diameter_mm
    assert big.axial_slice == 10
    assert len(lesions) == 2 and lesions[1].voxels < big.voxels


def test_rectangle_diameters_and_the_axial_axis():
    # A 6 x 2 pixel rectangle of 1 mm pixels: longest = its diagonal, perpendicular = its width across it.
    pixels = np.array([(u, v) for u in range(6) for v in range(2)])
    longest, perpendicular = slice_diameters(pixels, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    assert longest == pytest.approx(np.hypot(6, 2))
    assert perpendicular == pytest.approx(2 * 6 * 2 / np.hypot(6, 2))
    coronal = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])  # axis 1 runs along S
    assert axial_axis(coronal) == 1
    assert axial_axis(np.eye(4)) == 2
