"""Lesion-wise detection: components against scikit-image, matching rules, volume strata, centroids."""

from __future__ import annotations

import numpy as np
import pytest
from metric_shapes import blob_pair
from scipy import ndimage
from skimage.measure import label as skimage_label

from medattn.metrics.lesions import connected_components, lesion_counts, match_lesions, volume_stratum


@pytest.mark.parametrize(("seed", "dims"), [(seed, dims) for dims in (2, 3) for seed in range(6)])
def test_components_match_skimage_full_connectivity(seed, dims):
    pred, _, _ = blob_pair(seed, dims)
    speckled = pred & (np.random.default_rng(seed).random(pred.shape) > 0.5)  # many diagonal contacts
    labels, sizes = connected_components(speckled)
    reference = skimage_label(speckled, connectivity=dims)
    assert sizes.size == reference.max()
    assert sorted(sizes.tolist(), reverse=True) == sizes.tolist()  # largest first
    expected = np.sort(np.bincount(reference.ravel())[1:])[::-1]
    np.testing.assert_array_equal(sizes, expected)
    assert np.array_equal(labels > 0, speckled)


def test_diagonal_neighbours_are_one_lesion():
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True
    assert connected_components(mask)[1].tolist() == [2]
    assert connected_components(mask[:, :, 0] | mask[:, :, 1])[1].tolist() == [2]


def _ball(shape, center, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2


def test_matching_counts_strata_and_centroids():
    shape = (60, 60, 30)
    ref = _ball(shape, (12, 12, 12), 7) | _ball(shape, (40, 40, 12), 3) | _ball(shape, (45, 10, 20), 1)
    pred = _ball(shape, (13, 12, 12), 7) | _ball(shape, (41, 40, 13), 2) | _ball(shape, (10, 48, 20), 2)
    voxel_ml = 1.0 / 1000 * 4  # 4 mm^3 voxels
    lesions = match_lesions(pred, ref, voxel_ml)
    ref_lesions = [lesion for lesion in lesions if lesion.source == "ref"]
    assert [lesion.status for lesion in ref_lesions] == ["TP", "TP", "FN"]
    assert [lesion.stratum for lesion in ref_lesions] == ["3-10", "<1", "<1"]
    assert lesion_counts(lesions) == {"n_ref": 3, "n_pred": 3, "ref_tp": 2, "fn": 1, "pred_tp": 2, "fp": 1}
    big = ref_lesions[0]
    assert big.volume_ml == pytest.approx(np.count_nonzero(_ball(shape, (12, 12, 12), 7)) * voxel_ml)
    overlap = np.count_nonzero(_ball(shape, (12, 12, 12), 7) & _ball(shape, (13, 12, 12), 7))
    assert big.overlap_ml == pytest.approx(overlap * voxel_ml)
    assert big.best_dice == pytest.approx(2 * overlap / (2 * np.count_nonzero(_ball(shape, (12, 12, 12), 7))))
    np.testing.assert_allclose(big.centroid, ndimage.center_of_mass(_ball(shape, (12, 12, 12), 7)), atol=1e-9)
    assert ref_lesions[2].best_dice == 0.0 and ref_lesions[2].overlap_ml == 0.0


def test_threshold_and_min_voxels():
    ref = np.zeros((20, 20), bool)
    ref[2:12, 2:12] = True  # 100 pixels
    pred = np.zeros_like(ref)
    pred[10:14, 10:14] = True  # touches 4 of them: Dice 8/116
    pred[18, 18] = True  # a one-pixel speck
    assert [lesion.status for lesion in match_lesions(pred, ref, 1e-3) if lesion.source == "ref"] == ["TP"]
    strict = match_lesions(pred, ref, 1e-3, threshold=0.1)
    assert [lesion.status for lesion in strict] == ["FN", "FP", "FP"]
    no_specks = match_lesions(pred, ref, 1e-3, min_voxels=2)
    assert lesion_counts(no_specks)["n_pred"] == 1


def test_one_blob_covering_two_lesions_detects_both():
    ref = np.zeros((10, 30), bool)
    ref[2:8, 2:8] = ref[2:8, 20:26] = True
    pred = np.zeros_like(ref)
    pred[3:7, 3:25] = True
    assert lesion_counts(match_lesions(pred, ref, 1e-3)) == {
        "n_ref": 2,
        "n_pred": 1,
        "ref_tp": 2,
        "fn": 0,
        "pred_tp": 1,
        "fp": 0,
    }


@pytest.mark.parametrize(
    ("volume", "stratum"),
    [(0.0, "<1"), (0.999, "<1"), (1.0, "1-3"), (2.99, "1-3"), (3.0, "3-10"), (10.0, ">10")],
)
def test_volume_strata_bounds(volume, stratum):
    assert volume_stratum(volume) == stratum
