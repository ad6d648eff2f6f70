"""Read DICOM into MetaTensors: classic series, enhanced multi-frame, 2D images and ultrasound cine.

Slices are sorted by position, never by file name (see dicom_geometry). Pixel data is decoded by
pydicom's plugins (pylibjpeg for JPEG, JPEG-LS, JPEG 2000 and RLE), then turned into values a model
can use: modality LUT (rescale slope/intercept, per slice or per frame), MONOCHROME1 inverted so bright
means dense as in MONOCHROME2, palette colour expanded to RGB, YBR converted to RGB.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from monai.data import MetaTensor
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_rescale

from medattn.errors import (
    InputNotFoundError,
    InputWarning,
    NoCasesFoundError,
    UnreadableImageError,
    UnsupportedDicomError,
)
from medattn.io.dicom_geometry import (
    ORIENTATION_TOLERANCE,
    SlicePlane,
    affine_2d,
    affine_ras,
    shift_slices_,
    stack_geometry,
    tilted_stack_geometry,
)

# Objects that carry no image of their own (our own SEG outputs among them): never read as scans.
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "ECG", "DOC"}
UNREADABLE = "unreadable:"
# Modalities whose multi-frame objects without plane positions are volumes; all others are cine (2D+t).
VOLUME_MODALITIES = {"CT", "MR", "PT", "NM", "RTDOSE"}
_HEADER_TAGS = [
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SOPClassUID",
    "PatientName",
    "PatientID",
    "ImagePositionPatient",
    "ImageType",
    "SOPInstanceUID",
    # What tells apart the volumes of a series that holds several (echoes, phases, b-values, ...).
    "EchoNumbers",
    "TemporalPositionIdentifier",
    "DiffusionBValue",
    "TriggerTime",
    "AcquisitionNumber",
]
# Tags that split a series holding several volumes at the same slice positions, in the order tried, with
# the case-id suffix each volume gets (dcm2niix's _e1/_e2 for echoes; magnitude/phase by ImageType).
VOLUME_TAGS = {
    "EchoNumbers": "e",
    "TemporalPositionIdentifier": "t",
    "DiffusionBValue": "b",
    "TriggerTime": "trigger",
    "AcquisitionNumber": "acq",
    "ImageType": "type",
}


@dataclass(frozen=True)
class DicomSeries:
    """One series found on disk: its files (any order) and what identifies it without naming the patient."""

    uid: str
    files: tuple[Path, ...]
    modality: str
    series_number: int | None
    description: str
    patient_tokens: tuple[str, ...]  # patient name/ID parts, only to keep them out of case ids
    localizer: bool = False  # every image is a localizer (scout, surview): planning images, not a scan
    volume: str = ""  # one of several volumes in the series (echo, phase, b-value, ...): e.g. "e2", "t3"

    @property
    def folder(self) -> Path:
        parents = {f.parent for f in self.files}
        return parents.pop() if len(parents) == 1 else Path(*_common_parts([f.parent for f in self.files]))


def _common_parts(folders: Sequence[Path]) -> tuple[str, ...]:
    parts = folders[0].parts
    for folder in folders[1:]:
        n = 0
        while n < min(len(parts), len(folder.parts)) and parts[n] == folder.parts[n]:
            n += 1
        parts = parts[:n]
    return parts or ("/",)


def looks_like_dicom(path: Path) -> bool:
    """A .dcm/.ima suffix, or the 'DICM' preamble marker; cheap enough to call on every file of a tree."""
    if path.suffix.lower() in {".dcm", ".dicom", ".ima"}:
        return True
    # Exported series often have no suffix, or UID-like names whose last dotted part is a number.
    if path.suffix and not path.suffix[1:].isdigit():
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, EOFError, ValueError, AttributeError, KeyError):
        return None


def _int_tag(ds: Dataset, keyword: str, default: int) -> int:
    """An integer attribute read leniently: vendors write junk ('1A', '') where a number belongs."""
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default


def is_localizer(header: Dataset) -> bool:
    """A localizer (scout, topogram, surview): ImageType says LOCALIZER, as CT and MR scanners of every
    vendor write it for the planning images they put beside (or inside) the series of a study."""
    image_type = header.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return any(str(value).strip().upper() == "LOCALIZER" for value in values)


def without_localizers(series: Sequence[DicomSeries], folder: Path) -> list[DicomSeries]:
    """`series` minus its localizer series, with an InputWarning naming them; all of it when it is nothing
    but localizers (then they are what the user pointed at)."""
    kept = [s for s in series if not s.localizer]
    dropped = [s for s in series if s.localizer]
    if not kept or not dropped:
        return list(series)
    listing = ", ".join(
        f"#{s.series_number} {s.description!r}" if s.description else f"#{s.series_number}"
        for s in dropped[:3]
    )
    warnings.warn(
        f"{folder}: {len(dropped)} localizer series left out ({listing}{', ...' if len(dropped) > 3 else ''})"
        ": planning images, not scans to segment",
        InputWarning,
        stacklevel=3,
    )
    return kept


def _stackable(header: Dataset) -> bool:
    """A single-frame slice with a patient position stacks with its series; anything else stands alone."""
    return "ImagePositionPatient" in header and _int_tag(header, "NumberOfFrames", 1) == 1


def scan_dicom_files(files: Iterable[Path]) -> list[DicomSeries]:
    """Group DICOM files into image series by SeriesInstanceUID; non-image objects and junk are skipped.

    Slices with a patient position group into one volume per series. Files without one (projection
    radiographs, ultrasound stills, secondary captures) and multi-frame objects (enhanced CT/MR, cine)
    are each a series of their own, even when they share a SeriesInstanceUID.
    """
    grouped: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in files:
        header = _read_header(path)
        if header is None or (len(header) == 0 and path.name.upper() != "DICOMDIR"):
            # Named or marked as DICOM but unreadable: keep it as a case of its own so reading it reports
            # the file, instead of a series silently missing a slice.
            grouped[f"{UNREADABLE}{path}"].append((path, Dataset()))
            continue
        if "Rows" not in header or str(header.get("Modality", "")) in NON_IMAGE_MODALITIES:
            continue
        uid = str(header.get("SeriesInstanceUID", "")) or f"no-series-uid:{path.parent}"
        key = uid if _stackable(header) else f"{uid}#{path}"
        grouped[key].append((path, header))
    series = []
    for key, all_members in grouped.items():
        for volume, members in split_volumes(all_members):
            header = members[0][1]
            number = _int_tag(header, "SeriesNumber", -1)
            patient = " ".join(str(header.get(k, "")) for k in ("PatientName", "PatientID"))
            tokens = tuple(t.lower() for t in patient.replace("^", " ").split() if len(t) >= 3)
            series.append(
                DicomSeries(
                    uid=key.split("#", 1)[0],
                    files=tuple(sorted(p for p, _ in members)),
                    modality=str(header.get("Modality", "")),
                    series_number=number if number >= 0 else None,
                    description=str(header.get("SeriesDescription", "")),
                    patient_tokens=tokens,
                    localizer=all(is_localizer(h) for _, h in members),
                    volume=volume,
                )
            )
    return sorted(
        series, key=lambda s: (str(s.folder), s.series_number or 0, _natural_key(s.volume), s.files[0])
    )


def split_volumes(members: list[tuple[Path, Dataset]]) -> list[tuple[str, list[tuple[Path, Dataset]]]]:
    """A series' (path, header) pairs as one or more volumes: [("", all)] when no two images share a
    position; else split by the first of `VOLUME_TAGS` whose values part the images into volumes without
    repeated positions (MR echoes, dynamic phases, b-values, magnitude and phase), each labelled by the
    tag's suffix and its value ("e2", "t3", "b1000"), as dcm2niix writes one file per echo. When no tag
    parts them, [("", all)], and reading names the problem."""

    def position(header: Dataset) -> tuple | None:
        try:
            return tuple(round(float(v), 2) for v in header.get("ImagePositionPatient") or ())
        except (TypeError, ValueError):
            return None

    positions = [position(h) for _, h in members]
    if len(members) < 2 or None in positions or len(set(positions)) == len(positions):
        return [("", members)]
    copies = {str(h.get("SOPInstanceUID", "")) for _, h in members}
    if len(copies) < len(members):  # copies of one instance: the reader leaves them out
        return [("", members)]
    for tag, suffix in VOLUME_TAGS.items():
        groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
        for member in members:
            groups[_volume_value(member[1], tag)].append(member)
        if len(groups) < 2:
            continue
        sizes = {len(group) for group in groups.values()}
        # Whole volumes only: a tag that differs on every image (TriggerTime, AcquisitionNumber of a
        # step-and-shoot CT) would part a series into one-slice "volumes".
        whole = len(sizes) == 1 and min(sizes) > 1
        if whole and all(len({position(h) for _, h in group}) == len(group) for group in groups.values()):
            ordered = sorted(groups.items(), key=lambda item: _natural_key(item[0]))
            if tag == "ImageType":  # long values: number the kinds instead
                return [(f"{suffix}{n + 1}", group) for n, (_, group) in enumerate(ordered)]
            return [(f"{suffix}{_safe_value(value)}", group) for value, group in ordered]
    return [("", members)]


def _volume_value(header: Dataset, tag: str) -> str:
    value = header.get(tag)
    if value is None:
        return ""
    if tag == "ImageType":
        return "\\".join(str(v) for v in (value if not isinstance(value, str) else [value]))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _natural_key(value: str) -> tuple:
    """Numbers in order (2 before 10), also after a letter prefix ("e2" before "e10")."""
    prefix = value.rstrip("0123456789.-")
    try:
        return (prefix, 0, float(value[len(prefix) :]), value)
    except ValueError:
        return (prefix, 1, 0.0, value)


def _safe_value(value: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in value) or "none"


def find_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """All image series under `folder` (recursively)."""
    folder = Path(folder)
    candidates = (p for p in sorted(folder.rglob("*")) if p.is_file() and looks_like_dicom(p))
    return scan_dicom_files(candidates)


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
            _dcmread(damaged[0].files[0])  # raises, naming the file
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


def _dcmread(path: Path, pixels: bool = True) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError as error:
        raise UnreadableImageError("not a DICOM file (no DICM marker and no valid header)", path) from error
    except (OSError, EOFError, ValueError) as error:
        raise UnreadableImageError(f"the DICOM file is truncated or damaged ({error})", path) from error


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Decoded pixel data, colour as RGB; the error names the transfer syntax when no decoder can."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnsupportedDicomError("the DICOM object has no pixel data", path)
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as error:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "exceptions were raised by all available plugins" in reason:
            reason = "every installed decoder failed: the pixel data is damaged or an unsupported variant"
            advice = "re-export the series uncompressed (e.g. gdcmconv --raw)"
        else:
            advice = (
                "install the decoders (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
                "pylibjpeg-rle) or re-export the series uncompressed (e.g. gdcmconv --raw)"
            )
        raise UnsupportedDicomError(
            f"cannot decode transfer syntax {name} ({reason}); {advice}", path
        ) from error
    except (ValueError, AttributeError, KeyError, EOFError) as error:
        raise UnreadableImageError(f"the pixel data is truncated or inconsistent ({error})", path) from error
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    return pixels


def _rescaled(pixels: np.ndarray, ds: Dataset, frame_items: Sequence[Dataset] | None = None) -> np.ndarray:
    """Apply the modality LUT; enhanced objects carry slope/intercept per frame in functional groups."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return pixels.astype(np.float32)
    if frame_items is None:
        return np.asarray(apply_rescale(pixels, ds), dtype=np.float32)
    out = np.empty(pixels.shape, dtype=np.float32)
    for index, item in enumerate(frame_items):
        transform = _functional_item(ds, item, "PixelValueTransformationSequence")
        slope = float(getattr(transform, "RescaleSlope", 1.0) or 1.0) if transform is not None else 1.0
        intercept = (
            float(getattr(transform, "RescaleIntercept", 0.0) or 0.0) if transform is not None else 0.0
        )
        out[index] = pixels[index].astype(np.float32) * slope + intercept
    return out


