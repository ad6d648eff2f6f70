"""ITK formats (SimpleITK): read NRRD, MHA/MHD and Slicer .seg.nrrd scans, write NRRD and MHA label maps.

ITK stores geometry in LPS millimetres; it is converted to RAS here. A fourth axis becomes channels
(time series, or the layers of a Slicer segmentation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import MetaTensor

from medattn.errors import UnreadableImageError, WriteError
from medattn.io.atomic import atomic_path, full_suffix
from medattn.io.geometry import LPS_TO_RAS, NiftiForms, as_volume, volume_meta
from medattn.io.placement import place_mask


def read_itk(path: str | Path) -> MetaTensor:
    """NRRD / MHA / MHD (and Slicer .seg.nrrd) through SimpleITK, as (C, i, j, k) with a RAS affine."""
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise UnreadableImageError(
            f"not a readable {full_suffix(path)} image ({first_line})", path
        ) from error
    dims = image.GetDimension()
    if dims == 4:
        # A 4D NRRD (e.g. time series): split the last axis into channels.
        size = image.GetSize()
        channels = [sitk.Extract(image, [*size[:3], 0], [0, 0, 0, t]) for t in range(size[3])]
        arrays = [sitk.GetArrayFromImage(c).transpose(2, 1, 0) for c in channels]
        array = np.stack(arrays)
        image = channels[0]
        dims = 3
    else:
        data = sitk.GetArrayFromImage(image)  # (k, j, i[, components])
        if image.GetNumberOfComponentsPerPixel() == 1:
            data = data[..., None]
        array = np.moveaxis(data, -1, 0).transpose(0, *range(dims, 0, -1))
    if dims == 2:
        array = array[..., None]
    affine = _itk_affine_ras(image)
    return MetaTensor(np.ascontiguousarray(array), affine=affine, meta=volume_meta(path, affine, 3))


def _itk_affine_ras(image: sitk.Image) -> np.ndarray:
    """SimpleITK's origin/spacing/direction (LPS) as a 4x4 voxel -> RAS affine; 2D images embed in 3D."""
    dims = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dims, dims)
    affine = np.eye(4)
    affine[:dims, :dims] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine[:dims, 3] = image.GetOrigin()
    return LPS_TO_RAS @ affine


def header_affine_ras(reader: sitk.ImageFileReader) -> np.ndarray | None:
    """The voxel -> RAS affine of the first three axes of an image ITK has read the header of."""
    if reader.GetDimension() < 3:
        return None
    dims = reader.GetDimension()
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dims, dims)[:3, :3]
    flip = LPS_TO_RAS[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = flip @ direction @ np.diag(reader.GetSpacing()[:3])
    affine[:3, 3] = flip @ np.asarray(reader.GetOrigin()[:3], dtype=np.float64)
    return affine


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


def write_mask(mask: object, path: Path, reference: object, labels: object) -> None:
    """`save_mask` for .nrrd / .mha: a label map on the reference grid, where ITK places the reference."""
    placed = place_mask(mask, path, reference, labels)
    write_itk(placed.labels, itk_affine(placed.affine, placed.nifti_forms), path)
