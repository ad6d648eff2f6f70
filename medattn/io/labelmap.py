"""Write plain label maps (NIfTI with nibabel, NRRD and MHA with SimpleITK) carrying the grid's affine."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medattn.errors import WriteError
from medattn.io.atomic import atomic_path
from medattn.io.dicom_geometry import LPS_TO_RAS
from medattn.io.fast_gzip import save_nifti

# NIfTI xform code 1 = scanner-based anatomical coordinates: what dcm2niix and nnU-Net write.
NIFTI_XFORM_SCANNER = 1


def as_volume(array: np.ndarray) -> np.ndarray:
    """A 2D label image as a one-slice volume; volume formats store three axes."""
    return array[..., None] if array.ndim == 2 else array


def write_nifti(labels: np.ndarray, affine_ras: np.ndarray, path: Path) -> None:
    """A NIfTI label map whose sform and qform both hold `affine_ras` (voxel -> RAS mm), units mm.

    Both forms are set because readers differ in which one they trust (ITK prefers the qform, nibabel the
    sform); the qform is exact for any rotation plus spacing, i.e. every affine a scanner produces.
    """
    image = nib.Nifti1Image(as_volume(labels), affine_ras)
    image.set_sform(affine_ras, code=NIFTI_XFORM_SCANNER)
    image.set_qform(affine_ras, code=NIFTI_XFORM_SCANNER)
    image.header.set_xyzt_units(xyz="mm")
    image.header.set_intent("label")  # NIFTI_INTENT_LABEL: viewers show it as a label map
    with atomic_path(path) as tmp:
        save_nifti(image, tmp)


def itk_geometry(affine_ras: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Origin, spacing and direction (row-major) in ITK's LPS convention from a voxel -> RAS affine."""
    affine_lps = LPS_TO_RAS @ affine_ras
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    if np.any(spacing == 0):
        raise WriteError(f"the affine has a zero-length axis (spacing {spacing.tolist()} mm)")
    direction = affine_lps[:3, :3] / spacing
    return tuple(affine_lps[:3, 3].tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def write_itk(labels: np.ndarray, affine_ras: np.ndarray, path: Path) -> None:
    """A compressed NRRD / MHA label map through SimpleITK (the suffix of `path` picks the format)."""
    volume = as_volume(labels)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0)))  # ITK indexes (k, j, i)
    origin, spacing, direction = itk_geometry(affine_ras)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as error:
            raise WriteError(
                f"SimpleITK could not write the label map ({str(error).strip()[-200:]})", path
            ) from error
