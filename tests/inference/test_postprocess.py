"""Label-map postprocessing on hand-made maps, checked against scikit-image where it does the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.morphology import remove_small_objects

from medattn.errors import ConfigError, GeometryError
from medattn.inference import argmax_labels, fill_holes, keep_largest_component, remove_small_components


def _two_label_map() -> np.ndarray:
    """Label 1: a 4^3 cube, a 2^3 cube, and one voxel touching the big cube only at a corner.
    Label 2: a 3^3 cube and a single voxel."""
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    labels[10:12, 10:12, 10:12] = 1
    labels[6, 6, 6] = 1  # diagonal neighbour of (5, 5, 5)
    labels[14:17, 2:5, 2:5] = 2
    labels[18, 18, 18] = 2
    return labels


def test_keep_largest_component_per_label_with_full_connectivity():
    labels = _two_label_map()
    result = keep_largest_component(labels)
    expected = labels.copy()
    expected[10:12, 10:12, 10:12] = 0
    expected[18, 18, 18] = 0
    np.testing.assert_array_equal(result, expected)  # the corner voxel is part of the big cube (26-conn.)
    assert result.dtype == labels.dtype
    np.testing.assert_array_equal(labels, _two_label_map())  # input untouched

    faces_only = keep_largest_component(labels, connectivity=1)
    assert faces_only[6, 6, 6] == 0 and faces_only[2:6, 2:6, 2:6].all()


def test_keep_largest_component_only_touches_the_labels_asked_for():
    labels = _two_label_map()
    result = keep_largest_component(labels, label_values=[2])
    assert (result == 1).sum() == (labels == 1).sum()
    assert result[18, 18, 18] == 0 and (result == 2).sum() == 27


def test_keep_largest_component_2d_uses_8_connectivity_and_accepts_torch():
    labels = torch.zeros(10, 10, dtype=torch.int32)
    labels[1:4, 1:4] = 3
    labels[4, 4] = 3  # diagonal: same component in 2D full connectivity
    labels[7:9, 7:9] = 3
    result = keep_largest_component(labels)
    assert isinstance(result, torch.Tensor) and result.dtype == torch.int32
    assert result[4, 4] == 3 and (result[7:9, 7:9] == 0).all()


def test_fill_holes_fills_background_but_keeps_other_labels():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[2:9, 2:9, 2:9] = 1
    labels[4:7, 4:7, 4:7] = 0  # enclosed cavity ...
    labels[5, 5, 5] = 2  # ... with another label inside
    labels[2:9, 2:9, 0:2] = 3  # an unrelated label next to it
    result = fill_holes(labels)
    cavity = np.zeros_like(labels, dtype=bool)
    cavity[4:7, 4:7, 4:7] = True
    assert result[5, 5, 5] == 2
    assert (result[cavity & (labels == 0)] == 1).all()
    np.testing.assert_array_equal(result[~cavity], labels[~cavity])


def test_fill_holes_leaves_open_cavities_and_matches_scipy_per_label():
    labels = np.zeros((30, 30), np.uint16)
    labels[2:12, 2:12] = 1
    labels[4:10, 4:10] = 0  # closed ring -> filled
    labels[15:25, 15:25] = 2
    labels[17:23, 17:25] = 0  # open on one side -> stays open
    result = fill_holes(labels)
    assert (result[4:10, 4:10] == 1).all()
    np.testing.assert_array_equal(result == 2, labels == 2)
    np.testing.assert_array_equal(result == 1, ndimage.binary_fill_holes(labels == 1))


def test_remove_small_components_by_volume_with_anisotropic_spacing():
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[0:10, 0:10, 0:3] = 1  # 300 voxels
    labels[15:20, 15:20, 0:4] = 1  # 100 voxels
    labels[12:14, 0:5, 5:10] = 2  # 50 voxels
    spacing = (0.5, 1.0, 4.0)  # 2 mm^3 per voxel = 0.002 mL
    result = remove_small_components(labels, 0.25, spacing)  # 300 -> 0.6 mL kept, 100 -> 0.2 mL removed
    assert (result[0:10, 0:10, 0:3] == 1).all()
    assert (result[15:20, 15:20, 0:4] == 0).all()
    assert (result == 2).sum() == 0  # 0.1 mL
    kept_all = remove_small_components(labels, 0.1, spacing)  # a component of exactly 0.1 mL stays
    np.testing.assert_array_equal(kept_all, labels)
    np.testing.assert_array_equal(remove_small_components(labels, 0.0, spacing), labels)


@pytest.mark.parametrize("dims", [2, 3])
def test_remove_small_components_matches_scikit_image(dims):
    rng = np.random.default_rng(dims)
    shape = (64, 64) if dims == 2 else (32, 32, 24)
    blobs = ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.52
    labels = (blobs * rng.integers(1, 3, size=shape)).astype(np.uint8)  # two labels, speckled pieces
    spacing = (0.7, 1.3) if dims == 2 else (0.7, 0.9, 2.5)
    voxel_ml = np.prod(spacing) / 1000.0
    min_ml = 7.5 * voxel_ml  # components of 7 voxels or fewer go
    result = remove_small_components(labels, min_ml, spacing)
    for value in (1, 2):
        try:
            kept = remove_small_objects(labels == value, max_size=7, connectivity=dims)
        except TypeError:  # scikit-image < 0.26
            kept = remove_small_objects(labels == value, min_size=8, connectivity=dims)
        np.testing.assert_array_equal(result == value, kept)
    assert (result != labels).any()


def test_remove_small_components_rejects_wrong_spacing_and_negative_volume():
    labels = _two_label_map()
    with pytest.raises(GeometryError, match="spacing_mm"):
        remove_small_components(labels, 1.0, (1.0, 1.0))
    with pytest.raises(ConfigError, match="min_volume_ml"):
        remove_small_components(labels, -1.0, (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="integers"):
        keep_largest_component(labels.astype(np.float32))


def test_argmax_labels_dtype_and_values():
    rng = np.random.default_rng(0)
    probabilities = rng.random((4, 7, 6, 5)).astype(np.float32)
    labels = argmax_labels(probabilities)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, probabilities.argmax(0))
    tensor_labels = argmax_labels(torch.from_numpy(probabilities))
    assert tensor_labels.dtype == torch.uint8
    np.testing.assert_array_equal(tensor_labels.numpy(), labels)
    many = rng.random((300, 3, 4)).astype(np.float32)
    assert argmax_labels(many).dtype == np.uint16
    np.testing.assert_array_equal(argmax_labels(many), many.argmax(0))
    np.testing.assert_array_equal(argmax_labels(torch.from_numpy(many)).numpy(), many.argmax(0))


def test_argmax_labels_ties_go_to_the_lower_label_like_argmax():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, (5, 9, 8, 7)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(argmax_labels(torch.from_numpy(scores)).numpy(), scores.argmax(0))
    np.testing.assert_array_equal(argmax_labels(scores), scores.argmax(0))


def test_argmax_labels_lets_a_nan_win_like_argmax_so_broken_outputs_are_not_background():
    scores = torch.tensor([[0.2, float("nan"), 0.1], [float("nan"), 0.3, 0.1], [0.8, float("nan"), 0.9]])
    np.testing.assert_array_equal(argmax_labels(scores).numpy(), scores.argmax(0).numpy())
