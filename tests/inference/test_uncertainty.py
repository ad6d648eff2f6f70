"""Uncertainty maps and per-component confidence against their formulas and hand-made maps."""

import math

import numpy as np
import pytest
import torch

from medattn.inference.uncertainty import (
    COMPONENT_COLUMNS,
    component_rows,
    entropy,
    mutual_information,
    normalized_entropy,
)


def test_normalized_entropy_is_zero_when_sure_and_one_when_all_classes_are_equal():
    probabilities = torch.tensor([[1.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.5], [0.0, 1 / 3, 0.0]])
    expected = [0.0, 1.0, math.log(2) / math.log(3)]
    np.testing.assert_allclose(normalized_entropy(probabilities).numpy(), expected, atol=1e-6)


def test_mutual_information_is_the_entropy_of_the_mean_minus_the_mean_entropy():
    members = [torch.tensor([[0.9, 0.5], [0.1, 0.5]]), torch.tensor([[0.1, 0.5], [0.9, 0.5]])]
    mean = torch.stack(members).mean(0)
    member_entropy = torch.stack([entropy(m) for m in members]).mean(0)
    by_hand = (-(0.5 * math.log(0.5)) * 2 - -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))) / math.log(2)
    result = mutual_information(mean, member_entropy).numpy()
    # voxel 0: two confident members that disagree; voxel 1: two unsure members that agree
    np.testing.assert_allclose(result, [by_hand, 0.0], atol=1e-6)


def test_components_are_numbered_largest_first_with_world_centroids_and_mean_probability():
    labels = np.zeros((10, 8, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[5:9, 4:7, 2:5] = 1  # 36 voxels
    probabilities = np.zeros((2, 10, 8, 6), np.float32)
    probabilities[1][labels == 1] = 0.9
    probabilities[1][1:3, 1:3, 1:3] = 0.3
    probabilities[0] = 1 - probabilities[1]
    uncertainty = normalized_entropy(torch.from_numpy(probabilities)).numpy()
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = (10, -5, 0)
    rows = component_rows("c", labels, probabilities, uncertainty, affine, {0: "bg", 1: "lesion"}, 0.5)
    assert [tuple(row) for row in rows] == [COMPONENT_COLUMNS] * 2
    large, small = rows
    assert (large["component"], small["component"]) == (1, 2)
    assert large["volume_ml"] == pytest.approx(36 * 6 / 1000) and small["volume_ml"] == pytest.approx(0.048)
    # centroid of voxels 5..8, 4..6, 2..4 -> indices (6.5, 5, 3) -> world (10 + 13, -5 + 5, 9)
    assert (large["centroid_x"], large["centroid_y"], large["centroid_z"]) == (23.0, 0.0, 9.0)
    assert large["confidence"] == pytest.approx(0.9) and not large["low_confidence"]
    assert small["confidence"] == pytest.approx(0.3) and small["low_confidence"]
    assert small["mean_uncertainty"] > large["mean_uncertainty"]


def test_a_2d_mask_gets_centroids_in_mm_with_z_zero():
    labels = np.zeros((6, 4), np.uint8)
    labels[2:4, 1:3] = 1
    probabilities = np.stack([1.0 - labels, labels.astype(float)]).astype(np.float32)
    affine = np.diag([0.5, 0.25, 1.0])
    rows = component_rows("c", labels, probabilities, np.zeros((6, 4)), affine, {1: "polyp"}, 0.5)
    assert (rows[0]["centroid_x"], rows[0]["centroid_y"], rows[0]["centroid_z"]) == (1.25, 0.375, 0.0)
