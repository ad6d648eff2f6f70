"""Rigid registration of a moved scan to the baseline: the known motion found to under a millimetre."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from follow_up import affine_ras, baseline_scan, motion

from medattn.longitudinal.registration import labels_on_baseline, register_rigid, rigid_matrix_ras


def test_finds_a_known_motion_to_under_a_millimetre():
    fixed = baseline_scan(3.0)
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    moved = motion(2, centre)  # follow-up point -> baseline point
    moving = sitk.Resample(fixed, fixed, moved, sitk.sitkLinear, 0.0)
    result = register_rigid(fixed, moving)
    truth = np.linalg.inv(rigid_matrix_ras(moved))  # baseline RAS -> follow-up RAS
    corners = np.array([[x, y, z, 1.0] for x in (-60, 60) for y in (-80, 60) for z in (-50, 70)])
    error = np.linalg.norm(corners @ (result.matrix_ras() - truth).T, axis=1)
    assert error.max() < 1.0, error
    assert result.metric < -0.5 and result.iterations > 0
    # A follow-up point carried back to the baseline lands where it came from.
    point = np.array([10.0, -20.0, 30.0])
    there = (truth @ np.append(point, 1.0))[:3]
    assert np.allclose(result.to_baseline_ras(there[None])[0], point, atol=1.0)


def test_labels_follow_the_registration():
    fixed = baseline_scan(3.0)
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    shift = sitk.Euler3DTransform(centre, 0, 0, 0, (6.0, 0.0, 0.0))  # follow-up x = baseline x - 6 mm (LPS)
    result = register_rigid(fixed, sitk.Resample(fixed, fixed, shift, sitk.sitkLinear, 0.0))
    labels = np.zeros(fixed.GetSize(), dtype=np.int32)
    labels[20:24, 30:34, 25:29] = 1
    back = labels_on_baseline(labels, affine_ras(fixed), fixed, result)
    # The follow-up shows the baseline 6 mm (two voxels) further along i: carried back, two voxels lower.
    assert back.sum() == labels.sum()
    assert np.argwhere(back)[:, 0].min() == 18
