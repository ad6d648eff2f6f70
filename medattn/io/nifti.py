"""NIfTI: read scans (nibabel), write label maps and probability volumes, gzip through ISA-L.

Reading goes through nibabel because nibabel's choice of sform over qform is what the field (MONAI,
nnU-Net, FSL) reads; ITK prefers the qform and can disagree on files whose two forms differ
(`NiftiForms`). A fourth axis becomes channels (multi-channel NIfTI, RGB).

.nii.gz goes through ISA-L's gzip (the `isal` package) instead of zlib: the same bytes at the same level,
compressed and decompressed several times faster. Without isal (a trimmed install) reading and writing
fall back to nibabel's own zlib path.

Whichever path reads it, a header is checked before its voxels are read (`_check_header`): a damaged field
is named (datatype, dim, vox_offset, sform, qform, pixdim) and data the file cannot hold is refused
before it is allocated.
"""

from __future__ import annotations

import gzip
import math
import re
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import MetaTensor
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from medattn.errors import GeometryError, InputWarning, MedattnError, UnreadableImageError
from medattn.io.atomic import atomic_path, full_suffix
from medattn.io.geometry import NiftiForms, as_volume, volume_meta
from medattn.io.itk import header_affine_ras
from medattn.io.limits import check_claimed_size
from medattn.io.placement import place_mask

try:
    from isal import igzip, isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency; a trimmed install still works through zlib
    igzip = isal_zlib = None

# nibabel's own compression level for .nii.gz (nibabel.openers): fast, files a few percent larger than 6.
COMPRESS_LEVEL = 1
GZIP_MAGIC = b"\x1f\x8b"

# NIfTI xform code 1 = scanner-based anatomical coordinates: what dcm2niix and nnU-Net write.
NIFTI_XFORM_SCANNER = 1

_GZIP_ERRORS = (zlib.error, gzip.BadGzipFile, *((isal_zlib.error,) if isal_zlib is not None else ()))
# What nibabel, gzip, zlib and ISA-L raise on a damaged or cut-short file; `_damage` says what each means.
_DAMAGED_FILE_ERRORS = (
    nib.filebasedimages.ImageFileError,
    HeaderDataError,
    WrapStructError,
    OSError,
    EOFError,
    ValueError,
    OverflowError,
    MemoryError,
    *_GZIP_ERRORS,
)
# Words of nibabel's messages -> the header field they are about.
_DAMAGED_FIELDS = {
    "data code": "datatype",
    "vox offset": "vox_offset",
    "slope": "scl_slope / scl_inter",
    "intercept": "scl_slope / scl_inter",
    "w2 should be positive": "qform (quatern_b, quatern_c, quatern_d: not a rotation)",
    "magic string": "magic",
    "float NaN to integer": "vox_offset",  # nibabel's int(vox_offset) of a NaN
}
# nibabel's messages on a file cut short: inside the header, and inside the voxel data.
_CUT_IN_HEADER = "Binary block is wrong size"
_CUT_IN_DATA = re.compile(r"Expected (\d+) bytes, got (\d+) bytes")


def read_nifti(path: str | Path) -> MetaTensor:
    """A NIfTI file as (C, i, j, k); 2D NIfTI gives a single slice volume, 4D/5D and RGB give channels."""
    path = Path(path)
    try:
        image, data = read_gzipped_nifti(path) or _misnamed_plain_nifti(path) or _read_with_nibabel(path)
    except MedattnError:
        raise
    except _DAMAGED_FILE_ERRORS as error:
        raise UnreadableImageError(_damage(error), path) from error
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
    meta = volume_meta(path, affine, 3)
    forms = ambiguous_forms(image.header, affine, path)
    if forms is not None:
        meta["nifti_forms"] = forms
    if file_dims == 2:  # a 2D NIfTI: masks written as NIfTI for it keep its two dimensions
        meta["nifti_2d"] = True
    return MetaTensor(np.ascontiguousarray(array), affine=affine, meta=meta)


