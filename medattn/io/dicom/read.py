"""Read DICOM into MetaTensors: classic series, enhanced multi-frame, 2D images and ultrasound cine.

A folder is searched for its series (medattn.io.dicom.series); a classic series' slices are sorted by
position, never by file name (medattn.io.dicom.geometry), and decoded one by one into a preallocated
volume (medattn.io.dicom.pixels).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import MetaTensor
from pydicom.dataset import Dataset

from medattn.errors import (
    InputNotFoundError,
    InputWarning,
    NoCasesFoundError,
    UnreadableImageError,
    UnsupportedDicomError,
)
from medattn.io.dicom.geometry import (
    SlicePlane,
    affine_2d,
    affine_ras,
    pixel_spacing_2d,
    plane_of,
    shift_slices_,
    spacing_fallback,
    stack_geometry,
    tilted_stack_geometry,
)
from medattn.io.dicom.headers import dcmread, decimals, int_tag
from medattn.io.dicom.pixels import channel_first, decoded_pixels, monochrome1_inverted, rescaled
from medattn.io.dicom.series import NON_IMAGE_MODALITIES, UNREADABLE, find_dicom_series, without_localizers
from medattn.io.dicom.slices import series_slices
from medattn.io.limits import check_claimed_size

# Modalities whose multi-frame objects without plane positions are volumes; all others are cine (2D+t).
VOLUME_MODALITIES = {"CT", "MR", "PT", "NM", "RTDOSE"}


def read_dicom(source: str | Path | Sequence[str | Path], series_uid: str | None = None) -> MetaTensor:
    """Read a DICOM file, a series folder, or an explicit list of one series' files.

    Args:
        source: a file (enhanced multi-frame, a single slice, a 2D image or a cine clip), a folder, or the
            files of one series.
        series_uid: which series to read when a folder holds several.

    Returns:
        MetaTensor (C, i, j, k) for volumes, (C, W, H) for 2D images, (C, W, H, T) for cine; affine RAS mm.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InputNotFoundError("no such file or folder", path)
        if path.is_file():
            return _read_dicom_object(path)
        found = find_dicom_series(path)
        damaged = [s for s in found if s.uid.startswith(UNREADABLE)]
        if damaged:
            dcmread(damaged[0].files[0])  # raises, naming the file and what pydicom found damaged
            raise UnreadableImageError(
                "the DICOM image is damaged or cut short: its header lacks the image's size (Rows)",
                damaged[0].files[0],
            )
        if not found:
            raise NoCasesFoundError("no DICOM image files found in this folder", path)
        if series_uid is None:
            found = without_localizers(found, path)
        if series_uid is not None:
            found = [s for s in found if s.uid == series_uid]
            if not any(s.volume for s in found):  # several volumes of the series: the error below lists them
                found = found[:1]
            if not found:
                raise NoCasesFoundError(f"no series with SeriesInstanceUID {series_uid}", path)
        if len(found) > 1:
            listing = "; ".join(
                f"#{s.series_number}{' ' + s.volume if s.volume else ''} {s.modality} {s.description!r} "
                f"({len(s.files)} files, uid {s.uid})"
                for s in found
            )
            how = (
                "use medattn.io.discover(folder), which makes one case per volume, or pass one volume's files"
                if any(s.volume for s in found)
                else "pass series_uid= or use medattn.io.discover(folder), which makes one case per series"
            )
            raise UnsupportedDicomError(f"the folder holds {len(found)} series ({listing}); {how}", path)
        files = found[0].files
        label = path
    else:
        files = tuple(Path(p) for p in source)
        if not files:
            raise NoCasesFoundError("an empty list of DICOM files was given")
        label = files[0].parent
    if len(files) == 1:
        return _read_dicom_object(files[0])
    return _read_classic_series(files, label)


