"""`medattn.evaluate`: case pairing, returned rows, exact resampling, 2D inputs, and errors naming files."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

import medattn
from medattn.errors import GeometryError, NoCasesFoundError, UnreadableImageError
from medattn.metrics.case import evaluate_label_maps
from medattn.pipelines.evaluate_inputs import case_id

AFFINE = np.array([[0.8, 0, 0, -40.0], [0, 0.9, 0, 12.0], [0, 0, 3.0, 7.5], [0, 0, 0, 1]])


def _labels(shift: int = 0) -> np.ndarray:
    labels = np.zeros((18, 15, 7), np.uint8)
    labels[3:10, 2:9, 1:5] = 1
    labels[12:15, 10:13, 2:6] = 2
    return np.roll(labels, shift, axis=1)


def _nifti(path, labels, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), path)
    return path


def test_case_ids_strip_image_suffixes():
    assert [case_id(name) for name in ("a_01.nii.gz", "b.seg.nrrd", "c.nrrd", "d.mha", "e_0000.png")] == [
        "a_01",
        "b",
        "c",
        "d",
        "e_0000",
    ]


def test_api_pairs_by_id_across_formats_and_returns_rows(tmp_path):
    _nifti(tmp_path / "ref" / "p1.nii.gz", _labels())
    _nifti(tmp_path / "ref" / "p2.nii.gz", _labels())
    _nifti(tmp_path / "pred" / "p1.nii.gz", _labels(shift=1))
    # p2's prediction is an .mha written by SimpleITK (LPS on disk): same grid once read as RAS.
    image = sitk.GetImageFromArray(_labels().transpose(2, 1, 0))
    image.SetSpacing((0.8, 0.9, 3.0))
    image.SetOrigin((40.0, -12.0, 7.5))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "pred" / "p2.mha"))
    _nifti(tmp_path / "pred" / "stray.nii.gz", _labels())
    result = medattn.evaluate(tmp_path / "pred", tmp_path / "ref")
    assert [(row.case, row.label) for row in result.metrics] == [("p1", 1), ("p1", 2), ("p2", 1), ("p2", 2)]
    assert result.metrics[2].dice == 1.0 and result.metrics[3].hd95_mm == 0.0
    assert 0 < result.metrics[0].dice < 1 and result.metrics[0].hausdorff_mm == pytest.approx(0.9)
    assert result.unmatched_predictions == ["stray"] and result.files == {}
    assert result.metrics[0].vol_ref_ml == pytest.approx(7 * 7 * 4 * 0.8 * 0.9 * 3.0 / 1000)


def test_resample_is_exact_for_a_finer_grid(tmp_path):
    ref = _nifti(tmp_path / "ref" / "x.nii.gz", _labels())
    # Three times finer in-plane: each reference voxel centre is a fine voxel centre, so nearest is exact.
    fine = AFFINE.copy()
    fine[0, 0], fine[1, 1] = 0.8 / 3, 0.9 / 3
    fine[0, 3], fine[1, 3] = -40.0 - 0.8 / 3, 12.0 - 0.9 / 3
    _nifti(tmp_path / "fine" / "x.nii.gz", np.repeat(np.repeat(_labels(), 3, axis=0), 3, axis=1), fine)
    with pytest.raises(GeometryError, match="--resample"):
        medattn.evaluate(tmp_path / "fine" / "x.nii.gz", ref)
    assert "--resample" in medattn.evaluate(tmp_path / "fine", ref.parent).failed[0].error
    rows = medattn.evaluate(tmp_path / "fine", ref.parent, resample=True).metrics
    assert [row.dice for row in rows] == [1.0, 1.0]


def test_the_reference_voxels_in_another_order_need_no_resampling(tmp_path):
    """A prediction stored with axes flipped or swapped (LPS vs RAS writers) is re-indexed exactly; a NIfTI
    cropped to a block of the reference's voxels is not placed (only a DICOM SEG's omitted frames are:
    tests/io/test_write_dicom_seg.py), nor one half a voxel off."""
    ref = _nifti(tmp_path / "ref" / "x.nii.gz", _labels())
    flipped = AFFINE.copy()
    flipped[0, 0], flipped[0, 3] = -0.8, -40.0 + 0.8 * 17  # same voxels, stored in reverse order along i
    swapped = flipped[:, [1, 0, 2, 3]]  # and the first two axes swapped
    _nifti(tmp_path / "flip" / "x.nii.gz", _labels()[::-1].transpose(1, 0, 2).copy(), swapped)
    assert [row.dice for row in medattn.evaluate(tmp_path / "flip", ref.parent).metrics] == [1.0, 1.0]
    block = AFFINE.copy()
    block[:3, 3] = AFFINE[:3, :3] @ [2, 1, 1] + AFFINE[:3, 3]  # voxels [2:16, 1:14, 1:6] of the reference
    _nifti(tmp_path / "crop" / "x.nii.gz", _labels()[2:16, 1:14, 1:6].copy(), block)
    assert "--resample" in medattn.evaluate(tmp_path / "crop", ref.parent).failed[0].error
    rows = medattn.evaluate(tmp_path / "crop", ref.parent, resample=True).metrics
    assert [row.dice for row in rows] == [1.0, 1.0]  # the block holds every labelled voxel
    half = flipped.copy()
    half[0, 3] += 0.4  # half a voxel off: not the reference's voxels
    _nifti(tmp_path / "off" / "x.nii.gz", _labels()[::-1].copy(), half)
    assert "--resample" in medattn.evaluate(tmp_path / "off", ref.parent).failed[0].error


def test_png_masks_and_single_slice_volumes_are_2d(tmp_path):
    mask = np.zeros((20, 24), np.uint8)
    mask[4:12, 5:15] = 1
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    Image.fromarray(mask).save(tmp_path / "ref" / "frame.png")
    Image.fromarray(np.roll(mask, 2, axis=1)).save(tmp_path / "pred" / "frame.png")
    (row,) = medattn.evaluate(tmp_path / "pred", tmp_path / "ref").metrics
    expected = evaluate_label_maps(np.roll(mask, 2, axis=1).T, mask.T, np.eye(3), [1]).metrics[0]
    assert row.dice == pytest.approx(expected.dice) and row.hausdorff_mm == pytest.approx(2.0)
    one_slice = np.diag([0.5, 0.5, 4.0, 1.0])
    _nifti(tmp_path / "r3" / "s.nii.gz", mask[:, :, None], one_slice)
    _nifti(tmp_path / "p3" / "s.nii.gz", np.roll(mask, 2, axis=1)[:, :, None], one_slice)
    (row,) = medattn.evaluate(tmp_path / "p3", tmp_path / "r3").metrics
    assert row.hausdorff_mm == pytest.approx(1.0)  # in-plane: 2 pixels of 0.5 mm
    assert row.assd_mm == pytest.approx(expected.assd_mm * 0.5)


def test_errors_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    _nifti(tmp_path / "ref" / "a.nii.gz", _labels())
    with pytest.raises(NoCasesFoundError, match="no label file"):
        medattn.evaluate(tmp_path / "ref", tmp_path / "empty")
    _nifti(tmp_path / "other" / "b.nii.gz", _labels())
    with pytest.raises(NoCasesFoundError, match="matches"):
        medattn.evaluate(tmp_path / "other", tmp_path / "ref")
    _nifti(tmp_path / "prob" / "a.nii.gz", _labels().astype(np.float32) * 0.4)
    with pytest.raises(UnreadableImageError, match="non-integer"):  # two files: the case's error is raised
        medattn.evaluate(tmp_path / "prob" / "a.nii.gz", tmp_path / "ref" / "a.nii.gz")


def test_a_case_that_cannot_be_scored_fails_alone(tmp_path):
    """Non-integer labels, another grid, another shape: each case is named with its reason in summary.json,
    the good case is scored, and nothing stops at the first bad file."""
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    for name in ("good", "float", "grid", "shape"):
        _nifti(tmp_path / "ref" / f"{name}.nii.gz", _labels())
    _nifti(tmp_path / "pred" / "good.nii.gz", _labels(1))
    _nifti(tmp_path / "pred" / "float.nii.gz", _labels().astype(np.float32) * 0.4)
    _nifti(tmp_path / "pred" / "grid.nii.gz", _labels(), shifted)
    _nifti(tmp_path / "pred" / "shape.nii.gz", _labels()[:-1])
    result = medattn.evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "out")
    assert {row.case for row in result.metrics} == {"good"}
    reasons = {failure.case: failure.error for failure in result.failed}
    assert set(reasons) == {"float", "grid", "shape"}
    assert "non-integer" in reasons["float"] and "float.nii.gz" in reasons["float"]
    assert "--resample" in reasons["grid"] and "shape" in reasons["shape"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_cases"] == 4 and summary["n_scored"] == 1
    assert [failure["case"] for failure in summary["failed_cases"]] == ["float", "grid", "shape"]


def test_summary_has_no_nan(tmp_path):
    _nifti(tmp_path / "ref" / "a.nii.gz", _labels())
    _nifti(tmp_path / "pred" / "a.nii.gz", np.zeros_like(_labels()))
    result = medattn.evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "out")
    text = (tmp_path / "out" / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert math.isnan(result.metrics[0].hd95_mm)


@pytest.mark.slow
def test_parallel_workers_give_the_same_rows(tmp_path):
    for name, shift in (("a", 0), ("b", 1), ("c", 2)):
        _nifti(tmp_path / "ref" / f"{name}.nii.gz", _labels())
        _nifti(tmp_path / "pred" / f"{name}.nii.gz", _labels(shift))
    serial = medattn.evaluate(tmp_path / "pred", tmp_path / "ref")
    parallel = medattn.evaluate(tmp_path / "pred", tmp_path / "ref", workers=2)
    assert parallel.metrics == serial.metrics and parallel.lesions == serial.lesions
