"""ITK formats (SimpleITK): read NRRD, MHA/MHD and Slicer .seg.nrrd scans, write NRRD and MHA label maps.

ITK stores geometry in LPS millimetres; it is converted to RAS here. A fourth axis becomes channels
(time series, or the layers of a Slicer segmentation). A damaged header is refused before SimpleITK
allocates the voxels: a claim the file cannot hold, a geometry no viewer can place (the field named).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.data import MetaTensor

from medattn.errors import GeometryError, UnreadableImageError, WriteError
from medattn.io.atomic import atomic_path, full_suffix
from medattn.io.geometry import LPS_TO_RAS, NiftiForms, as_volume, volume_meta
from medattn.io.limits import check_claimed_size
from medattn.io.placement import place_mask

#: Bytes of a NRRD or MetaImage file read as its text header (Slicer's .seg.nrrd headers run to a few kB).
HEADER_BYTES = 1 << 16
#: The header fields that hold each part of the geometry, as a user finds them in the file.
GEOMETRY_FIELDS = {
    "nrrd": {
        "spacing": "space directions (or spacings)",
        "origin": "space origin",
        "direction": "space directions",
    },
    "mha": {"spacing": "ElementSpacing", "origin": "Offset", "direction": "TransformMatrix"},
}
#: ITK's words (NRRD's teem, MetaIO) for voxel data that ends early or does not decompress.
_CUT_OR_DAMAGED = re.compile(r"expected \d+ bytes but received|data read error|data not read completely")
#: The most dimensions ITK's MetaImage reader (MetaIO) holds.
METAIO_MAX_DIMS = 10
#: A voxel size below this (a picometre) is a zero that ITK has replaced by a tiny number.
MIN_SPACING_MM = 1e-9


def read_itk(path: str | Path) -> MetaTensor:
    """NRRD / MHA / MHD (and Slicer .seg.nrrd) through SimpleITK, as (C, i, j, k) with a RAS affine.

    The header is read first: what it claims is checked against the file (`check_claimed_size`) and its
    geometry against what a viewer can place before SimpleITK allocates the voxels.
    """
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        packed, data_bytes = _stored_data(path)
        reader.ReadImageInformation()
        check_claimed_size(_claimed_bytes(reader), path, compressed=packed, file_bytes=data_bytes)
        _check_geometry(reader, path)
        image = reader.Execute()
    except (RuntimeError, OSError) as error:  # OSError: the header could not be opened for `_stored_data`
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        if _CUT_OR_DAMAGED.search(str(error)):
            raise UnreadableImageError(
                f"the voxel data is cut short or damaged ({first_line})", path
            ) from error
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


def _claimed_bytes(reader: sitk.ImageFileReader) -> int:
    """The bytes SimpleITK will allocate for an image whose header it has read."""
    pixel_id = reader.GetPixelID()
    component_bytes = sitk.Image([1, 1], pixel_id, 1).GetSizeOfPixelComponent()  # a complex pixel: both parts
    vector = sitk.GetPixelIDValueAsString(pixel_id).startswith("vector")
    return math.prod(reader.GetSize()) * component_bytes * (reader.GetNumberOfComponents() if vector else 1)


def _stored_data(path: Path) -> tuple[bool, int]:
    """Whether the header says its voxels are stored packed (compressed, or written as text) and the bytes
    of the file(s) holding them: the file after its header, or the data file a .nhdr / .mhd names.

    SimpleITK does not tell, so the text header is read here: NRRD's `encoding` and `data file` fields,
    MetaImage's `CompressedData` and `ElementDataFile`. A MetaImage's NDims is checked here too, before
    ITK parses it: MetaIO writes past its arrays (and corrupts the heap) on an NDims beyond its limit.

    Raises:
        UnreadableImageError: NDims disagrees with DimSize, or the data file the header names does not exist.
    """
    with open(path, "rb") as stream:
        head = stream.read(HEADER_BYTES)
    is_nrrd = head.startswith(b"NRRD")
    fields, header_end, position = {}, 0, 0
    for raw_line in head.split(b"\n"):
        position += len(raw_line) + 1
        line = raw_line.decode("latin-1").strip()
        key, _, value = line.partition(":" if is_nrrd else "=")
        fields[key.strip().lower()] = value.strip()
        if (not line) if is_nrrd else key.strip().lower() == "elementdatafile":  # the header's last line
            header_end = position
            break
    if is_nrrd:
        packed = fields.get("encoding", "gzip").lower() != "raw"  # unseen: assume the loosest bound
        data_file = fields.get("data file") or fields.get("datafile")
    else:
        _check_metaimage_dimensions(fields, path)
        packed = fields.get("compresseddata", "false").lower() == "true"
        data_file = fields.get("elementdatafile")
    if not data_file or data_file.upper() == "LOCAL":
        return packed, path.stat().st_size - header_end
    names = data_file.split()
    if len(names) > 1 or names[0].upper() == "LIST":  # a list or numbered pattern of files beside the header
        return packed, sum(f.stat().st_size for f in path.parent.iterdir() if f.is_file())
    target = path.parent / names[0]
    if not target.is_file():
        raise UnreadableImageError(f"the data file the header names ({names[0]}) does not exist", path)
    return packed, target.stat().st_size


def _check_metaimage_dimensions(fields: dict[str, str], path: Path) -> None:
    """UnreadableImageError for a MetaImage header whose NDims is not 1 to `METAIO_MAX_DIMS` or disagrees
    with the number of DimSize values; a header without NDims is left to ITK's own message."""
    if "ndims" not in fields:
        return
    ndims, sizes = fields["ndims"], fields.get("dimsize", "")
    if not ndims.isdecimal() or not 1 <= int(ndims) <= METAIO_MAX_DIMS or len(sizes.split()) != int(ndims):
        raise UnreadableImageError(
            f"the header's NDims field is damaged or disagrees with DimSize (NDims = {ndims[:20]}, "
            f"DimSize = {sizes[:60]})",
            path,
        )


def _check_geometry(reader: sitk.ImageFileReader, path: Path) -> None:
    """GeometryError naming the header field of a spacing, origin or direction no viewer can use: not
    finite, a zero spacing (below a picometre), or a singular direction matrix."""
    dims = reader.GetDimension()
    spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)
    origin = np.asarray(reader.GetOrigin(), dtype=np.float64)
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dims, dims)
    is_nrrd = (
        reader.HasMetaDataKey("ITK_InputFilterName")
        and reader.GetMetaData("ITK_InputFilterName") == "NrrdImageIO"
    )
    names = GEOMETRY_FIELDS["nrrd" if is_nrrd else "mha"]
    if not np.isfinite(spacing).all() or (spacing < MIN_SPACING_MM).any():
        problem = ("spacing", f"voxel sizes {spacing.tolist()} mm")
    elif not np.isfinite(origin).all():
        problem = ("origin", f"origin {origin.tolist()} mm")
    elif not np.isfinite(direction).all() or abs(np.linalg.det(direction)) < 1e-6:
        problem = ("direction", f"axis directions {np.round(direction, 6).tolist()}")
    else:
        return
    raise GeometryError(
        f"the header's {names[problem[0]]} field is damaged ({problem[1]}): no viewer can place this scan",
        path,
    )


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
