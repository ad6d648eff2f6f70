"""Find the DICOM image series under a folder: group files by SeriesInstanceUID, split multi-volume series.

Only headers are read (a few tags, no pixels), so scanning a large tree stays cheap. Non-image objects
(SEG, RTSTRUCT, SR, ...) are skipped; localizer series are recognised so callers can leave them out.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from medattn.errors import InputWarning, UnreadableImageError
from medattn.io.dicom.headers import dcmread, int_tag

# Objects that carry no image of their own (our own SEG outputs among them): never read as scans.
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "ECG", "DOC"}
UNREADABLE = "unreadable:"
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
        return dcmread(path, pixels=False, specific_tags=_HEADER_TAGS)
    except UnreadableImageError:
        return None


def _cut_image(header: Dataset) -> bool:
    """An image object (by its SOP class) whose header lacks Rows: a slice cut short or damaged before its
    image's size, which would otherwise be skipped as a non-image object and leave its series a gap."""
    if "Rows" in header:
        return False
    sop_class = header.get("SOPClassUID") or header.file_meta.get("MediaStorageSOPClassUID")
    return sop_class is not None and "Image Storage" in sop_class.name


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
    return "ImagePositionPatient" in header and int_tag(header, "NumberOfFrames", 1) == 1


def scan_dicom_files(files: Iterable[Path]) -> list[DicomSeries]:
    """Group DICOM files into image series by SeriesInstanceUID; non-image objects and junk are skipped.

    Slices with a patient position group into one volume per series. Files without one (projection
    radiographs, ultrasound stills, secondary captures) and multi-frame objects (enhanced CT/MR, cine)
    are each a series of their own, even when they share a SeriesInstanceUID.
    """
    grouped: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in files:
        header = _read_header(path)
        if header is None or (len(header) == 0 and path.name.upper() != "DICOMDIR") or _cut_image(header):
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
            number = int_tag(header, "SeriesNumber", -1)
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