def ambiguous_forms(header, affine: np.ndarray, path: Path) -> NiftiForms | None:
    """`NiftiForms` of a header whose readers disagree (both forms coded and different, or neither coded),
    with an InputWarning naming the file; None for an ordinary header."""
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    both_coded, neither_coded = qform_code > 0 and sform_code > 0, qform_code == sform_code == 0
    if not (both_coded or neither_coded):
        return None
    try:
        qform = header.get_qform()
    except ValueError as error:  # quaternion b, c, d longer than 1: no rotation
        if neither_coded:  # an unused qform: what its code 0 means is pixdim alone
            qform = header.get_base_affine()
        else:
            raise GeometryError(
                f"{_damage(error)}: ITK and 3D Slicer cannot place this scan", path
            ) from error
    sform = header.get_sform()
    if both_coded and np.allclose(qform, sform, atol=1e-3):
        return None
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header only
    except RuntimeError:
        return None  # ITK cannot read it at all: nothing to agree with
    itk_affine = header_affine_ras(reader)
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
    _check_header(image, path)
    return image, np.asanyarray(image.dataobj)


def _check_header(image: nib.Nifti1Image, path: Path) -> None:
    """Refuse a damaged header before its voxels are read: a dimension below 1, voxel data that cannot fit
    in the file (`check_claimed_size`: the allocation guard), or a placement no viewer can use.

    Raises:
        UnreadableImageError: the dim or vox_offset field is damaged, or the data claimed does not fit.
        GeometryError: the affine nibabel builds (from the sform, the qform or pixdim) is not finite or
            singular; the message names the field it came from.
    """
    header = image.header
    shape = header.get_data_shape()
    if any(n < 1 for n in shape):
        raise UnreadableImageError(f"the header's dim field is damaged (shape {shape})", path)
    claimed = math.prod(shape) * header.get_data_dtype().itemsize
    file_bytes = path.stat().st_size
    if is_gzipped(path):
        check_claimed_size(claimed, path, compressed=True, file_bytes=file_bytes, what="voxel data")
    else:
        offset = int(image.dataobj.offset)  # the file's own vox_offset (the image's header copy says 0)
        if offset > file_bytes:
            raise UnreadableImageError(
                f"the header's vox_offset field is damaged (voxel data at byte {offset} of a "
                f"{file_bytes}-byte file)",
                path,
            )
        check_claimed_size(claimed, path, compressed=False, file_bytes=file_bytes - offset, what="voxel data")
    _check_affine(header, np.asarray(image.affine, dtype=np.float64), path)


def _check_affine(header, affine: np.ndarray, path: Path) -> None:
    """GeometryError naming the header field a non-finite or singular affine came from (nibabel's choice:
    the sform if coded, else the qform if coded, else pixdim alone)."""
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    with np.errstate(all="ignore"):  # the very damage looked for overflows
        degenerate = (spacing == 0).any() or abs(np.linalg.det(linear)) <= 1e-6 * float(np.prod(spacing))
    if np.isfinite(affine).all() and not degenerate:  # load_image's test, here with the field named
        return
    pixdim = [float(v) for v in header["pixdim"][1:4]]
    pixdim_damaged = not all(np.isfinite(pixdim)) or 0 in pixdim
    if int(header["sform_code"]) != 0:
        field = "sform (srow_x, srow_y, srow_z)"
    elif int(header["qform_code"]) != 0 and not pixdim_damaged:
        field = "qform (quatern_b/c/d, qoffset_x/y/z)"
    else:
        field = "pixdim"
    raise GeometryError(
        f"the header's {field} field is damaged: voxel sizes {np.round(spacing, 6).tolist()} mm, origin "
        f"{np.round(affine[:3, 3], 3).tolist()} mm; no viewer can place this scan",
        path,
    )


