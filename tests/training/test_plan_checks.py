"""Planning from a dataset: cases that cannot be trained on are named and left out; patches fit the net."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medattn.errors import ConfigError, InputWarning
from medattn.io import discover
from medattn.plan import _patch_size, fingerprint_dataset

AFFINE = np.diag([0.8, 0.8, 1.5, 1.0])


def _case(root, name, label, label_affine=AFFINE, shape=(20, 18, 12)):
    image = np.random.default_rng(0).normal(100, 20, size=shape).astype(np.float32)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, AFFINE), root / "imagesTr" / f"{name}_0000.nii.gz")
    nib.save(nib.Nifti1Image(label, label_affine), root / "labelsTr" / f"{name}.nii.gz")


def _label(shape=(20, 18, 12), value=1.0, dtype=np.uint8):
    label = np.zeros(shape, dtype)
    label[5:12, 4:10, 3:8] = value
    return label


def test_cases_off_the_image_grid_or_not_labels_are_named_and_left_out(tmp_path):
    """nnU-Net refuses such a dataset outright; medattn trains on the rest and says which case and why:
    a label saved without the image's header (identity affine), a cropped label, probabilities."""
    _case(tmp_path, "good_a", _label())
    _case(tmp_path, "good_b", _label())
    _case(tmp_path, "no_header", _label(), label_affine=np.eye(4))
    _case(tmp_path, "cropped", _label()[:-2])
    _case(tmp_path, "probabilities", _label(value=0.4, dtype=np.float32))
    cases = list(discover(tmp_path))
    with pytest.warns(InputWarning, match="3 of 5 training case"):
        fingerprint = fingerprint_dataset(cases)
    assert set(fingerprint.excluded) == {"no_header", "cropped", "probabilities"}
    assert (
        "grid" in fingerprint.excluded["no_header"]
        and "no_header.nii.gz" in fingerprint.excluded["no_header"]
    )
    assert "shape (18, 18, 12)" in fingerprint.excluded["cropped"]
    assert "non-integer" in fingerprint.excluded["probabilities"]
    assert len(fingerprint.shapes) == 2 and fingerprint.label_values == [1]


def test_a_dataset_with_no_usable_case_is_one_clear_error(tmp_path):
    _case(tmp_path, "cropped", _label()[:-2])
    with pytest.raises(ConfigError, match="no training case can be used: cropped: .*shape"):
        fingerprint_dataset(list(discover(tmp_path)))


def test_patches_leave_the_deepest_level_more_than_one_voxel():
    """Instance norm cannot normalise a single voxel: 32^3 images for a network that down-samples 32x
    get 64^3 patches (padded), not 32^3; large images still shrink to the voxel budget."""
    assert _patch_size(np.array([32.0, 32.0, 32.0]), 128**3, 32) == [64, 64, 64]
    assert _patch_size(np.array([300.0, 300.0, 300.0]), 128**3, 32) == [128, 128, 128]
    assert _patch_size(np.array([300.0, 300.0, 300.0]), 10, 32) == [64, 64, 64]  # never below the floor


def test_a_label_holding_the_image_voxels_in_another_axis_order_is_kept(tmp_path):
    """A label written by an LPS tool for a RAS image (same voxels, axes flipped and swapped) is the same
    grid: training orients both to RAS, so it is not left out."""
    flipped = AFFINE.copy()
    flipped[0, 0], flipped[0, 3] = -0.8, 0.8 * 19  # i reversed
    swapped = flipped[:, [1, 0, 2, 3]]
    _case(tmp_path, "good", _label())
    _case(tmp_path, "reordered", _label()[::-1].transpose(1, 0, 2).copy(), label_affine=swapped)
    fingerprint = fingerprint_dataset(list(discover(tmp_path)))
    assert fingerprint.excluded == {} and len(fingerprint.shapes) == 2
