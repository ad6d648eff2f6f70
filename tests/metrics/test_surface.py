"""Surface metrics against DeepMind surface-distance and MONAI on random anisotropic shapes; known cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import surface_distance as deepmind
import torch
from metric_shapes import blob_pair
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from medattn.metrics import surface
from medattn.metrics.surface import (
    average_symmetric_surface_distance,
    hausdorff_distance,
    surface_dice,
    surface_distances,
    surface_metrics,
)

CASES = [(seed, dims) for dims in (2, 3) for seed in range(20)]  # 40 random shapes


def _deepmind(pred, ref, spacing):
    return deepmind.compute_surface_distances(ref, pred, spacing)  # its argument order is (gt, pred)


@pytest.mark.parametrize(("seed", "dims"), CASES)
def test_matches_deepmind_surface_distance(seed, dims):
    pred, ref, spacing = blob_pair(seed, dims)
    theirs = _deepmind(pred, ref, spacing)
    ours = surface_distances(pred, ref, spacing)
    np.testing.assert_allclose(ours.ref_to_pred, theirs["distances_gt_to_pred"], atol=1e-4)
    np.testing.assert_allclose(ours.pred_to_ref, theirs["distances_pred_to_gt"], atol=1e-4)
    # Surfel areas pair with distances; order among equal distances may differ, so compare sorted areas.
    np.testing.assert_allclose(np.sort(ours.ref_areas), np.sort(theirs["surfel_areas_gt"]), atol=1e-4)
    np.testing.assert_allclose(np.sort(ours.pred_areas), np.sort(theirs["surfel_areas_pred"]), atol=1e-4)
    assert hausdorff_distance(ours, 95) == pytest.approx(
        deepmind.compute_robust_hausdorff(theirs, 95), abs=1e-4
    )
    assert hausdorff_distance(ours) == pytest.approx(deepmind.compute_robust_hausdorff(theirs, 100), abs=1e-4)
    for tolerance in (1.0, 2.5):
        expected = deepmind.compute_surface_dice_at_tolerance(theirs, tolerance)
        assert surface_dice(ours, tolerance) == pytest.approx(expected, abs=1e-4)
    # ASSD: surface-distance gives the two directed area-weighted means; ours pools both surfaces' areas.
    to_pred, to_ref = deepmind.compute_average_surface_distance(theirs)
    area_ref, area_pred = theirs["surfel_areas_gt"].sum(), theirs["surfel_areas_pred"].sum()
    pooled = (to_pred * area_ref + to_ref * area_pred) / (area_ref + area_pred)
    assert average_symmetric_surface_distance(ours) == pytest.approx(pooled, abs=1e-4)


@pytest.mark.parametrize(("seed", "dims"), CASES[::4])
def test_surface_dice_matches_monai_subvoxel(seed, dims):
    pred, ref, spacing = blob_pair(seed, dims)
    as_batch = lambda mask: torch.from_numpy(mask[None, None].astype(np.float32))  # noqa: E731
    for tolerance in (1.0, 3.0):
        monai_nsd = compute_surface_dice(
            as_batch(pred),
            as_batch(ref),
            [tolerance],
            include_background=True,
            spacing=spacing,
            use_subvoxels=True,
        )
        ours = surface_metrics(pred, ref, spacing, tolerance)["surface_dice"]
        assert ours == pytest.approx(float(monai_nsd), abs=1e-4)


@pytest.mark.parametrize(("seed", "dims"), CASES[1::4])
def test_hd95_close_to_monai_voxel_definition(seed, dims):
    """MONAI's default HD95 uses border voxel centres: a different definition, within about one voxel."""
    pred, ref, spacing = blob_pair(seed, dims)
    as_batch = lambda mask: torch.from_numpy(mask[None, None].astype(np.float32))  # noqa: E731
    monai_hd95 = float(
        compute_hausdorff_distance(
            as_batch(pred), as_batch(ref), include_background=True, percentile=95, spacing=spacing
        )
    )
    ours = surface_metrics(pred, ref, spacing)["hd95_mm"]
    assert abs(ours - monai_hd95) <= float(np.linalg.norm(spacing)) + 1e-6


def _cube(shape, start, size):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] = True
    return mask