def _damage(error: Exception) -> str:
    """What a library's error on a damaged NIfTI means, naming the header field where it is one."""
    text = str(error).splitlines()[0] if str(error).strip() else type(error).__name__
    if _CUT_IN_HEADER in text:
        return "the file is cut short inside its header"
    cut = _CUT_IN_DATA.search(text)
    if cut:
        return (
            f"the file is cut short: the header claims {cut[1]} bytes of voxel data, the file holds {cut[2]}"
        )
    for clue, field in _DAMAGED_FIELDS.items():
        if clue in text:
            return f"the header's {field} field is damaged ({text})"
    if isinstance(error, EOFError):
        return f"the file is cut short ({text})"
    if isinstance(error, _GZIP_ERRORS):
        return f"not a readable NIfTI file: its gzip-compressed data is damaged ({text})"
    if "Cannot work out file type" in text:
        return "not a readable NIfTI file: no NIfTI header found (the file is damaged or not a NIfTI file)"
    return f"not a readable NIfTI file ({text})"


def is_gzipped(path: Path) -> bool:
    """Whether the file starts with gzip's magic bytes, whatever its name says."""
    try:
        with open(path, "rb") as stream:
            return stream.read(2) == GZIP_MAGIC
    except OSError:
        return False


def read_gzipped_nifti(path: Path) -> tuple[nib.Nifti1Image, np.ndarray] | None:
    """A gzipped NIfTI (.nii.gz, or a .nii that is gzipped after all) and its voxels (scaled as nibabel
    scales them), decompressed by ISA-L.

    Returns None when isal is missing or the file is anything but a gzipped NIfTI-1/2, so that nibabel's
    own reading (and its error message) follows.
    """
    if full_suffix(path) not in (".nii.gz", ".nii") or igzip is None or not is_gzipped(path):
        return None
    return read_nifti_stream(path, igzip.open)


def read_nifti_stream(path: Path, opener) -> tuple[nib.Nifti1Image, np.ndarray] | None:
    """A NIfTI-1/2 image read from `opener(path, "rb")` (a file or decompressing stream) and its voxels,
    its header checked (`_check_header`) before they are read; None when the stream holds no NIfTI header,
    so that nibabel's reading and error message follow."""
    with opener(path, "rb") as stream:
        first = stream.read(4)
        stream.seek(0)
        header_sizes = {int.from_bytes(first, order) for order in ("little", "big")}  # either byte order
        if 348 in header_sizes:
            image_class = nib.Nifti1Image
        elif 540 in header_sizes:
            image_class = nib.Nifti2Image
        else:
            return None
        image = image_class.from_stream(stream)
        _check_header(image, path)
        return image, np.asanyarray(image.dataobj)


def save_nifti(image: nib.Nifti1Image, path: Path) -> None:
    """`nib.save(image, path)`; a .nii.gz is compressed by ISA-L at nibabel's level."""
    if full_suffix(path) != ".nii.gz" or igzip is None:
        nib.save(image, path)
        return
    with igzip.open(path, "wb", compresslevel=COMPRESS_LEVEL) as stream:
        image.to_stream(stream)


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


def write_mask(mask: object, path: Path, reference: object, labels: object) -> None:
    """`save_mask` for .nii.gz / .nii: the labels on the reference grid, a 2D NIfTI's mask kept 2D."""
    placed = place_mask(mask, path, reference, labels)
    labels_array = placed.labels
    reference_image = placed.reference
    from_2d_nifti = reference_image is not None and bool(reference_image.meta.get("nifti_2d"))
    keep_2d = from_2d_nifti and labels_array.shape[2:] in ((), (1,))
    if keep_2d:  # the mask of a 2D NIfTI is a 2D NIfTI of the same shape
        labels_array = labels_array.reshape(labels_array.shape[:2])
    write_nifti(labels_array, placed.affine, path, placed.nifti_forms, keep_2d=keep_2d)


def save_probability_volume(volume, path: Path) -> Path:
    """A float volume (C, *spatial) on the input grid as NIfTI, channels last, for overlays in Slicer."""
    array = np.moveaxis(np.asarray(volume, dtype=np.float32), 0, -1)
    if array.shape[-1] == 1:
        array = array[..., 0]
    with atomic_path(path) as tmp:
        save_nifti(nib.Nifti1Image(array, np.asarray(volume.affine, dtype=np.float64)), tmp)
    return path
