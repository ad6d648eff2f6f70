"""`medattn evaluate`: output columns, summary keys, exit codes, one-line errors for grid mismatches."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from medattn.cli.main import main

COLUMNS = (
    "case,label,dice,iou,precision,recall,hd95_mm,assd_mm,surface_dice,vol_pred_ml,vol_ref_ml,vol_diff_ml"
)
AFFINE = np.diag([0.8, 0.9, 3.0, 1.0])


def _write(path, labels, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), path)


@pytest.fixture
def folders(tmp_path):
    """Three cases with labels 1 and 2; case b's prediction misses label 2 entirely."""
    for index, name in enumerate("abc"):
        ref = np.zeros((16, 14, 6), np.uint8)
        ref[2:9, 2:9, 1:4] = 1
        ref[11:14, 10:13, 2:5] = 2
        pred = np.roll(ref, index, axis=0)
        if name == "b":
            pred[pred == 2] = 0
        _write(tmp_path / "ref" / f"{name}.nii.gz", ref)
        _write(tmp_path / "pred" / f"{name}.nii.gz", pred)
    return tmp_path


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_writes_metrics_lesions_and_summary(folders, capsys):
    out = folders / "out"
    assert main(["evaluate", str(folders / "pred"), str(folders / "ref"), "--out", str(out)]) == 0
    rows = _read_csv(out / "metrics.csv")
    assert ",".join(rows[0]) == COLUMNS
    assert [(row[0], row[1]) for row in rows[1:]] == [(case, label) for case in "abc" for label in ("1", "2")]
    case_a_label_1 = dict(zip(rows[0], rows[1], strict=True))
    assert float(case_a_label_1["dice"]) == 1.0 and float(case_a_label_1["hd95_mm"]) == 0.0
    case_b_label_2 = dict(zip(rows[0], rows[4], strict=True))
    assert (
        case_b_label_2["dice"] == "0.0"
        and case_b_label_2["hd95_mm"] == ""
        and case_b_label_2["precision"] == ""
    )
    lesion_header = _read_csv(out / "lesions.csv")[0]
    assert lesion_header[:5] == ["case", "label", "source", "lesion", "status"] and "x_mm" in lesion_header
    assert lesion_header[-1] == "confidence"  # empty without predict's components.csv
    summary = json.loads((out / "summary.json").read_text())
    assert {"settings", "definitions", "n_cases", "missing_predictions", "labels"} <= set(summary)
    label2 = summary["labels"]["2"]
    assert set(label2) == {
        "n_cases",
        "empty",
        "metrics",
        "by_reference_volume",
        "lesions",
        "patients",
        "calibration",
    }
    assert label2["calibration"] is None and label2["lesions"]["confidence"] is None
    assert set(label2["metrics"]["dice"]) == {"mean", "std", "median", "n", "n_undefined"}
    assert label2["metrics"]["hd95_mm"]["n_undefined"] == 1
    assert set(label2["lesions"]["strata"]) == {"<1", "1-3", "3-10", ">10"}
    assert label2["patients"]["fn"] == 1
    printed = capsys.readouterr().out
    assert "Dice" in printed and "HD95" in printed and "metrics.csv" in printed


def test_labels_option_and_bad_labels(folders):
    out = folders / "out"
    assert (
        main(["evaluate", str(folders / "pred"), str(folders / "ref"), "-o", str(out), "--labels", "2"]) == 0
    )
    assert {row[1] for row in _read_csv(out / "metrics.csv")[1:]} == {"2"}
    assert (
        main(["evaluate", str(folders / "pred"), str(folders / "ref"), "-o", str(out), "--labels", "x"]) == 2
    )


def test_grid_mismatch_is_one_line_error_unless_resample(folders, capsys):
    moved = np.diag([0.8, 0.9, 3.0, 1.0])
    moved[0, 3] = 5.0  # the prediction sits 5 mm to the side
    _write(folders / "pred" / "a.nii.gz", np.asarray(nib.load(folders / "ref" / "a.nii.gz").dataobj), moved)
    args = ["evaluate", str(folders / "pred"), str(folders / "ref"), "--out", str(folders / "out")]
    assert main(args) == 1
    error = capsys.readouterr().err
    assert "a.nii.gz" in error and "grid" in error and "--resample" in error and "Traceback" not in error
    assert main([*args, "--resample"]) == 0


def test_missing_prediction_is_scored_empty_or_fails_with_strict(folders, capsys):
    (folders / "pred" / "c.nii.gz").unlink()
    args = ["evaluate", str(folders / "pred"), str(folders / "ref"), "--out", str(folders / "out")]
    assert main(args) == 0
    assert "no prediction for c" in capsys.readouterr().err
    summary = json.loads((folders / "out" / "summary.json").read_text())
    assert summary["missing_predictions"] == ["c"] and summary["labels"]["1"]["empty"]["prediction_only"] == 1
    assert main([*args, "--strict"]) == 1
    assert "c" in capsys.readouterr().err


def test_plot_writes_pngs(folders):
    out = folders / "out"
    assert main(["evaluate", str(folders / "pred"), str(folders / "ref"), "--out", str(out), "--plot"]) == 0
    for name in ("dice_boxplot.png", "volume_bland_altman.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_case_is_reported_and_the_others_are_scored(folders, capsys):
    _write(folders / "pred" / "b.nii.gz", np.zeros((5, 5, 5), np.uint8))  # another shape
    out = folders / "out"
    assert main(["evaluate", str(folders / "pred"), str(folders / "ref"), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "b failed:" in error and "b.nii.gz" in error and "Traceback" not in error
    cases = {row[0] for row in _read_csv(out / "metrics.csv")[1:]}
    assert cases == {"a", "c"}
    assert json.loads((out / "summary.json").read_text())["failed_cases"][0]["case"] == "b"


def test_probabilities_option_adds_calibration(folders):
    (folders / "probs").mkdir()
    for name in "abc":
        ref = np.asarray(nib.load(folders / "ref" / f"{name}.nii.gz").dataobj)
        one_hot = np.stack([ref == k for k in range(3)], axis=-1).astype(np.float32)
        nib.save(nib.Nifti1Image(one_hot, AFFINE), folders / "probs" / f"{name}_probabilities.nii.gz")
    out = folders / "out"
    args = ["evaluate", str(folders / "pred"), str(folders / "ref"), "-o", str(out)]
    assert main([*args, "--probabilities", str(folders / "probs")]) == 0
    calibration = json.loads((out / "summary.json").read_text())["labels"]["2"]["calibration"]
    assert calibration["ece"] == 0.0 and calibration["brier"] == 0.0 and calibration["n_cases"] == 3
    assert main([*args, "--probabilities", str(folders / "nowhere")]) == 1