def _monochrome1_inverted(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """MONOCHROME1 shows low values bright; invert the stored values against their bit depth (before the
    modality LUT) so every image means the same: bright = dense, independent of the image's content."""
    if ds.get("PhotometricInterpretation") != "MONOCHROME1":
        return stored
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -stored.astype(np.int64) - 1  # two's complement bit flip of signed values
    return (1 << _int_tag(ds, "BitsStored", 16)) - 1 - stored.astype(np.int64)


def _functional_item(ds: Dataset, frame_item: Dataset | None, sequence: str) -> Dataset | None:
    """The item of a functional group for one frame: per-frame first, shared otherwise."""
    for holder in (frame_item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if holder is not None and sequence in holder and len(holder[sequence].value):
            return holder[sequence].value[0]
    return None


def _channel_first(stack: np.ndarray, samples_per_pixel: int) -> np.ndarray:
    """(frames, rows, cols[, samples]) -> (C, cols, rows, frames): axis i runs along columns as in ITK."""
    if samples_per_pixel == 1 and stack.ndim == 3:
        stack = stack[..., None]
    return np.ascontiguousarray(np.transpose(stack, (3, 2, 1, 0)))


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


def plane_of(ds: Dataset, path: Path, frame_item: Dataset | None = None) -> SlicePlane | None:
    if frame_item is None:
        position, orientation, spacing = (
            ds.get(k) for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
        )
    else:
        position_item = _functional_item(ds, frame_item, "PlanePositionSequence")
        orientation_item = _functional_item(ds, frame_item, "PlaneOrientationSequence")
        measures = _functional_item(ds, frame_item, "PixelMeasuresSequence")
        position = getattr(position_item, "ImagePositionPatient", None)
        orientation = getattr(orientation_item, "ImageOrientationPatient", None)
        spacing = getattr(measures, "PixelSpacing", None)
    if position is None or orientation is None:
        return None
    if len(position) != 3 or len(orientation) != 6:
        raise UnsupportedDicomError("ImagePositionPatient/ImageOrientationPatient are malformed", path)
    spacing = spacing if spacing is not None and len(spacing) == 2 else (1.0, 1.0)
    return SlicePlane(
        np.asarray(position, float), np.asarray(orientation, float), (float(spacing[0]), float(spacing[1]))
    )


def spacing_fallback(ds: Dataset, frame_item: Dataset | None = None) -> float | None:
    measures = _functional_item(ds, frame_item, "PixelMeasuresSequence") if frame_item is not None else ds
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        for holder in (measures, ds):
            value = getattr(holder, key, None) if holder is not None else None
            if value not in (None, ""):
                return abs(float(value))
    return None


def _read_classic_series(files: Sequence[Path], source: Path) -> MetaTensor:
    """One file per slice: sort by position along the normal, check the grid, then decode slice by slice.

    Headers are read first (no pixels) to fix the order and the grid; each slice is then decoded,
    rescaled in float32 straight into one preallocated buffer and released, so peak memory stays near
    the size of the result. The result is a transposed view of that buffer (no copy).
    """
    headers = [_dcmread(f, pixels=False) for f in files]
    files, headers = series_slices(files, headers, source)
    if len(files) == 1:  # copies of one image: read as the single file it is
        return _read_dicom_object(files[0])
    planes = []
    for ds, path in zip(headers, files, strict=True):
        plane = plane_of(ds, path)
        if plane is None:
            raise UnsupportedDicomError("a slice lacks ImagePositionPatient/ImageOrientationPatient", path)
        planes.append(plane)
    shapes = {(int(ds.Rows), int(ds.Columns), _int_tag(ds, "SamplesPerPixel", 1)) for ds in headers}
    if len(shapes) > 1:
        raise UnsupportedDicomError(f"slices differ in size {sorted(shapes)}", source)
    order, affine, tilt = tilted_stack_geometry(planes, source, spacing_fallback(headers[0]))
    rows, columns, samples = shapes.pop()
    buffer = np.empty((len(files), rows, columns, samples), dtype=np.float32)
    for k, index in enumerate(order):
        ds = _dcmread(files[index])
        stored = _monochrome1_inverted(_pixels(ds, files[index]), ds)
        buffer[k] = _rescaled(stored, ds).reshape(rows, columns, samples)
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


def series_slices(
    files: Sequence[Path], headers: list[Dataset], source: Path
) -> tuple[list[Path], list[Dataset]]:
    """The files (and headers) of a classic series that make its volume: copies of one instance and stray
    localizer images left out, with an InputWarning each. The reader and the DICOM SEG writer both call
    this, so a SEG's frames are the slices the image was read from."""
    files, headers = _without_duplicates(list(files), headers, source)
    return _without_strays(files, headers, source)


def _without_duplicates(
    files: list[Path], headers: list[Dataset], source: Path
) -> tuple[list[Path], list[Dataset]]:
    """The files of a series minus copies of an instance already seen (the same SOPInstanceUID: a file
    copied twice into the folder, or one image saved in several transfer syntaxes); warns naming them."""
    seen: dict[str, Path] = {}
    kept_files, kept_headers, copies = [], [], []
    for path, header in zip(files, headers, strict=True):
        uid = str(header.get("SOPInstanceUID", "")) or None
        if uid is not None and uid in seen:
            copies.append(f"{path.name} (= {seen[uid].name})")
            continue
        if uid is not None:
            seen[uid] = path
        kept_files.append(path)
        kept_headers.append(header)
    if copies:
        warnings.warn(
            f"{source}: {len(copies)} file(s) repeat an image already in the series (same SOPInstanceUID) "
            f"and are left out: {', '.join(copies[:3])}{', ...' if len(copies) > 3 else ''}",
            InputWarning,
            stacklevel=4,
        )
    return kept_files, kept_headers


# At most this many images in another orientation or size inside a series are left out as strays (the
# one to three localizers some scanners put into the series they plan); more is a series to split.
MAX_STRAY_IMAGES = 3


def _same_orientation(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Two ImageOrientationPatient values within the reader's tolerance (two missing ones agree too)."""
    if a is None or b is None:
        return a is None and b is None
    return bool(np.abs(a - b).max() <= ORIENTATION_TOLERANCE)


def _without_strays(
    files: list[Path], headers: list[Dataset], source: Path
) -> tuple[list[Path], list[Dataset]]:
    """A series' slices minus the localizer images inside it and up to `MAX_STRAY_IMAGES` images in another
    orientation or size than the rest (left out with an InputWarning naming them); the series unchanged
    when there is no such clear majority, so that `stack_geometry` names the problem."""
    localizer = [is_localizer(h) for h in headers]
    keep = [not flag for flag in localizer] if any(localizer) and not all(localizer) else [True] * len(files)

    def orientation(header: Dataset) -> np.ndarray | None:
        values = header.get("ImageOrientationPatient")
        try:
            array = np.asarray([float(v) for v in values], dtype=float) if values else None
        except (TypeError, ValueError):
            return None
        return array if array is not None and array.shape == (6,) else None

    # Images share a grid when their orientations agree within the reader's tolerance (rounding them
    # would part two values a hair apart) and their sizes match: each is labelled by the first of its kind.
    kinds: list[tuple[np.ndarray | None, object, object]] = []
    grids = []
    for header in headers:
        mine = (orientation(header), header.get("Rows"), header.get("Columns"))
        for number, kind in enumerate(kinds):
            if _same_orientation(mine[0], kind[0]) and mine[1:] == kind[1:]:
                grids.append(number)
                break
        else:
            kinds.append(mine)
            grids.append(len(kinds) - 1)
    counts: dict[tuple, int] = defaultdict(int)
    for g, kept in zip(grids, keep, strict=True):
        if kept:
            counts[g] += 1
    main_grid, main_count = max(counts.items(), key=lambda item: item[1])
    others = sum(counts.values()) - main_count
    if others and others <= MAX_STRAY_IMAGES and main_count > MAX_STRAY_IMAGES:
        keep = [kept and g == main_grid for g, kept in zip(grids, keep, strict=True)]
    left_out = [f.name for f, kept in zip(files, keep, strict=True) if not kept]
    if not left_out:
        return files, headers
    warnings.warn(
        f"{source}: {len(left_out)} image(s) in another orientation or size than the series' "
        f"{len(files) - len(left_out)} slices (localizers) are left out: {', '.join(left_out[:3])}"
        f"{', ...' if len(left_out) > 3 else ''}",
        InputWarning,
        stacklevel=4,
    )
    kept_pairs = [(f, h) for f, h, kept in zip(files, headers, keep, strict=True) if kept]
    return [f for f, _ in kept_pairs], [h for _, h in kept_pairs]


def _read_dicom_object(path: Path) -> MetaTensor:
    """One file: an enhanced multi-frame volume, a single slice, a 2D image, or a cine clip."""
    ds = _dcmread(path)
    if str(ds.get("Modality", "")) in NON_IMAGE_MODALITIES:
        raise UnsupportedDicomError(f"a {ds.get('Modality')} object holds no scan to read", path)
    frames = _int_tag(ds, "NumberOfFrames", 1)
    samples = _int_tag(ds, "SamplesPerPixel", 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == frames and plane_of(ds, path, per_frame[0]) is not None:
        return _read_enhanced(ds, path, list(per_frame))
    pixels = _pixels(ds, path)
    if frames == 1:
        pixels = pixels[None]
    values = _rescaled(_monochrome1_inverted(pixels, ds), ds)
    if "DoseGridScaling" in ds:  # RT dose: stored integers times the scaling are Gy
        values *= float(ds.DoseGridScaling)
    plane = plane_of(ds, path)
    if plane is not None and frames == 1:
        affine = affine_ras(plane, spacing_fallback(ds) or 1.0)
        return MetaTensor(_channel_first(values, samples), affine=affine, meta=_meta(ds, path, affine, 3))
    offsets = ds.get("GridFrameOffsetVector")
    if plane is not None and offsets is not None and len(offsets) == frames:
        # RT dose (and other multi-frame grids): frame k lies offsets[k] - offsets[0] mm along the normal
        # from the first frame's ImagePositionPatient (relative and absolute offset vectors alike).
        steps = np.asarray(offsets, dtype=float) - float(offsets[0])
        planes = [
            SlicePlane(plane.position + step * plane.normal, plane.orientation, plane.pixel_spacing)
            for step in steps
        ]
        order, affine = stack_geometry(planes, path)
        array = _channel_first(values[order], samples)
        return MetaTensor(array, affine=affine, meta=_meta(ds, path, affine, 3))
    spacing = _pixel_spacing_2d(ds)
    if frames > 1 and str(ds.get("Modality", "")) in VOLUME_MODALITIES:
        affine = affine_2d(spacing)
        affine[2, 2] = spacing_fallback(ds) or 1.0
        meta = _meta(ds, path, affine, 3, geometry="unknown: no plane position in the file")
        warnings.warn(
            f"{path}: multi-frame {ds.get('Modality')} without plane positions: read on an identity grid "
            "(orientation and origin unknown), so masks will not overlay the scan in other software",
            InputWarning,
            stacklevel=4,
        )
        return MetaTensor(_channel_first(values, samples), affine=affine, meta=meta)
    affine = affine_2d(spacing)
    array = _channel_first(values, samples)
    if frames == 1:
        return MetaTensor(array[..., 0], affine=affine, meta=_meta(ds, path, affine, 2))
    meta = _meta(ds, path, affine, 2, fps=_frames_per_second(ds), time_axis=3, n_frames=frames)
    return MetaTensor(array, affine=affine, meta=meta)


def _read_enhanced(ds: Dataset, path: Path, frame_items: list[Dataset]) -> MetaTensor:
    planes = [plane_of(ds, path, item) for item in frame_items]
    if any(plane is None for plane in planes):
        raise UnsupportedDicomError("some frames lack a plane position", path)
    order, affine = stack_geometry(planes, path, spacing_fallback(ds, frame_items[0]))
    pixels = _pixels(ds, path)
    if len(frame_items) == 1:
        pixels = pixels[None]
    values = _rescaled(_monochrome1_inverted(pixels, ds), ds, frame_items)[order]
    array = _channel_first(values, int(ds.get("SamplesPerPixel", 1)))
    return MetaTensor(array, affine=affine, meta=_meta(ds, path, affine, 3))


def _pixel_spacing_2d(ds: Dataset) -> tuple[float, float]:
    """Row/column spacing in mm of a projection or ultrasound image; 1.0 where the file does not say."""
    for key in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2 and float(value[0]) > 0:
            return float(value[0]), float(value[1])
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        # Physical units code 3 = cm; regions store cm per pixel.
        if getattr(region, "PhysicalUnitsXDirection", None) == 3 and getattr(region, "PhysicalDeltaX", None):
            return abs(float(region.PhysicalDeltaY)) * 10.0, abs(float(region.PhysicalDeltaX)) * 10.0
    return 1.0, 1.0


def _frames_per_second(ds: Dataset) -> float | None:
    if ds.get("FrameTime"):
        return 1000.0 / float(ds.FrameTime)
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        if ds.get(key):
            return float(ds.get(key))
    return None
