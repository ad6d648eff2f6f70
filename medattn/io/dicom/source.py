"""The DICOM series a SEG is written for: its headers, its voxel grid, and which slice each source frame is.

The grid is built the way the readers build it (medattn.io.dicom.geometry): slices sorted by their
position along the slice normal, never by file name, so a mask predicted on a loaded series maps back
onto the right source frames.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data import MetaTensor
from pydicom.dataset import Dataset

from medattn.errors import InputWarning, UnreadableImageError, UnsupportedDicomError, WriteError

# The reader's own plane and spacing functions: reader and writer must agree on the grid to the voxel.
from medattn.io.dicom.geometry import (
    GantryTilt,
    SlicePlane,
    plane_of,
    spacing_fallback,
    stack_geometry,
    tilted_stack_geometry,
)
from medattn.io.dicom.headers import dcmread
from medattn.io.dicom.series import DicomSeries, find_dicom_series, scan_dicom_files
from medattn.io.dicom.slices import series_slices

NEEDS_SOURCE = (
    "DICOM SEG needs the source DICOM series: pass reference= the series folder (or its files, or the "
    "image loaded from them with medattn.io.load_image)"
)


@dataclass(frozen=True)
class DicomSource:
    """Source images of a SEG and their grid.

    Attributes:
        datasets: headers without pixel data, in the order highdicom takes them: classic slices sorted
            along the normal, or the one enhanced multi-frame object.
        shape: grid shape (i = column, j = row, k = slice).
        affine: voxel -> RAS mm affine of the grid, as `load_image` gives for this series.
        frame_slice: for each source frame, in highdicom's frame order, its slice index k.
        location: the folder or file the series was found in, named in errors.
        tilt: the gantry tilt of a sheared classic series (the mask's slices are shifted back onto the
            source slices), else None.
    """

    datasets: list[Dataset]
    shape: tuple[int, int, int]
    affine: np.ndarray
    frame_slice: np.ndarray
    location: Path
    tilt: GantryTilt | None = None  # a gantry-tilted stack: `affine` is the reader's orthogonal grid


def dicom_source(
    reference: object, mask_shape: tuple[int, ...] | None = None, path: str | Path | None = None
) -> DicomSource:
    """Find and describe the source series named by `reference`.

    Args:
        reference: a series folder, a DICOM file (enhanced multi-frame or one slice), a list of one
            series' files, or a MetaTensor loaded from one of those (its `filename_or_obj` and `series_uid`
            meta say where and which series).
        mask_shape: spatial shape of the mask, used to pick the series when a folder holds several.
        path: the SEG being written, named in errors.

    Raises:
        WriteError: no reference, or a reference that is not DICOM, or an ambiguous folder.
    """
    series_uid = first_slice = None
    if isinstance(reference, MetaTensor):
        series_uid = reference.meta.get("series_uid") or None
        first_slice = reference.meta.get("first_slice_file") or None
        reference = reference.meta.get("filename_or_obj")
        if not reference:
            raise WriteError(NEEDS_SOURCE + "; this image carries no source path", path)
    if reference is None:
        raise WriteError(NEEDS_SOURCE, path)
    if isinstance(reference, (str, Path)):
        location = Path(reference)
        if not location.exists():
            raise WriteError(f"{NEEDS_SOURCE}; the reference {location} does not exist", path)
        found = find_dicom_series(location) if location.is_dir() else scan_dicom_files([location])
    elif isinstance(reference, Sequence) and reference and all(isinstance(p, (str, Path)) for p in reference):
        files = [Path(p) for p in reference]
        location = files[0].parent
        found = scan_dicom_files(files)
    else:
        raise WriteError(f"{NEEDS_SOURCE}; got {type(reference).__name__}", path)
    if first_slice is not None and len(found) > 1:  # one volume of a series with several (echoes, ...)
        found = [s for s in found if Path(first_slice) in s.files] or found
    series = _pick_series(found, series_uid, mask_shape, location, path)
    datasets = [_read_header(f) for f in series.files]
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        return _enhanced_source(datasets[0], series.files[0])
    return _classic_source(datasets, series.files, location)


def _pick_series(
    found: list[DicomSeries],
    series_uid: str | None,
    mask_shape: tuple[int, ...] | None,
    location: Path,
    path: str | Path | None,
) -> DicomSeries:
    if series_uid is not None:
        found = [s for s in found if s.uid == series_uid]
    if not found:
        which = f"series {series_uid}" if series_uid else "DICOM image series"
        raise WriteError(f"{NEEDS_SOURCE}; no {which} found in {location}", path)
    if len(found) > 1 and mask_shape is not None:
        fitting = [s for s in found if sorted(_series_shape(s)) == sorted(mask_shape)]
        found = fitting or found
    if len(found) > 1:
        listing = "; ".join(f"#{s.series_number} {s.modality} {s.description!r}" for s in found)
        raise WriteError(
            f"{location} holds {len(found)} series that fit the mask ({listing}); pass the series' own "
            "folder or the image loaded with medattn.io.load_image as reference",
            path,
        )
    return found[0]


def _series_shape(series: DicomSeries) -> tuple[int, int, int]:
    header = _read_header(series.files[0])
    frames = int(header.get("NumberOfFrames", 1) or 1)
    slices = frames if len(series.files) == 1 else len(series.files)
    return int(header.Columns), int(header.Rows), slices


def _read_header(file: Path) -> Dataset:
    try:
        return dcmread(file, pixels=False)
    except UnreadableImageError as error:
        raise WriteError(f"cannot read the source DICOM file {file} ({error.message})", file) from error


def _planes(ds: Dataset, where: Path, frame_items: list[Dataset | None]) -> list[SlicePlane]:
    """The plane of each frame, read by the same code as the DICOM reader so both see one grid."""
    planes = [plane_of(ds, where, item) for item in frame_items]
    if any(plane is None for plane in planes):
        raise UnsupportedDicomError(
            "a source frame lacks ImagePositionPatient/ImageOrientationPatient, so a DICOM SEG cannot be "
            "placed on it; write .nii.gz or .seg.nrrd instead",
            where,
        )
    return planes


def _classic_source(datasets: list[Dataset], files: Sequence[Path], location: Path) -> DicomSource:
    with warnings.catch_warnings():  # the reader warned about the same files when the image was read
        warnings.simplefilter("ignore", InputWarning)
        files, datasets = series_slices(files, datasets, location)
    planes = [_planes(ds, file, [None])[0] for ds, file in zip(datasets, files, strict=True)]
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise UnsupportedDicomError(f"source slices differ in size {sorted(sizes)}", location)
    order, affine, tilt = tilted_stack_geometry(planes, location, spacing_fallback(datasets[0], files[0]))
    rows, columns = sizes.pop()
    return DicomSource(
        datasets=[datasets[i] for i in order],
        shape=(columns, rows, len(datasets)),
        affine=affine,
        frame_slice=np.arange(len(datasets)),
        location=location,
        tilt=tilt,
    )


def _enhanced_source(ds: Dataset, file: Path) -> DicomSource:
    frame_items = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    frames = int(ds.NumberOfFrames)
    if len(frame_items) != frames:
        raise UnsupportedDicomError(
            "the multi-frame source has no per-frame plane positions, so a DICOM SEG cannot be placed on it",
            file,
        )
    order, affine = stack_geometry(
        _planes(ds, file, frame_items), file, spacing_fallback(ds, file, frame_items[0])
    )
    frame_slice = np.empty(frames, dtype=np.int64)
    frame_slice[order] = np.arange(frames)  # frame order[k] is slice k
    return DicomSource(
        datasets=[ds],
        shape=(int(ds.Columns), int(ds.Rows), frames),
        affine=affine,
        frame_slice=frame_slice,
        location=file,
    )
