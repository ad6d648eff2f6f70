"""Write a sample NIfTI volume as a classic MR DICOM series: one file per slice, positions in LPS.

The series is a faithful copy of the NIfTI case: same voxel values, same world position of every voxel.
DICOM geometry is LPS millimetres; a voxel (i = column, j = row, k = slice) lies at
    ImagePositionPatient(k) + i * PixelSpacing[1] * X + j * PixelSpacing[0] * Y,
with X, Y the two halves of ImageOrientationPatient. The NIfTI affine (RAS) is flipped to LPS and its
first two columns become X and Y. Files are named in a shuffled order and InstanceNumber counts from the
top slice down, so only a reader that sorts slices by position gets the volume right.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_ROOT_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_FIXED_DATE = "20260101"
_FIXED_TIME = "120000"
_UID_SALT = "medattn-sample-data-v1"


def sample_uid(*parts: str) -> str:
    """A reproducible UID under pydicom's root: a hash of fixed strings, the same on every run."""
    return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=["/".join((_UID_SALT, *parts))])


def _ds(values) -> list[DSfloat]:
    """Decimal strings that fit DICOM's 16 characters with as many digits as fit."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def series_geometry(affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split a NIfTI RAS affine into DICOM terms.

    Returns:
        (row direction X, column direction Y, slice step vector in mm, origin), all in LPS mm, where X is
        the direction in which the column index i grows and Y the one in which the row index j grows.
    """
    lps = LPS_FROM_RAS @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    x_dir = lps[:3, 0] / spacing[0]
    y_dir = lps[:3, 1] / spacing[1]
    return x_dir, y_dir, lps[:3, 2], lps[:3, 3]


def _base_dataset(case_id: str, window: tuple[float, float]) -> Dataset:
    """Attributes shared by every slice: patient, study, series, frame of reference, equipment, MR."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", _FIXED_DATE)
        setattr(ds, f"{prefix}Time", _FIXED_TIME)
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "medattn sample data"
    ds.ManufacturerModelName = "generate.py"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "medattn sample brain MRI"
    ds.SeriesDescription = f"T1 post-contrast {case_id} (synthetic, from MNI ICBM152 2009a)"
    ds.PatientName = "ANON^SAMPLE"
    ds.PatientID = "ANON"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic image, no patient"
    ds.BodyPartExamined = "BRAIN"
    ds.ContrastBolusAgent = "GADOLINIUM"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SP", "MP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = "t1_mprage_gd"
    ds.RepetitionTime = "8.2"
    ds.EchoTime = "3.7"
    ds.EchoTrainLength = "1"
    ds.FlipAngle = "8"
    ds.MagneticFieldStrength = "3"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = sample_uid(case_id, "study")
    ds.SeriesInstanceUID = sample_uid(case_id, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = "3"
    ds.AcquisitionNumber = "1"
    ds.FrameOfReferenceUID = sample_uid(case_id, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = _ds([window[0]])[0]
    ds.WindowWidth = _ds([window[1]])[0]
    return ds


def write_dicom_series(nifti_path: Path, out_dir: Path, case_id: str, seed: int) -> list[Path]:
    """Write the NIfTI volume at `nifti_path` as one MR DICOM file per slice (third array axis).

    Args:
        nifti_path: a 3D integer NIfTI sample case; its stored values become the pixel values.
        out_dir: folder to fill; it should be empty.
        case_id: goes into the series description and seeds the UIDs.
        seed: seed of the file-name shuffle.

    Returns:
        The written files, in slice order.
    """
    img = nib.load(nifti_path)
    volume = np.asarray(img.dataobj)
    if volume.ndim != 3 or volume.min() < 0 or volume.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"{nifti_path}: expected a 3D volume with values in 0-65535")
    x_dir, y_dir, slice_step, origin = series_geometry(img.affine)
    spacing = img.header.get_zooms()[:3]
    normal = np.cross(x_dir, y_dir)
    if np.dot(normal, slice_step) <= 0:
        raise ValueError(f"{nifti_path}: slices must advance along X x Y for a right-handed series")
    low, high = np.percentile(volume[volume > 0], [1, 99.5])
    base = _base_dataset(case_id, ((low + high) / 2, high - low))

    n_slices = volume.shape[2]
    names = np.random.default_rng(seed).permutation(n_slices)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(n_slices):
        ds = copy.deepcopy(base)
        position = origin + k * slice_step
        ds.SOPInstanceUID = sample_uid(case_id, "instance", str(k))
        ds.InstanceNumber = str(n_slices - k)  # acquired head to foot: numbering runs against position
        ds.ImagePositionPatient = _ds(position)
        ds.ImageOrientationPatient = _ds([*x_dir, *y_dir])
        ds.SliceLocation = _ds([np.dot(position, normal)])[0]
        ds.SliceThickness = _ds([spacing[2]])[0]
        ds.SpacingBetweenSlices = _ds([spacing[2]])[0]
        ds.PixelSpacing = _ds([spacing[1], spacing[0]])  # [between rows (along Y), between columns (along X)]
        pixels = np.ascontiguousarray(volume[:, :, k].T.astype("<u2"))  # rows follow j, columns follow i
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = out_dir / f"IM{names[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written