@pytest.mark.parametrize("spacing", [(0.7, 0.9, 3.0), (2.0, 0.5, 1.0)])
@pytest.mark.parametrize("shift", [1, 3])
def test_shifted_cube_hausdorff_is_the_shift(spacing, shift):
    ref = _cube((20, 14, 12), (4, 3, 2), (8, 6, 5))
    pred = np.roll(ref, shift, axis=0)
    metrics = surface_metrics(pred, ref, spacing)
    assert metrics["hausdorff_mm"] == pytest.approx(shift * spacing[0], abs=1e-9)
    assert 0 < metrics["hd95_mm"] <= metrics["hausdorff_mm"] + 1e-9
    assert 0 < metrics["assd_mm"] < metrics["hd95_mm"]


def _ball(shape, spacing, center_mm, radius_mm):
    grids = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, center_mm, strict=True)) <= radius_mm**2


def test_concentric_spheres():
    spacing = (0.5, 0.6, 0.8)
    shape = (64, 54, 40)
    center = (16.0, 16.0, 16.0)
    inner, outer = _ball(shape, spacing, center, 8.0), _ball(shape, spacing, center, 12.0)
    metrics = surface_metrics(inner, outer, spacing, tolerance_mm=1.0)
    voxel = float(np.linalg.norm(spacing))
    assert metrics["hausdorff_mm"] == pytest.approx(4.0, abs=voxel)
    assert metrics["assd_mm"] == pytest.approx(4.0, abs=voxel)
    assert metrics["surface_dice"] == 0.0  # every point is ~4 mm from the other sphere
    assert surface_metrics(inner, outer, spacing, tolerance_mm=4.0 + voxel)["surface_dice"] == 1.0


def test_offset_spheres_hausdorff_is_the_offset():
    spacing = (0.6, 0.6, 0.9)
    shape = (70, 50, 36)
    a = _ball(shape, spacing, (15.0, 15.0, 15.0), 9.0)
    b = _ball(shape, spacing, (21.0, 15.0, 15.0), 9.0)
    metrics = surface_metrics(a, b, spacing)
    assert metrics["hausdorff_mm"] == pytest.approx(6.0, abs=float(np.linalg.norm(spacing)))
    assert metrics["hd95_mm"] < metrics["hausdorff_mm"]


@pytest.mark.parametrize("dims", [2, 3])
def test_empty_masks(dims):
    empty, spacing = np.zeros((6,) * dims, dtype=bool), (0.7, 3.0, 1.0)[:dims]
    full = empty.copy()
    full[(slice(1, 4),) * dims] = True
    assert surface_metrics(empty, empty, spacing) == {
        "hd95_mm": 0.0,
        "hausdorff_mm": 0.0,
        "assd_mm": 0.0,
        "surface_dice": 1.0,
    }
    for pred, ref in ((empty, full), (full, empty)):
        metrics = surface_metrics(pred, ref, spacing)
        assert all(math.isnan(metrics[name]) for name in ("hd95_mm", "hausdorff_mm", "assd_mm"))
        assert metrics["surface_dice"] == 0.0


def test_cropping_and_grid_border_do_not_change_results():
    pred, ref, spacing = blob_pair(3, 3)  # the blobs touch the grid border
    padded = [np.pad(mask, ((5, 2), (0, 9), (3, 3))) for mask in (pred, ref)]
    assert surface_metrics(*padded, spacing) == pytest.approx(surface_metrics(pred, ref, spacing))


def test_kdtree_and_distance_transform_paths_agree(monkeypatch):
    pred, ref, spacing = blob_pair(5, 3)
    pred = np.pad(pred, 30)  # far apart in a mostly empty box
    ref = np.roll(np.pad(ref, 30), 25, axis=1)
    monkeypatch.setattr(surface, "EDT_VOXELS_PER_SURFEL", 0)  # always the KD-tree
    by_tree = surface_distances(pred, ref, spacing)
    monkeypatch.setattr(surface, "EDT_VOXELS_PER_SURFEL", 10**12)  # always the distance transform
    by_edt = surface_distances(pred, ref, spacing)
    np.testing.assert_allclose(by_tree.ref_to_pred, by_edt.ref_to_pred, atol=1e-9)
    np.testing.assert_allclose(by_tree.pred_to_ref, by_edt.pred_to_ref, atol=1e-9)


def test_rejects_mismatched_shapes_and_spacing():
    with pytest.raises(ValueError, match="shape"):
        surface_metrics(np.zeros((3, 3), bool), np.zeros((3, 4), bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(np.zeros((3, 3), bool), np.zeros((3, 3), bool), (1.0, 1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        surface_metrics(np.ones((3, 3), bool), np.ones((3, 3), bool), (1.0, 2.0))
