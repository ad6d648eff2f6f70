"""Write small synthetic DICOM series for tests: known geometry, shuffled file names, optional defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def rotation(degrees_about_x: float = 0.0, degrees_about_z: float = 0.0) -> np.ndarray:
    ax, az = np.radians(degrees_about_x), np.radians(degrees_about_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


def write_series(
    folder: Path,
    volume: np.ndarray,
    *,
    direction: np.ndarray | None = None,
    origin=(-20.0, -30.0, 15.0),
    pixel_spacing=(0.8, 0.6),
    slice_step: float = 2.5,
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = 0.0,
    photometric: str = "MONOCHROME2",
    tilt_mm_per_slice: float = 0.0,
    drop_slices: tuple[int, ...] = (),
    series_uid: str | None = None,
    series_number: int = 1,
    seed: int = 0,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    name_prefix: str = "",
    attributes: dict | None = None,
) -> dict:
    """Write `volume` (i = column, j = row, k = slice) as one file per slice, named in shuffled order.

    Returns the expected LPS affine and the stored values, so tests compare against what was written.
    `direction` columns are the row direction X, the column direction Y and the slice normal (LPS).
    """
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    row_dir, col_dir = direction[:, 0], direction[:, 1]
    normal = np.cross(row_dir, col_dir)
    study_uid, frame_uid = generate_uid(), generate_uid()
    series_uid = series_uid or generate_uid()
    n_cols, n_rows, n_slices = volume.shape
    names = np.random.default_rng(seed).permutation(n_slices)
    for k in range(n_slices):
        if k in drop_slices:
            continue
        position = np.asarray(origin) + k * slice_step * normal + k * tilt_mm_per_slice * col_dir
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_STORAGE if modality == "CT" else MR_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(
            str(folder / f"{name_prefix}S{series_number}IM{names[k]:04d}"),
            {},
            file_meta=meta,
            preamble=b"\0" * 128,
        )
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "PID123", modality
        ds.ImageType = list(image_type)
        for keyword, value in (attributes or {}).items():
            setattr(ds, keyword, value)
        ds.SeriesNumber, ds.InstanceNumber = series_number, int(names[k]) + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{v}" for v in pixel_spacing]
        ds.SliceThickness = f"{slice_step}"
        ds.Rows, ds.Columns = n_rows, n_cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope}", f"{intercept}"
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = normal * slice_step
    affine[:3, 3] = origin
    return {"affine_lps": affine, "values": volume.astype(np.float32) * slope + intercept}
