"""Read volume files (NIfTI with nibabel; NRRD, Slicer .seg.nrrd, MHA/MHD with SimpleITK) into MetaTensors.

NIfTI goes through nibabel because nibabel's choice of sform over qform is what the field (MONAI,
nnU-Net, FSL) reads; ITK prefers the qform and can disagree on files whose two forms differ. Everything
else goes through SimpleITK, whose LPS geometry is converted to RAS. A fourth axis becomes channels
(multi-channel NIfTI, vector NRRD, or the layers of a Slicer segmentation).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.data import MetaTensor

from medattn.errors import UnreadableImageError
from medattn.io.atomic import full_suffix
from medattn.io.dicom_geometry import LPS_TO_RAS
from medattn.io.fast_gzip import read_gzipped_nifti

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".seg.nrrd", ".nhdr", ".seg.nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES


def _meta(path: Path, affine: np.ndarray, spatial_dims: int, modality: str = "") -> dict:
    return {
        "filename_or_obj": str(path),
        "modality": modality,
        "spacing": tuple(float(v) for v in np.linalg.norm(affine[:3, :spatial_dims], axis=0)),
        "space": "RAS",
        "original_channel_dim": 0,
    }


def read_nifti(path: str | Path) -> MetaTensor:
    """A NIfTI file as (C, i, j, k); 2D NIfTI gives a single slice volume, 4D/5D and RGB give channels."""
    path = Path(path)
    try:
        image, data = read_gzipped_nifti(path) or _read_with_nibabel(path)
    except (
        nib.filebasedimages.ImageFileError,
        OSError,
        EOFError,
        zlib.error,
        gzip.BadGzipFile,
        ValueError,
        MemoryError,
    ) as error:
        raise UnreadableImageError(f"not a readable NIfTI file ({error})", path) from error
    if data.dtype.names:  # RGB(A) NIfTI: a structured dtype, one field per colour
        data = np.stack([data[name] for name in data.dtype.names], axis=-1)
    if np.iscomplexobj(data):
        raise UnreadableImageError(
            "complex-valued NIfTI (e.g. raw MR phase data) is not an image to segment", path
        )
    if data.ndim < 2:
        raise UnreadableImageError(
            f"a NIfTI image needs at least 2 dimensions, found shape {data.shape}", path
        )
    while data.ndim < 3:
        data = data[..., None]
    # NIfTI stores extra dimensions after the three spatial ones (5D for vectors: x, y, z, t=1, c).
    data = data.reshape(*data.shape[:3], -1)
    array = np.moveaxis(data, -1, 0)
    if not array.dtype.isnative:  # big-endian files: torch accepts native byte order only
        array = array.astype(array.dtype.newbyteorder("="))
    affine = np.asarray(image.affine, dtype=np.float64)
    return MetaTensor(np.ascontiguousarray(array), affine=affine, meta=_meta(path, affine, 3))


def _read_with_nibabel(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    image = nib.load(path)
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise UnreadableImageError(f"a {type(image).__name__} is not a NIfTI-1/2 image volume", path)
    _check_declared_size(image, path)
    return image, np.asanyarray(image.dataobj)


def _check_declared_size(image: nib.Nifti1Image, path: Path) -> None:
    """Refuse a header that promises more data than an uncompressed file holds (instead of a MemoryError)."""
    if full_suffix(path) != ".nii":
        return
    header = image.header
    declared = int(np.prod(header.get_data_shape(), dtype=np.int64)) * header.get_data_dtype().itemsize
    available = path.stat().st_size - int(header.get_data_offset())
    if declared > available:
        raise UnreadableImageError(
            f"the header declares {declared} bytes of voxel data but the file holds {available}: truncated?",
            path,
        )


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
    return MetaTensor(np.ascontiguousarray(array), affine=affine, meta=_meta(path, affine, 3))


def _itk_affine_ras(image: sitk.Image) -> np.ndarray:
    """SimpleITK's origin/spacing/direction (LPS) as a 4x4 voxel -> RAS affine; 2D images embed in 3D."""
    dims = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dims, dims)
    affine = np.eye(4)
    affine[:dims, :dims] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine[:dims, 3] = image.GetOrigin()
    return LPS_TO_RAS @ affine
