"""Overlap metrics against MONAI and DeepMind, the empty-mask rules, and spacing/volume from affines."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import surface_distance as deepmind
import torch
from metric_shapes import blob_pair
from monai.metrics import ConfusionMatrixMetric, DiceMetric, compute_iou
from scipy.spatial.transform import Rotation

from medattn.metrics import OverlapCounts, dice, iou, precision, recall
from medattn.metrics.volume import spacing_from_affine, volume_ml, voxel_volume_ml


@pytest.mark.parametrize(("seed", "dims"), [(seed, dims) for dims in (2, 3) for seed in range(8)])
def test_overlap_matches_monai_and_deepmind(seed, dims):
    pred, ref, _ = blob_pair(seed, dims)
    y_pred, y = (torch.from_numpy(mask[None, None].astype(np.float32)) for mask in (pred, ref))
    assert dice(pred, ref) == pytest.approx(float(DiceMetric(include_background=True)(y_pred, y)), abs=1e-6)
    assert dice(pred, ref) == pytest.approx(deepmind.compute_dice_coefficient(ref, pred), abs=1e-12)
    assert iou(pred, ref) == pytest.approx(float(compute_iou(y_pred, y)), abs=1e-6)
    confusion = ConfusionMatrixMetric(include_background=True, metric_name=("precision", "recall"))
    confusion(y_pred, y)
    monai_precision, monai_recall = (float(value) for value in confusion.aggregate())
    assert precision(pred, ref) == pytest.approx(monai_precision, abs=1e-6)
    assert recall(pred, ref) == pytest.approx(monai_recall, abs=1e-6)


def test_empty_rules():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    assert OverlapCounts.from_masks(empty, empty).as_dict() == {
        "dice": 1.0,
        "iou": 1.0,
        "precision": 1.0,
        "recall": 1.0,
    }
    # Same as MONAI's DiceMetric(ignore_empty=False) for both empty.
    zeros = torch.zeros(1, 1, 4, 4)
    assert float(DiceMetric(include_background=True, ignore_empty=False)(zeros, zeros)) == 1.0
    missed = OverlapCounts.from_masks(empty, full)
    assert (missed.dice(), missed.iou(), missed.recall()) == (0.0, 0.0, 0.0) and math.isnan(
        missed.precision()
    )
    false_alarm = OverlapCounts.from_masks(full, empty)
    assert (false_alarm.dice(), false_alarm.precision()) == (0.0, 0.0) and math.isnan(false_alarm.recall())


def test_spacing_and_voxel_volume_of_an_oblique_anisotropic_affine():
    spacing = np.array([0.7, 0.9, 3.0])
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = (-90.0, 12.5, 40.0)
    assert spacing_from_affine(affine) == pytest.approx(tuple(spacing))
    assert spacing_from_affine(affine) == pytest.approx(tuple(nib.affines.voxel_sizes(affine)))
    assert voxel_volume_ml(affine) == pytest.approx(0.7 * 0.9 * 3.0 / 1000)
    mask = np.zeros((10, 10, 10), bool)
    mask[:5, :4, :2] = True  # 40 voxels
    assert volume_ml(mask, voxel_volume_ml(affine)) == pytest.approx(40 * 1.89e-3)


def test_2d_affines_give_areas_times_the_slice_thickness():
    flat = np.diag([0.5, 0.25, 1.0])  # a 3x3 2D affine: unit thickness
    assert spacing_from_affine(flat, 2) == (0.5, 0.25)
    assert voxel_volume_ml(flat, 2) == pytest.approx(0.125 / 1000)
    single_slice = np.diag([0.5, 0.25, 4.0, 1.0])  # a one-slice volume keeps its 4 mm thickness
    assert voxel_volume_ml(single_slice, 2) == pytest.approx(0.5 / 1000)
