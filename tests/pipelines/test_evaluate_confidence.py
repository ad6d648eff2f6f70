"""`evaluate` with predict's components.csv (lesion confidence, its AUROC) and probability volumes (ECE,
Brier score): matching by centroid, pooling over cases, 2D files, and the errors."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest

import medattn
from medattn.errors import InputNotFoundError, MedattnError
from medattn.inference.uncertainty import COMPONENT_COLUMNS
from medattn.metrics.calibration import brier_score, expected_calibration_error
from medattn.metrics.case import LESION_COLUMNS, LesionRow
from medattn.pipelines.evaluate_confidence import Component, with_confidence

AFFINE = np.array([[0.8, 0, 0, -40.0], [0, 0.9, 0, 12.0], [0, 0, 3.0, 7.5], [0, 0, 0, 1]])
SHAPE = (24, 20, 8)
# Boxes (start, stop per axis) of label 1: two reference lesions, their predictions and two false positives.
REF_BOXES = [((2, 8), (2, 8), (1, 5)), ((14, 18), (3, 6), (2, 5))]
TRUE_BOXES = [((3, 9), (2, 8), (1, 5)), ((14, 17), (3, 6), (2, 5))]
FALSE_BOXES = [((2, 6), (13, 18), (2, 6)), ((18, 20), (15, 17), (5, 6))]


def _box(boxes):
    mask = np.zeros(SHAPE, np.uint8)
    for box in boxes:
        mask[tuple(slice(*axis) for axis in box)] = 1
    return mask


def _centroid_mm(box):
    index = [(start + stop - 1) / 2 for start, stop in box]
    return AFFINE[:3, :3] @ index + AFFINE[:3, 3]


def _volume_ml(box):
    return float(np.prod([stop - start for start, stop in box])) * 0.8 * 0.9 * 3.0 / 1000


def _component(case, label, number, box, confidence):
    x, y, z = _centroid_mm(box)
    row = {
        "case": case,
        "label": label,
        "name": "tumour",
        "component": number,
        "volume_ml": round(_volume_ml(box), 4),
        "centroid_x": round(x, 3),
        "centroid_y": round(y, 3),
        "centroid_z": round(z, 3),
        "mean_probability": 0.8,
        "mean_uncertainty": 0.2,
        "confidence": confidence,
        "low_confidence": str(confidence < 0.5).lower(),
    }
    return [row[name] for name in COMPONENT_COLUMNS]


def _write_components(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COMPONENT_COLUMNS)
        writer.writerows(rows)


@pytest.fixture
def folders(tmp_path):
    """Case p1: two reference lesions of label 1, both detected, and two false-positive components."""
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    nib.save(nib.Nifti1Image(_box(REF_BOXES), AFFINE), tmp_path / "ref" / "p1.nii.gz")
    nib.save(nib.Nifti1Image(_box(TRUE_BOXES + FALSE_BOXES), AFFINE), tmp_path / "pred" / "p1.nii.gz")
    return tmp_path


def _pred_lesions(result):
    return [lesion for lesion in result.lesions if lesion.source == "pred"]


def test_lesions_get_their_components_confidence_matched_by_centroid(folders):
    # Component numbers deliberately differ from evaluate's lesion numbers: matching is by centroid.
    # Confidences 0.9 and 0.6 (true positives) against 0.6 and 0.2 (false positives): by hand, of the four
    # (TP, FP) pairs three are won and one tied, AUROC = 3.5 / 4.
    rows = [
        _component("p1", 1, 1, TRUE_BOXES[0], 0.9),
        _component("p1", 1, 4, TRUE_BOXES[1], 0.6),
        _component("p1", 1, 2, FALSE_BOXES[0], 0.6),
        _component("p1", 1, 3, FALSE_BOXES[1], 0.2),
        _component("p1", 2, 1, TRUE_BOXES[0], 0.01),  # another label at the same place: not this lesion's
        _component("other", 1, 1, TRUE_BOXES[0], 0.02),  # another case
    ]
    _write_components(folders / "pred" / "components.csv", rows)
    result = medattn.evaluate(folders / "pred", folders / "ref", folders / "out")
    by_volume = {round(lesion.volume_ml, 4): lesion for lesion in _pred_lesions(result)}
    expected = [(TRUE_BOXES[0], 0.9, "TP"), (TRUE_BOXES[1], 0.6, "TP"), (FALSE_BOXES[0], 0.6, "FP")]
    for box, confidence, status in [*expected, (FALSE_BOXES[1], 0.2, "FP")]:
        lesion = by_volume[round(_volume_ml(box), 4)]
        assert (lesion.confidence, lesion.status) == (pytest.approx(confidence), status)
    assert all(math.isnan(lesion.confidence) for lesion in result.lesions if lesion.source == "ref")
    block = result.summary["labels"]["1"]["lesions"]["confidence"]
    assert block == {"auroc": 0.875, "n_tp": 2, "n_fp": 2, "n_without_confidence": 0}
    assert result.summary["components"] == str(folders / "pred" / "components.csv")
    with open(folders / "out" / "lesions.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == LESION_COLUMNS and LESION_COLUMNS[-1] == "confidence"
    assert {row["confidence"] for row in table if row["source"] == "ref"} == {""}
    assert sorted(float(row["confidence"]) for row in table if row["source"] == "pred") == [
        0.2,
        0.6,
        0.6,
        0.9,
    ]
    assert json.loads((folders / "out" / "summary.json").read_text())["labels"]["1"]["lesions"]["confidence"]


def test_dropped_lesions_and_one_sided_counts(folders):
    # min_lesion_voxels drops the 4-voxel false positive: its row matches nothing; only true positives
    # keep a confidence, so the AUROC has no false positives to rank against.
    rows = [_component("p1", 1, 1, TRUE_BOXES[0], 0.9), _component("p1", 1, 4, FALSE_BOXES[1], 0.1)]
    _write_components(folders / "pred" / "components.csv", rows)
    result = medattn.evaluate(folders / "pred", folders / "ref", min_lesion_voxels=5)
    assert sorted(lesion.voxels for lesion in _pred_lesions(result)) == [27, 80, 144]
    block = result.summary["labels"]["1"]["lesions"]["confidence"]
    assert block == {"auroc": None, "n_tp": 1, "n_fp": 0, "n_without_confidence": 2}


def test_without_components_the_column_is_empty_and_the_summary_null(folders):
    result = medattn.evaluate(folders / "pred", folders / "ref", folders / "out")
    assert all(math.isnan(lesion.confidence) for lesion in result.lesions)
    label = result.summary["labels"]["1"]
    assert label["lesions"]["confidence"] is None and label["calibration"] is None
    assert result.summary["components"] is None and "probabilities" not in result.summary
    with open(folders / "out" / "lesions.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert {row["confidence"] for row in table} == {""}


def test_a_malformed_components_file_fails_before_any_case(folders):
    (folders / "pred" / "components.csv").write_text("case,label,volume_ml\np1,1,0.1\n")
    with pytest.raises(MedattnError, match="components.csv lacks column"):
        medattn.evaluate(folders / "pred", folders / "ref")
    _write_components(folders / "pred" / "components.csv", [_component("p1", "one", 1, TRUE_BOXES[0], 0.9)])
    with pytest.raises(MedattnError, match="line 2"):
        medattn.evaluate(folders / "pred", folders / "ref")


def _softmax_like(rng, labels, classes):
    """Probabilities (C, *spatial) that lean towards `labels` but not all the way."""
    scores = rng.random((classes, *labels.shape)) + 2.0 * np.stack([labels == k for k in range(classes)])
    return (scores / scores.sum(axis=0)).astype(np.float32)


def test_probabilities_give_pooled_ece_and_brier_per_label(folders):
    rng = np.random.default_rng(0)
    ref_p2 = np.zeros(SHAPE, np.uint8)
    ref_p2[4:12, 5:9, 2:6], ref_p2[15:20, 10:14, 1:3] = 1, 2
    nib.save(nib.Nifti1Image(ref_p2, AFFINE), folders / "ref" / "p2.nii.gz")
    nib.save(nib.Nifti1Image(ref_p2, AFFINE), folders / "pred" / "p2.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), AFFINE), folders / "ref" / "p3.nii.gz")
    refs = {"p1": _box(REF_BOXES), "p2": ref_p2}
    probabilities = {case: _softmax_like(rng, labels, 3) for case, labels in refs.items()}
    (folders / "probs").mkdir()
    for case, volume in probabilities.items():  # channels last, as predict --save-probabilities writes
        nib.save(
            nib.Nifti1Image(np.moveaxis(volume, 0, -1), AFFINE),
            folders / "probs" / f"{case}_probabilities.nii.gz",
        )
    result = medattn.evaluate(folders / "pred", folders / "ref", probabilities=folders / "probs")
    assert result.summary["cases_without_probabilities"] == ["p3"]
    assert result.summary["settings"]["probabilities"] == str(folders / "probs")
    for label in (1, 2):
        p = np.concatenate([probabilities[case][label].ravel() for case in ("p1", "p2")])
        y = np.concatenate([(refs[case] == label).ravel() for case in ("p1", "p2")])
        block = result.summary["labels"][str(label)]["calibration"]
        assert block["ece"] == pytest.approx(expected_calibration_error(p, y), abs=1e-9)
        assert block["brier"] == pytest.approx(brier_score(p, y), abs=1e-9)
        assert block["n_cases"] == 2 and block["n_voxels"] == 2 * np.prod(SHAPE) and block["n_bins"] == 15
    _write_components(folders / "pred" / "components.csv", [_component("p1", 1, 1, TRUE_BOXES[0], 0.9)])
    serial = medattn.evaluate(folders / "pred", folders / "ref", probabilities=folders / "probs")
    parallel = medattn.evaluate(folders / "pred", folders / "ref", probabilities=folders / "probs", workers=2)
    assert parallel.summary["labels"] == serial.summary["labels"]
    assert [lesion.confidence for lesion in _pred_lesions(parallel)][:1] == [0.9]


def test_probabilities_of_a_2d_case(tmp_path):
    labels = np.zeros((12, 10), np.uint8)
    labels[3:7, 2:6] = 1
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(labels, affine), tmp_path / folder / "img.nii.gz")
    probability = np.where(labels == 1, 0.7, 0.2).astype(np.float32)
    (tmp_path / "probs").mkdir()
    stacked = np.stack([1 - probability, probability], axis=-1)  # (X, Y, C)
    nib.save(nib.Nifti1Image(stacked, affine), tmp_path / "probs" / "img_probabilities.nii.gz")
    result = medattn.evaluate(tmp_path / "pred", tmp_path / "ref", probabilities=tmp_path / "probs")
    block = result.summary["labels"]["1"]["calibration"]
    # By hand: 16 voxels at 0.7, all label 1 (gap 0.3); 104 at 0.2, none label 1 (gap 0.2).
    assert block["ece"] == pytest.approx((16 * 0.3 + 104 * 0.2) / 120, abs=1e-6)
    assert block["brier"] == pytest.approx((16 * 0.09 + 104 * 0.04) / 120, abs=1e-6)


def test_probabilities_on_another_grid_fail_that_case(folders):
    (folders / "probs").mkdir()
    volume = np.full((*SHAPE[:2], SHAPE[2] - 1, 2), 0.5, np.float32)
    nib.save(nib.Nifti1Image(volume, AFFINE), folders / "probs" / "p1_probabilities.nii.gz")
    result = medattn.evaluate(folders / "pred", folders / "ref", probabilities=folders / "probs")
    assert result.failed[0].case == "p1" and "another grid" in result.failed[0].error
    with pytest.raises(InputNotFoundError, match="probability"):
        medattn.evaluate(folders / "pred", folders / "ref", probabilities=folders / "nowhere")


def test_probabilities_in_another_axis_order_are_reindexed_exactly(folders):
    rng = np.random.default_rng(1)
    volume = _softmax_like(rng, _box(REF_BOXES), 2)
    flipped = AFFINE.copy()
    flipped[0, 0], flipped[0, 3] = -0.8, AFFINE[0, 3] + (SHAPE[0] - 1) * 0.8  # the x axis runs the other way
    (folders / "probs").mkdir()
    stored = np.moveaxis(volume, 0, -1)[::-1]
    nib.save(
        nib.Nifti1Image(np.ascontiguousarray(stored), flipped), folders / "probs" / "p1_probabilities.nii"
    )
    result = medattn.evaluate(folders / "pred", folders / "ref", probabilities=folders / "probs")
    block = result.summary["labels"]["1"]["calibration"]
    assert block["ece"] == pytest.approx(
        expected_calibration_error(volume[1], _box(REF_BOXES) == 1), abs=1e-9
    )


def _lesion(number, volume_ml, centroid_mm):
    x, y, z = centroid_mm
    return LesionRow("c", 1, "pred", number, "TP", 1, volume_ml, "<1", 0.0, 1.0, x, y, z)


def test_matching_is_within_half_a_voxel_and_closest_in_volume():
    centre = _centroid_mm(TRUE_BOXES[0])
    # A ring around a dot shares its centroid: each lesion takes the component of its own volume.
    ring, dot = _lesion(1, 0.5, centre), _lesion(2, 0.01, centre)
    components = {
        ("c", 1): [
            Component("c", 1, 1, 0.01, tuple(centre), 0.3),
            Component("c", 1, 2, 0.5, tuple(centre), 0.8),
        ]
    }
    assert [row.confidence for row in with_confidence([ring, dot], components, "c", AFFINE, 3)] == [0.8, 0.3]
    # Offsets along z (3 mm voxels): 1.4 mm is within half a voxel, 1.6 mm is not.
    for offset_mm, expected in ((1.4, 0.8), (1.6, None)):
        moved = Component("c", 1, 1, 0.5, tuple(centre + [0, 0, offset_mm]), 0.8)
        (row,) = with_confidence([ring], {("c", 1): [moved]}, "c", AFFINE, 3)
        assert row.confidence == expected if expected else math.isnan(row.confidence)
