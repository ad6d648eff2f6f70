"""DICOM SEG with highdicom: write one BINARY segment per label on its source frames, read a SEG as labels.

BINARY, not the newer LABELMAP type: PACS viewers, dcmqi/Slicer and dicom3tools' dciodvfy (which flags
the Label Map Segmentation SOP class as unknown) all handle it. Segments are coded with a general
SNOMED CT category/type (lesion-like names as Lesion, everything else as Tissue), made by an
AUTOMATIC algorithm named medattn; each carries its label colour as the recommended display colour.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import highdicom as hd
import numpy as np
from monai.data import MetaTensor
from pydicom.sr.codedict import codes

import medattn
from medattn.errors import UnreadableImageError, WriteError
from medattn.io.atomic import atomic_path
from medattn.io.dicom.geometry import shift_slices_
from medattn.io.dicom.headers import dcmread
from medattn.io.dicom.source import DicomSource, dicom_source
from medattn.io.geometry import LPS_TO_RAS, onto_grid, split_channel
from medattn.io.label_table import Label, LabelSpec, as_label_array, label_table, present_values
from medattn.io.limits import check_claimed_size

SERIES_NUMBER = 9000  # far above scanners' series numbers, so the SEG sorts after its source
_PATIENT_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_LESION_WORDS = re.compile(r"lesion|tumou?r|mass|nodule|metasta|polyp|cancer|carcinoma|neoplas|enhanc", re.I)


def save_dicom_seg(mask: object, path: Path, reference: object, labels: LabelSpec | None) -> None:
    """Write `mask` as a DICOM SEG of the source series named by `reference`.

    Args:
        mask: (*spatial) or (1, *spatial) integer labels on the source grid (plain array), or a MetaTensor
            whose grid is the source grid up to axis order and direction.
        path: the .dcm file.
        reference: the source series (see `dicom_source`).
        labels: value -> name or (name, (r, g, b)).

    Raises:
        WriteError: no DICOM reference, or highdicom refuses the source images.
        GeometryError: the mask is not on the source grid.
    """
    array, own_affine = split_channel(mask, 3, path)
    source = dicom_source(reference, tuple(array.shape), path)
    labels_ijk = as_label_array(onto_grid(array, own_affine, source.shape, source.affine, path), path)
    table = label_table(labels, present_values(labels_ijk), path)
    if not table:
        raise WriteError(
            "the mask is empty and no labels were named; a DICOM SEG needs at least one segment, so pass "
            "labels={1: 'name'}",
            path,
        )
    segmentation = build_segmentation(labels_ijk, source, table, path)
    with atomic_path(path) as tmp:
        segmentation.save_as(tmp)


def segment_frames(labels_ijk: np.ndarray, source: DicomSource, table: list[Label]) -> np.ndarray:
    """(source frames, rows, columns) array of segment numbers 1..N, frame f showing slice frame_slice[f]."""
    lookup = np.zeros(int(labels_ijk.max(initial=0)) + 1, dtype=np.uint16)
    for number, label in enumerate(table, start=1):
        if label.value < lookup.size:
            lookup[label.value] = number
    slices = np.transpose(labels_ijk, (2, 1, 0))  # (k, j = row, i = column)
    if source.tilt is not None:  # from the reader's orthogonal grid back onto the sheared source slices
        slices = shift_slices_(slices.copy(), source.tilt, forward=False, order=0, fill=0)
    frames = slices[source.frame_slice]
    dtype = np.uint8 if len(table) <= 255 else np.uint16
    return lookup[frames].astype(dtype)


def segment_description(number: int, label: Label) -> hd.seg.SegmentDescription:
    """The DICOM description of one segment: its name, a general code, the algorithm, its colour."""
    lesion = bool(_LESION_WORDS.search(label.name))
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label.name[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure
        if lesion
        else codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Lesion if lesion else codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="medattn", family=codes.cid7162.ArtificialIntelligence, version=medattn.__version__
        ),
        display_color=hd.color.CIELabColor.from_rgb(*label.color),
    )


def build_segmentation(
    labels_ijk: np.ndarray, source: DicomSource, table: list[Label], path: Path
) -> hd.seg.Segmentation:
    """The highdicom Segmentation object (not yet written) for labels on the source grid."""
    descriptions = [segment_description(number, label) for number, label in enumerate(table, start=1)]
    for ds in source.datasets:
        # Anonymisers often drop these type 2 attributes; highdicom copies them, so give them empty values
        # (which type 2 allows) on our in-memory headers. The source files are never touched.
        for keyword in _PATIENT_STUDY_TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, None)
    try:
        segmentation = hd.seg.Segmentation(
            source_images=source.datasets,
            pixel_array=segment_frames(labels_ijk, source, table),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medattn",
            manufacturer_model_name="medattn",
            software_versions=medattn.__version__,
            device_serial_number="0",
            content_label="MEDATTN",
            content_description="medattn automatic segmentation",
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise WriteError(
            f"highdicom cannot build a DICOM SEG for the source series in {source.location}: {error}", path
        ) from error
    segmentation.SeriesDescription = "medattn segmentation"
    return segmentation


def read_dicom_seg(path: str | Path) -> MetaTensor:
    """A DICOM SEG as a label map (1, i = column, j = row, k = slice), value = segment number, with the RAS
    affine of its frames' own plane positions (read by highdicom): what `medattn evaluate` scores.

    The grid spans the frames the SEG holds; a SEG that omits empty frames (as medattn's and most
    writers' do) covers only the slices with a segment, a sub-grid of its source series' grid. Where
    segments overlap, the highest segment number wins.

    Raises:
        UnreadableImageError: not a SEG highdicom reads, or frames that do not stack into one volume.
    """
    path = Path(path)
    dataset = dcmread(path)
    try:
        segmentation = hd.seg.Segmentation.from_dataset(dataset, copy=False)
        geometry = segmentation.get_volume_geometry(allow_missing_positions=True)
        if geometry is not None:  # a damaged frame position can spread the grid over millions of slices
            voxels = int(np.prod(geometry.spatial_shape, dtype=np.float64))  # one byte each (uint8 labels)
            check_claimed_size(voxels, path, compressed=True, what="label volume")
        volume = segmentation.get_volume(combine_segments=True, skip_overlap_checks=True)
    except UnreadableImageError:  # the claim check's own error, already naming the file
        raise
    # highdicom meets a damaged SEG with whatever its first use of a bad value raises (sqlite3.Error: the
    # frame table it builds lacks a column the damaged header should have given it).
    except (
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        RuntimeError,
        OSError,
        sqlite3.Error,
    ) as error:
        raise UnreadableImageError(
            f"not a DICOM SEG whose frames stack into a volume ({error})", path
        ) from error
    array = np.transpose(np.asarray(volume.array), (2, 1, 0))  # (slice, row, column) -> (i, j, k)
    indices_to_lps = np.asarray(volume.affine, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = indices_to_lps[:3, [2, 1, 0]]
    affine[:3, 3] = indices_to_lps[:3, 3]
    affine = LPS_TO_RAS @ affine
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    meta = {"filename_or_obj": str(path), "modality": "SEG", "spacing": spacing, "space": "RAS"}
    return MetaTensor(np.ascontiguousarray(array)[None], affine=affine, meta=meta)