def _meta(ds: Dataset, path: Path, affine: np.ndarray, spatial_dims: int, **extra) -> dict:
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :spatial_dims], axis=0))
    return {
        "filename_or_obj": str(path),
        "modality": str(ds.get("Modality", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "spacing": spacing,
        "space": "RAS",
        "original_channel_dim": 0,
        **extra,
    }


def _read_classic_series(files: Sequence[Path], source: Path) -> MetaTensor:
    """One file per slice: sort by position along the normal, check the grid, then decode slice by slice.

    Headers are read first (no pixels) to fix the order and the grid; each slice is then decoded,
    rescaled in float32 straight into one preallocated buffer and released, so peak memory stays near
    the size of the result. The result is a transposed view of that buffer (no copy).
    """
    headers = [dcmread(f, pixels=False) for f in files]
    files, headers = series_slices(files, headers, source)
    if len(files) == 1:  # copies of one image: read as the single file it is
        return _read_dicom_object(files[0])
    planes = []
    for ds, path in zip(headers, files, strict=True):
        plane = plane_of(ds, path)
        if plane is None:
            raise UnsupportedDicomError("a slice lacks ImagePositionPatient/ImageOrientationPatient", path)
        planes.append(plane)
    shapes = {(int(ds.Rows), int(ds.Columns), int_tag(ds, "SamplesPerPixel", 1)) for ds in headers}
    if len(shapes) > 1:
        raise UnsupportedDicomError(f"slices differ in size {sorted(shapes)}", source)
    order, affine, tilt = tilted_stack_geometry(planes, source, spacing_fallback(headers[0], files[0]))
    rows, columns, samples = shapes.pop()
    # The float32 volume may be several times the stored pixels: bounded like a compressed claim.
    volume_bytes = len(files) * rows * columns * samples * 4
    check_claimed_size(volume_bytes, source, compressed=True, file_bytes=sum(f.stat().st_size for f in files))
    buffer = np.empty((len(files), rows, columns, samples), dtype=np.float32)
    for k, index in enumerate(order):
        ds = dcmread(files[index])
        stored = monochrome1_inverted(decoded_pixels(ds, files[index]), ds)
        buffer[k] = rescaled(stored, ds, files[index]).reshape(rows, columns, samples)
        del ds, stored
    first = headers[order[0]]
    extra = {}
    if tilt is not None:
        shift_slices_(buffer, tilt, forward=True, order=1, fill=float(buffer.min()))
        extra["gantry_tilt_degrees"] = round(tilt.degrees, 3)
        warnings.warn(
            f"{source}: gantry tilt of {tilt.degrees:.1f} degrees: the slices were resampled sideways onto "
            "an orthogonal grid (as dcm2niix and 3D Slicer do); masks lie on that grid, DICOM SEG frames "
            "are shifted back onto the original slices",
            InputWarning,
            stacklevel=4,
        )
    # The first slice's file tells the DICOM SEG writer which volume of a series with several this is.
    extra["first_slice_file"] = str(files[order[0]])
    array = np.transpose(buffer, (3, 2, 1, 0))  # (C, i = column, j = row, k = slice), a view
    return MetaTensor(array, affine=affine, meta=_meta(first, source, affine, 3, **extra))


def _read_dicom_object(path: Path) -> MetaTensor:
    """One file: an enhanced multi-frame volume, a single slice, a 2D image, or a cine clip."""
    ds = dcmread(path)
    if str(ds.get("Modality", "")) in NON_IMAGE_MODALITIES:
        raise UnsupportedDicomError(f"a {ds.get('Modality')} object holds no scan to read", path)
    frames = int_tag(ds, "NumberOfFrames", 1)
    samples = int_tag(ds, "SamplesPerPixel", 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == frames and plane_of(ds, path, per_frame[0]) is not None:
        return _read_enhanced(ds, path, list(per_frame))
    pixels = decoded_pixels(ds, path)
    if frames == 1:
        pixels = pixels[None]
    values = rescaled(monochrome1_inverted(pixels, ds), ds, path)
    if "DoseGridScaling" in ds:  # RT dose: stored integers times the scaling are Gy
        values *= float(decimals(ds.DoseGridScaling, "DoseGridScaling", 1, path, UnreadableImageError)[0])
    plane = plane_of(ds, path)
    if plane is not None and frames == 1:
        affine = affine_ras(plane, spacing_fallback(ds, path) or 1.0)
        return MetaTensor(channel_first(values, samples), affine=affine, meta=_meta(ds, path, affine, 3))
    offsets = ds.get("GridFrameOffsetVector")
    if plane is not None and offsets is not None and len(offsets) == frames:
        # RT dose (and other multi-frame grids): frame k lies offsets[k] - offsets[0] mm along the normal
        # from the first frame's ImagePositionPatient (relative and absolute offset vectors alike).
        steps = decimals(offsets, "GridFrameOffsetVector", frames, path)
        steps -= steps[0]
        planes = [
            SlicePlane(plane.position + step * plane.normal, plane.orientation, plane.pixel_spacing)
            for step in steps
        ]
        order, affine = stack_geometry(planes, path)
        array = channel_first(values[order], samples)
        return MetaTensor(array, affine=affine, meta=_meta(ds, path, affine, 3))
    spacing = pixel_spacing_2d(ds, path)
    if frames > 1 and str(ds.get("Modality", "")) in VOLUME_MODALITIES:
        affine = affine_2d(spacing)
        affine[2, 2] = spacing_fallback(ds, path) or 1.0
        meta = _meta(ds, path, affine, 3, geometry="unknown: no plane position in the file")
        warnings.warn(
            f"{path}: multi-frame {ds.get('Modality')} without plane positions: read on an identity grid "
            "(orientation and origin unknown), so masks will not overlay the scan in other software",
            InputWarning,
            stacklevel=4,
        )
        return MetaTensor(channel_first(values, samples), affine=affine, meta=meta)
    affine = affine_2d(spacing)
    array = channel_first(values, samples)
    if frames == 1:
        return MetaTensor(array[..., 0], affine=affine, meta=_meta(ds, path, affine, 2))
    meta = _meta(ds, path, affine, 2, fps=_frames_per_second(ds, path), time_axis=3, n_frames=frames)
    return MetaTensor(array, affine=affine, meta=meta)


def _read_enhanced(ds: Dataset, path: Path, frame_items: list[Dataset]) -> MetaTensor:
    planes = [plane_of(ds, path, item) for item in frame_items]
    if any(plane is None for plane in planes):
        raise UnsupportedDicomError("some frames lack a plane position", path)
    order, affine = stack_geometry(planes, path, spacing_fallback(ds, path, frame_items[0]))
    pixels = decoded_pixels(ds, path)
    if len(frame_items) == 1:
        pixels = pixels[None]
    values = rescaled(monochrome1_inverted(pixels, ds), ds, path, frame_items)[order]
    array = channel_first(values, int(ds.get("SamplesPerPixel", 1)))
    return MetaTensor(array, affine=affine, meta=_meta(ds, path, affine, 3))


def _frames_per_second(ds: Dataset, path: Path) -> float | None:
    """The clip's frame rate from FrameTime (ms per frame), CineRate or RecommendedDisplayFrameRate."""
    for key, to_rate in (
        ("FrameTime", lambda ms: 1000.0 / ms),
        ("CineRate", float),
        ("RecommendedDisplayFrameRate", float),
    ):
        if ds.get(key):
            value = float(decimals(ds.get(key), key, 1, path, UnreadableImageError)[0])
            if value > 0:
                return to_rate(value)
    return None
