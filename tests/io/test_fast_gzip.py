"""`save_nifti`: a .nii.gz compressed by ISA-L holds the bytes nibabel's own gzip would, readable by all."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medattn.io.nifti import igzip, save_nifti


def test_isal_gzip_holds_what_nibabel_writes_and_every_reader_reads_it(tmp_path):
    assert igzip is not None  # the dependency is installed, so this is the fast path
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-90, 40, 12)
    probabilities = np.random.default_rng(0).random((9, 8, 5, 3), dtype=np.float32)
    image = nib.Nifti1Image(probabilities, affine)
    save_nifti(image, tmp_path / "fast.nii.gz")
    nib.save(image, tmp_path / "reference.nii.gz")
    fast = (tmp_path / "fast.nii.gz").read_bytes()
    assert fast[:2] == b"\x1f\x8b"  # gzip, not a plain .nii under a .gz name
    assert gzip.decompress(fast) == gzip.decompress((tmp_path / "reference.nii.gz").read_bytes())
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "fast.nii.gz").dataobj), probabilities)
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "fast.nii.gz")))
    np.testing.assert_array_equal(itk, np.transpose(probabilities, (3, 2, 1, 0)))  # ITK: axes reversed


def test_uncompressed_nifti_is_left_to_nibabel(tmp_path):
    image = nib.Nifti1Image(np.arange(24, dtype=np.uint8).reshape(4, 3, 2), np.eye(4))
    save_nifti(image, tmp_path / "mask.nii")
    assert (tmp_path / "mask.nii").read_bytes()[:2] != b"\x1f\x8b"
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "mask.nii").dataobj), image.get_fdata())
