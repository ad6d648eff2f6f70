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
from medattn.io.volume import NiftiForms

# NIfTI xform code 1 = scanner-based anatomical coordinates: what dcm2niix and nnU-Net write.
NIFTI_XFORM_SCANNER = 1


def as_volume(array: np.ndarray) -> np.ndarray:
    """A 2D label image as a one-slice volume; volume formats store three axes."""
    return array[..., None] if array.ndim == 2 else array


def write_nifti(
    labels: np.ndarray,
    affine_ras: np.ndarray,
    path: Path,
    forms: NiftiForms | None = None,
    keep_2d: bool = False,
) -> None:
    """A NIfTI label map whose sform and qform both hold `affine_ras` (voxel -> RAS mm), units mm.

    A 2D `labels` array is stored as a one-slice volume, or with `keep_2d` as a 2D NIfTI (for a 2D NIfTI
    input, so that the mask's shape is the input's in every reader).

    Both forms are set because readers differ in which one they trust (ITK prefers the qform, nibabel the
    sform); the qform is exact for any rotation plus spacing, i.e. every affine a scanner produces.
    With `forms` (the input's header, where its readers disagree), the mask gets the input's own two
    forms and codes instead, so every reader places it where it places the input.
    """
    image = nib.Nifti1Image(labels if keep_2d and labels.ndim == 2 else as_volume(labels), affine_ras)
    set_forms(image, affine_ras, forms)
    image.header.set_xyzt_units(xyz="mm")
    image.header.set_intent("label")  # NIFTI_INTENT_LABEL: viewers show it as a label map
    with atomic_path(path) as tmp:
        save_nifti(image, tmp)


def set_forms(image: nib.Nifti1Image, affine_ras: np.ndarray, forms: NiftiForms | None = None) -> None:
    """Both header forms of a new NIfTI on an input's grid: `affine_ras` with code 1, or the input's own
    forms and codes (`forms`) when they are what its readers disagree on and they describe this grid."""
    if forms is not None and np.allclose(forms.nibabel_affine, affine_ras, atol=1e-4):
        image.set_sform(forms.sform, code=forms.sform_code)
        image.set_qform(forms.qform, code=forms.qform_code)
        return
    image.set_sform(affine_ras, code=NIFTI_XFORM_SCANNER)
    image.set_qform(affine_ras, code=NIFTI_XFORM_SCANNER)


def itk_affine(affine_ras: np.ndarray, forms: NiftiForms | None) -> np.ndarray:
    """The affine an ITK-read output (NRRD, MHA, .seg.nrrd) on an input's grid gets: where ITK places the
    input when its NIfTI forms are ambiguous (`forms`), else `affine_ras`."""
    if forms is not None and np.allclose(forms.nibabel_affine, affine_ras, atol=1e-4):
        return forms.itk_affine
    return affine_ras


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
