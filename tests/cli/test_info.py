"""`medattn info`: the table and the JSON a script reads, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np

from medattn.cli.main import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medattn.cli.main", *args], capture_output=True, text=True)


def test_info_json_lists_shape_spacing_affine(tmp_path, capsys):
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    affine[:3, 3] = (-10, 20, 30)
    nib.save(
        nib.Nifti1Image(np.arange(120, dtype=np.float32).reshape(6, 5, 4), affine), tmp_path / "a.nii.gz"
    )
    assert main(["info", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == "a" and row["shape"] == [6, 5, 4] and row["spacing"] == [0.8, 0.8, 3.0]
    np.testing.assert_allclose(row["affine"], affine)
    assert row["orientation"] == "RAS" and row["intensity_min"] == 0 and row["intensity_max"] == 119


def test_info_table_and_bad_case_exit_code(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "good.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not really a nifti")
    assert main(["info", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "good" in captured.out and "bad.nii.gz" in captured.err and "Traceback" not in captured.err


def test_missing_path_prints_one_line_and_no_traceback(tmp_path):
    result = _run("info", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "missing: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    result = _run("--debug", "info", str(tmp_path / "missing"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_input_warnings_print_as_one_line_naming_the_file(tmp_path, capsys):
    data = np.ones((6, 5, 4), dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "scan.nii.gz")
    assert main(["info", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "scan.nii.gz: 1 NaN or infinite voxel(s) replaced" in err
    assert "InputWarning" not in err and "warnings.warn" not in err  # not Python's source-line format


def test_a_volume_without_plane_positions_has_an_unknown_orientation(tmp_path, capsys):
    """A multi-frame DICOM volume without ImagePositionPatient/ImageOrientationPatient is read on an
    identity grid; info must not call that grid RAS."""
    import pydicom
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
        delattr(dataset, keyword)
    dataset.save_as(tmp_path / "dose.dcm")
    assert main(["info", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["orientation"] == "unknown" and len(row["shape"]) == 3
