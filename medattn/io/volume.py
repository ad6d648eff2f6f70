"""Read volume files (NIfTI with nibabel; NRRD, Slicer .seg.nrrd, MHA/MHD with SimpleITK) into MetaTensors.

NIfTI goes through nibabel because nibabel's choice of sform over qform is what the field (MONAI,
nnU-Net, FSL) reads; ITK prefers the qform and can disagree on files whose two forms differ. Everything
else goes through SimpleITK, whose LPS geometry is converted to RAS. A fourth axis becomes channels
(multi-channel NIfTI, vector NRRD, or the layers of a Slicer segmentation).
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.data import MetaTensor

from medattn.errors import InputWarning, UnreadableImageError
from medattn.io.atomic import full_suffix
from medattn.io.dicom_geometry import LPS_TO_RAS
from medattn.io.fast_gzip import is_gzipped, read_gzipped_nifti, read_nifti_stream

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
        image, data = read_gzipped_nifti(path) or _misnamed_plain_nifti(path) or _read_with_nibabel(path)
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
    file_dims = data.ndim
    while data.ndim < 3:
        data = data[..., None]
    # NIfTI stores extra dimensions after the three spatial ones (5D for vectors: x, y, z, t=1, c).
    data = data.reshape(*data.shape[:3], -1)
    array = np.moveaxis(data, -1, 0)
    if not array.dtype.isnative:  # big-endian files: torch accepts native byte order only
        array = array.astype(array.dtype.newbyteorder("="))
    affine = np.asarray(image.affine, dtype=np.float64)
    meta = _meta(path, affine, 3)
    forms = ambiguous_forms(image.header, affine, path)
    if forms is not None:
        meta["nifti_forms"] = forms
    if file_dims == 2:  # a 2D NIfTI: masks written as NIfTI for it keep its two dimensions
        meta["nifti_2d"] = True
    return MetaTensor(np.ascontiguousarray(array), affine=affine, meta=meta)


@dataclass(frozen=True)
class NiftiForms:
    """The geometry of a NIfTI file whose readers disagree on it, as the file holds it.

    A header with a qform and an sform that differ, or with neither coded, places the scan differently in
    nibabel (sform first, else the qform, else a centred guess from the voxel size) and in ITK / 3D Slicer
    (qform first; the raw voxel size at the origin when neither is coded). medattn reads nibabel's
    placement; the mask writers use these to put a mask wherever each reader puts the scan: NIfTI masks
    copy both forms and their codes, NRRD / MHA / .seg.nrrd masks (read by ITK) take ITK's placement.
    """

    qform: np.ndarray
    qform_code: int
    sform: np.ndarray
    sform_code: int
    nibabel_affine: np.ndarray  # voxel -> RAS, as nibabel (and medattn) read the file
    itk_affine: np.ndarray  # voxel -> RAS, as ITK reads the file


def ambiguous_forms(header, affine: np.ndarray, path: Path) -> NiftiForms | None:
    """`NiftiForms` of a header whose readers disagree (both forms coded and different, or neither coded),
    with an InputWarning naming the file; None for an ordinary header."""
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    qform, sform = header.get_qform(), header.get_sform()
    both_coded, neither_coded = qform_code > 0 and sform_code > 0, qform_code == sform_code == 0
    if not (neither_coded or (both_coded and not np.allclose(qform, sform, atol=1e-3))):
        return None
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header only
    except RuntimeError:
        return None  # ITK cannot read it at all: nothing to agree with
    itk_affine = _itk_header_affine_ras(reader)
    if itk_affine is None or np.allclose(itk_affine, affine, atol=1e-3):
        return None
    if neither_coded:
        problem = "has neither a qform nor an sform (both codes 0): its orientation is unknown"
    else:
        shift = float(np.linalg.norm(qform[:3, 3] - sform[:3, 3]))
        problem = f"has a qform and an sform that disagree (origins {shift:.1f} mm apart)"
    warnings.warn(
        f"{path}: the header {problem}, and nibabel-based tools (and medattn) place the scan differently "
        "from ITK and 3D Slicer; masks are written so that each reader places them where it places the scan",
        InputWarning,
        stacklevel=4,
    )
    return NiftiForms(qform, qform_code, sform, sform_code, np.asarray(affine, dtype=np.float64), itk_affine)


def _itk_header_affine_ras(reader: sitk.ImageFileReader) -> np.ndarray | None:
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


def _misnamed_plain_nifti(path: Path) -> tuple[nib.Nifti1Image, np.ndarray] | None:
    """An uncompressed NIfTI named .nii.gz (nibabel would fail on it with "Not a gzipped file"), read as
    what it is; None for every other file."""
    if full_suffix(path) != ".nii.gz" or is_gzipped(path):
        return None
    return read_nifti_stream(path, open)


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
