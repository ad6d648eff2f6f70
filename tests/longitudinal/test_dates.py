"""Visit dates: DICOM tags, file and folder names, --dates; and the inputs track refuses before any work."""

from __future__ import annotations

import datetime

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import write_series

from medattn.errors import ConfigError
from medattn.io.discovery import discover
from medattn.longitudinal.dates import date_in_name, parse_date, parse_dates, visit_dates


def _scan(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    return path


def _cases(*paths):
    return [case for path in paths for case in discover(path)]


def test_dates_in_names():
    assert date_in_name("mri_2024-01-10_t1") == datetime.date(2024, 1, 10)
    assert date_in_name("20240110.nii.gz") == datetime.date(2024, 1, 10)
    assert date_in_name("study_123456789") is None  # a longer number is not a date
    assert date_in_name("case_20241340") is None  # no 13th month
    assert parse_dates("2024-01-10,20240410") == ["2024-01-10", "2024-04-10"]
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_date("10/01/2024")


def test_file_name_then_folder_name(tmp_path):
    first = _scan(tmp_path / "scan_20240110.nii.gz")
    second = _scan(tmp_path / "2024-06-01" / "t1.nii.gz")
    visits = visit_dates(_cases(second, first))
    assert [v.date.isoformat() for v in visits] == ["2024-01-10", "2024-06-01"]  # sorted: baseline first
    assert [v.source for v in visits] == ["file name", "folder name"]


def test_dicom_study_date_then_series_date(tmp_path):
    volume = np.arange(4 * 4 * 3, dtype=np.int16).reshape(4, 4, 3)
    write_series(tmp_path / "a", volume, attributes={"StudyDate": "20230102", "PatientID": "P1"})
    write_series(tmp_path / "b_2099-01-01", volume, attributes={"SeriesDate": "20230305", "PatientID": "P1"})
    visits = visit_dates(_cases(tmp_path / "a", tmp_path / "b_2099-01-01"))
    assert [(v.date.isoformat(), v.source) for v in visits] == [
        ("2023-01-02", "DICOM StudyDate"),
        ("2023-03-05", "DICOM SeriesDate"),  # the header wins over the folder's name
    ]


def test_dates_option_overrides_in_discovery_order(tmp_path):
    cases = _cases(_scan(tmp_path / "b.nii.gz"), _scan(tmp_path / "a_20200101.nii.gz"))
    visits = visit_dates(cases, ["2024-05-01", "2024-01-01"])
    assert [(v.case.id, v.source) for v in visits] == [("a_20200101", "dates option"), ("b", "dates option")]
    with pytest.raises(ConfigError, match="gives 1 date"):
        visit_dates(cases, ["2024-05-01"])


def test_refused_inputs_name_the_files(tmp_path):
    undated = _scan(tmp_path / "baseline.nii.gz")
    dated = _scan(tmp_path / "x_2024-01-10.nii.gz")
    with pytest.raises(ConfigError, match="no date for the scan baseline") as error:
        visit_dates(_cases(dated, undated))
    assert "--dates" in str(error.value)
    twin = _scan(tmp_path / "other" / "y_20240110.nii.gz")
    with pytest.raises(ConfigError, match=r"two scans on one date \(2024-01-10\).*x_2024-01-10.*y_20240110"):
        visit_dates(_cases(dated, twin))
    with pytest.raises(ConfigError, match="two or more dates; found one scan: x_2024-01-10"):
        visit_dates(_cases(dated))


def test_different_patients_refused_without_their_ids(tmp_path):
    volume = np.zeros((4, 4, 3), np.int16)
    write_series(tmp_path / "a", volume, attributes={"StudyDate": "20230102", "PatientID": "SECRET-ONE"})
    write_series(tmp_path / "b", volume, attributes={"StudyDate": "20230402", "PatientID": "SECRET-TWO"})
    with pytest.raises(ConfigError, match="different patients") as error:
        visit_dates(_cases(tmp_path / "a", tmp_path / "b"))
    assert "SECRET" not in str(error.value)
    assert str(tmp_path / "a") in str(error.value) and str(tmp_path / "b") in str(error.value)
