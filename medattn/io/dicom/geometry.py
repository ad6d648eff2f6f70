"""DICOM slice geometry: read slice planes, sort them by position, refuse irregular grids, build the affine.

DICOM positions are in LPS millimetres. A slice's ImageOrientationPatient holds the row direction X
(the direction in which the column index grows) and the column direction Y; PixelSpacing is
[spacing between rows, spacing between columns]. A voxel (i = column, j = row, k = slice) then lies at
    IPP_0 + i * dc * X + j * dr * Y + k * ds * N,      N = X x Y,
once slices are sorted by their position along N. This is what SimpleITK/GDCM and dcm2niix do; medattn
refuses (instead of silently resampling) the cases where no single affine describes the slices.

The one exception is a gantry tilt: each slice's position also steps sideways in its own plane, by the same
offset per slice (a sheared stack, as CT scanners acquire heads with a tilted gantry). Like dcm2niix and
3D Slicer, the reader then resamples each slice sideways onto the orthogonal grid above (`GantryTilt`),
and the DICOM SEG writer shifts each mask slice back onto its source slice.

highdicom's `spatial.get_series_volume_positions` / `sort_datasets` sort and check series positions too,
but return only None for a series that is no regular volume (medattn's errors say which problem: several
volumes at one position, missing slices, a gantry tilt, which it resamples), and use other tolerances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medattn.errors import GeometryError, UnsupportedDicomError
from medattn.io.dicom.headers import decimals, functional_item
from medattn.io.geometry import LPS_TO_RAS

# Tolerances: direction cosines are written with ~6 decimals; positions to ~0.01 mm.
ORIENTATION_TOLERANCE = 1e-3
TILT_TOLERANCE_DEGREES = 0.5
SPACING_RELATIVE_TOLERANCE = 0.02


@dataclass(frozen=True)
class SlicePlane:
    """Where one 2D frame lies: its top-left voxel centre (LPS mm) and its row/column directions."""

    position: np.ndarray  # (3,) ImagePositionPatient, LPS mm
    orientation: np.ndarray  # (6,) ImageOrientationPatient: row direction X then column direction Y
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])


@dataclass(frozen=True)
class GantryTilt:
    """A sheared stack: slice k's pixels lie k * `per_slice` voxels (along i = column, j = row) off the
    orthogonal grid of the first slice; `degrees` between the slice normal and the stacking direction."""

    degrees: float
    per_slice: tuple[float, float]  # (i, j) voxels per slice


def plane_of(ds: Dataset, path: Path, frame_item: Dataset | None = None) -> SlicePlane | None:
    """The plane of a slice, or of one frame of an enhanced object (`frame_item`); None without a position."""
    if frame_item is None:
        position, orientation, spacing = (
            ds.get(k) for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
        )
    else:
        position_item = functional_item(ds, frame_item, "PlanePositionSequence")
        orientation_item = functional_item(ds, frame_item, "PlaneOrientationSequence")
        measures = functional_item(ds, frame_item, "PixelMeasuresSequence")
        position = getattr(position_item, "ImagePositionPatient", None)
        orientation = getattr(orientation_item, "ImageOrientationPatient", None)
        spacing = getattr(measures, "PixelSpacing", None)
    if position is None or orientation is None:
        return None
    position = decimals(position, "ImagePositionPatient", 3, path)
    orientation = decimals(orientation, "ImageOrientationPatient", 6, path)
    if np.linalg.norm(np.cross(orientation[:3], orientation[3:])) < 1e-3:
        raise GeometryError(
            "the ImageOrientationPatient tag is damaged: its row and column directions "
            f"{orientation.tolist()} are zero or parallel",
            path,
        )
    if spacing in (None, ""):  # 1 mm where a writer left PixelSpacing out, as other readers assume
        return SlicePlane(position, orientation, (1.0, 1.0))
    between_rows, between_columns = _nonzero(decimals(spacing, "PixelSpacing", 2, path), "PixelSpacing", path)
    return SlicePlane(position, orientation, (float(between_rows), float(between_columns)))


def spacing_fallback(ds: Dataset, path: Path, frame_item: Dataset | None = None) -> float | None:
    """SpacingBetweenSlices, else SliceThickness (mm): the slice step of a stack with a single slice."""
    measures = functional_item(ds, frame_item, "PixelMeasuresSequence") if frame_item is not None else ds
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        for holder in (measures, ds):
            value = getattr(holder, key, None) if holder is not None else None
            if value not in (None, ""):
                return abs(float(decimals(value, key, 1, path)[0]))
    return None


def pixel_spacing_2d(ds: Dataset, path: Path) -> tuple[float, float]:
    """Row/column spacing in mm of a projection or ultrasound image; 1.0 where the file does not say."""
    for key in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = ds.get(key)
        if value not in (None, ""):
            between_rows, between_columns = decimals(value, key, 2, path)
            if between_rows > 0:
                return float(between_rows), float(between_columns)
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        # Physical units code 3 = cm; regions store cm per pixel.
        if getattr(region, "PhysicalUnitsXDirection", None) == 3 and getattr(region, "PhysicalDeltaX", None):
            deltas = [
                decimals(getattr(region, k, None), k, 1, path)[0]
                for k in ("PhysicalDeltaY", "PhysicalDeltaX")
            ]
            return _nonzero(np.abs(deltas) * 10.0, "PhysicalDeltaX/PhysicalDeltaY", path)
    return 1.0, 1.0


def _nonzero(spacing: np.ndarray, keyword: str, path: Path) -> tuple[float, float]:
    if (spacing == 0).any():
        raise GeometryError(f"the {keyword} tag is damaged: a spacing of {spacing.tolist()} mm", path)
    return float(spacing[0]), float(spacing[1])


def check_same_orientation(planes: Sequence[SlicePlane], source: str | Path) -> None:
    """All slices must share one orientation and pixel spacing, or no affine can describe them."""
    first = planes[0]
    for plane in planes[1:]:
        if np.abs(plane.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise UnsupportedDicomError(
                "the series mixes slice orientations (e.g. a localizer with axial slices); "
                "export each orientation as its own series",
                source,
            )
        if not np.allclose(plane.pixel_spacing, first.pixel_spacing, rtol=1e-3):
            raise UnsupportedDicomError("the series mixes pixel spacings between slices", source)


def sort_planes(planes: Sequence[SlicePlane]) -> np.ndarray:
    """Indices that order slices along the slice normal (ascending), the order of k in the affine."""
    normal = planes[0].normal
    distances = np.array([float(np.dot(plane.position, normal)) for plane in planes])
    return np.argsort(distances, kind="stable")


def slice_steps(
    sorted_planes: Sequence[SlicePlane], source: str | Path, fallback: float | None = None
) -> tuple[float, GantryTilt | None]:
    """Distance between consecutive slices along the normal, and the stack's gantry tilt (None when the
    slices stack along their normal); refuse duplicated or irregular stacks, tilted ones included.

    Args:
        sorted_planes: slices in the order of `sort_planes`.
        source: file or folder named in errors.
        fallback: spacing for a single slice (SpacingBetweenSlices or SliceThickness), mm.
    """
    if len(sorted_planes) == 1:
        return (float(fallback) if fallback and fallback > 0 else 1.0), None
    normal = sorted_planes[0].normal
    positions = np.stack([plane.position for plane in sorted_planes])
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    if np.any(np.abs(along) < 1e-3):
        raise UnsupportedDicomError(
            "several slices share one position: the series holds more than one volume "
            "(echoes, phases, time points or b-values); split it into one series per volume",
            source,
        )
    spacing = float(np.median(along))
    if np.abs(along - spacing).max() > SPACING_RELATIVE_TOLERANCE * spacing + 0.01:
        raise UnsupportedDicomError(
            f"slice spacing is irregular ({along.min():.3f} to {along.max():.3f} mm): "
            "slices are missing or the series mixes acquisitions",
            source,
        )
    span = positions[-1] - positions[0]
    cosine = abs(float(np.dot(span, normal))) / float(np.linalg.norm(span))
    degrees = float(np.degrees(np.arccos(min(1.0, cosine))))
    if degrees <= TILT_TOLERANCE_DEGREES:
        return spacing, None
    sideways = steps - np.outer(along, normal)  # each step's offset within the slice plane, mm
    mean_sideways = sideways.mean(axis=0)
    if np.abs(sideways - mean_sideways).max() > SPACING_RELATIVE_TOLERANCE * spacing + 0.01:
        raise UnsupportedDicomError(
            f"slices are sheared {degrees:.1f} degrees from the slice normal by uneven offsets: "
            "no gantry tilt a scanner acquires; the series mixes acquisitions",
            source,
        )
    first = sorted_planes[0]
    spacing_between_rows, spacing_between_columns = first.pixel_spacing
    per_slice = (
        float(mean_sideways @ first.orientation[:3]) / spacing_between_columns,
        float(mean_sideways @ first.orientation[3:]) / spacing_between_rows,
    )
    # Positions rounded in the file leave ~1e-7 voxel of offset along the untilted axis: zero, or the far
    # edge of every slice would be read as lying outside it.
    per_slice = tuple(0.0 if abs(v) < 1e-4 else v for v in per_slice)
    return spacing, GantryTilt(degrees, per_slice)


def affine_ras(first_plane: SlicePlane, slice_step: float) -> np.ndarray:
    """The 4x4 voxel (i = column, j = row, k = slice) -> RAS mm affine of a sorted stack."""
    row_dir = first_plane.orientation[:3]
    col_dir = first_plane.orientation[3:]
    spacing_between_rows, spacing_between_columns = first_plane.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing_between_columns
    affine[:3, 1] = col_dir * spacing_between_rows
    affine[:3, 2] = first_plane.normal * slice_step
    affine[:3, 3] = first_plane.position
    return LPS_TO_RAS @ affine


def affine_2d(pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Affine of a 2D image without patient geometry: index (i = column, j = row) scaled by pixel spacing."""
    affine = np.eye(4)
    affine[0, 0] = pixel_spacing[1]
    affine[1, 1] = pixel_spacing[0]
    return affine


def stack_geometry(
    planes: Sequence[SlicePlane], source: str | Path, fallback: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check a stack of planes, then return the slice order along the normal and the RAS affine of it.

    The reader and the DICOM SEG writer both call this, so a mask lands on exactly the grid the image
    was read on. A gantry tilt is refused here (`tilted_stack_geometry` accepts it).
    """
    order, affine, tilt = tilted_stack_geometry(planes, source, fallback)
    if tilt is not None:
        raise UnsupportedDicomError(
            f"slices are sheared {tilt.degrees:.1f} degrees from the slice normal (gantry tilt); "
            "correct the tilt first (e.g. dcm2niix writes a tilt-corrected NIfTI)",
            source,
        )
    return order, affine


def tilted_stack_geometry(
    planes: Sequence[SlicePlane], source: str | Path, fallback: float | None = None
) -> tuple[np.ndarray, np.ndarray, GantryTilt | None]:
    """`stack_geometry` that accepts a gantry tilt: the slice order, the RAS affine of the orthogonal grid
    of the first slice (the grid `shift_slices_` resamples onto) and the tilt (None if untilted)."""
    check_same_orientation(planes, source)
    order = sort_planes(planes)
    sorted_planes = [planes[i] for i in order]
    spacing, tilt = slice_steps(sorted_planes, source, fallback)
    return order, affine_ras(sorted_planes[0], spacing), tilt


def shift_slices_(stack: np.ndarray, tilt: GantryTilt, forward: bool, order: int, fill: float) -> np.ndarray:
    """Each slice k of `stack` (k, rows, columns[, samples]) moved sideways by k * the tilt's offset, in
    place (one slice of extra memory): `forward` from the sheared slices onto the orthogonal grid (the
    reader: order 1, linear, as dcm2niix), else back (the DICOM SEG writer: order 0, nearest, for labels).
    Pixels moved in from outside the slice get `fill`. Axis by axis with array slicing, several times faster
    than scipy.ndimage.shift (BENCHMARKS.md, end-to-end prediction)."""
    sign = 1.0 if forward else -1.0
    per_column, per_row = tilt.per_slice
    for k in range(1, stack.shape[0]):  # slice 0 defines the grid
        moved = stack[k]
        for axis, per_slice in ((0, per_row), (1, per_column)):
            if per_slice:
                moved = _shifted_along(moved, axis, sign * k * per_slice, order, fill)
        stack[k] = moved
    return stack


def _shifted_along(image: np.ndarray, axis: int, shift: float, order: int, fill: float) -> np.ndarray:
    """`image` moved by `shift` pixels along `axis` (out[x] = in[x - shift]): linear (order 1) or nearest
    (order 0) interpolation; pixels from outside get `fill`."""
    if order == 0:
        return _shifted_whole(image, axis, int(np.round(shift)), fill)
    whole = int(np.floor(shift))
    fraction = shift - whole
    lower = _shifted_whole(image, axis, whole, fill)  # in[x - whole]
    if fraction < 1e-6:
        return lower
    upper = _shifted_whole(image, axis, whole + 1, fill)  # in[x - whole - 1]
    return (1.0 - fraction) * lower + fraction * upper


def _shifted_whole(image: np.ndarray, axis: int, shift: int, fill: float) -> np.ndarray:
    out = np.full_like(image, fill)
    size = image.shape[axis]
    if abs(shift) >= size:
        return out
    target = [slice(None)] * image.ndim
    source = [slice(None)] * image.ndim
    target[axis] = slice(max(shift, 0), size + min(shift, 0))
    source[axis] = slice(max(-shift, 0), size - max(shift, 0))
    out[tuple(target)] = image[tuple(source)]
    return out
