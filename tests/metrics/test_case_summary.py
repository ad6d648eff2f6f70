"""Per-case multi-label evaluation on cropped boxes, and the cohort summary's statistics and counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from metric_shapes import blob_pair

from medattn.metrics.case import METRIC_COLUMNS, as_label_map, evaluate_label_maps
from medattn.metrics.overlap import OverlapCounts
from medattn.metrics.summary import describe, json_safe, summarize
from medattn.metrics.surface import surface_metrics


def _label_maps(seed: int, dims: int):
    """Two label maps with labels 1 and 2 (label 3 in neither), and an anisotropic affine."""
    pred1, ref1, spacing = blob_pair(seed, dims)
    pred2, ref2, _ = blob_pair(seed + 100, dims)
    shape = tuple(max(a, b) + 6 for a, b in zip(pred1.shape, pred2.shape, strict=True))
    pred, ref = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    pred[tuple(slice(0, n) for n in pred1.shape)][pred1] = 1
    ref[tuple(slice(0, n) for n in ref1.shape)][ref1] = 1
    offset = tuple(slice(6, 6 + n) for n in pred2.shape)
    pred[offset][pred2] = 2
    ref[offset][ref2] = 2
    affine = np.eye(4)
    affine[:dims, :dims] = np.diag(spacing)[:, ::-1] if dims == 3 else np.diag(spacing)  # axes permuted
    affine[:3, 3] = (10.0, -20.0, 5.0)
    return pred, ref, affine


@pytest.mark.parametrize("dims", [2, 3])
def test_each_label_equals_the_binary_metrics_on_the_full_grid(dims):
    pred, ref, affine = _label_maps(7, dims)
    spacing = tuple(np.linalg.norm(affine[:3, :dims], axis=0))
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    result = evaluate_label_maps(pred, ref, affine, [1, 2, 3], case="c1", tolerance_mm=1.5)
    assert [row.label for row in result.metrics] == [1, 2, 3]
    for row in result.metrics[:2]:
        p, r = pred == row.label, ref == row.label
        expected = {**OverlapCounts.from_masks(p, r).as_dict(), **surface_metrics(p, r, spacing, 1.5)}
        got = row.as_dict()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-9), name
        assert row.vol_pred_ml == pytest.approx(p.sum() * voxel_ml)
        assert row.vol_diff_ml == pytest.approx((p.sum() - r.sum()) * voxel_ml)
    absent = result.metrics[2]
    assert (absent.dice, absent.hd95_mm, absent.surface_dice, absent.vol_ref_ml) == (1.0, 0.0, 1.0, 0.0)
    assert set(METRIC_COLUMNS) <= set(result.metrics[0].as_dict())
    assert {lesion.label for lesion in result.lesions} == {1, 2}


def test_labels_default_to_those_present_and_maps_are_checked():
    pred, ref, affine = _label_maps(3, 3)
    assert [row.label for row in evaluate_label_maps(pred, ref, affine).metrics] == [1, 2]
    with pytest.raises(ValueError, match="non-integer"):
        as_label_map(np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="negative"):
        as_label_map(np.array([0, -1]))
    assert as_label_map(np.array([0.0, 2.0])).dtype.kind == "i"
    with pytest.raises(ValueError, match="background"):
        evaluate_label_maps(pred, ref, affine, [0, 1])


def test_describe_never_averages_undefined_values():
    stats = describe([1.0, 3.0, math.nan, 5.0])
    assert stats == {"mean": 3.0, "std": 2.0, "median": 3.0, "n": 3, "n_undefined": 1}
    assert describe([math.nan]) == {"mean": None, "std": None, "median": None, "n": 0, "n_undefined": 1}


def test_summary_counts_empties_strata_and_patients():
    ref = np.zeros((3, 30, 30, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 2:10, 2:10, 2:8] = 1  # case a: found
    pred[0, 3:10, 2:10, 2:8] = 1
    ref[1, 2:10, 2:10, 2:8] = 1  # case b: missed entirely
    pred[2, 20:25, 20:25, 2:4] = 1  # case c: false alarm on an empty reference
    affine = np.diag([1.0, 1.0, 5.0, 1.0])  # 5 mm^3 voxels: the lesion is 384 voxels = 1.92 mL
    results = [
        evaluate_label_maps(p, r, affine, [1], case=name) for p, r, name in zip(pred, ref, "abc", strict=True)
    ]
    metrics = [row for result in results for row in result.metrics]
    lesions = [lesion for result in results for lesion in result.lesions]
    summary = json_safe(summarize(metrics, lesions))["1"]
    assert summary["n_cases"] == 3
    assert summary["empty"] == {"both": 0, "prediction_only": 1, "reference_only": 1}
    assert summary["metrics"]["dice"]["n"] == 3 and summary["metrics"]["dice"]["n_undefined"] == 0
    assert summary["metrics"]["hd95_mm"]["n"] == 1 and summary["metrics"]["hd95_mm"]["n_undefined"] == 2
    assert summary["metrics"]["recall"]["n_undefined"] == 1  # case c: nothing to recall
    assert summary["by_reference_volume"]["1-3"]["n_cases"] == 2
    assert summary["lesions"]["strata"]["1-3"] | {"best_dice": None, "volume_ml": None} == {
        "n_ref": 2,
        "detected": 1,
        "recall": 0.5,
        "best_dice": None,
        "volume_ml": None,
    }
    assert (summary["lesions"]["fp"], summary["lesions"]["precision"]) == (1, 0.5)
    patients = summary["patients"]
    assert {key: patients[key] for key in ("tp", "fn", "fp", "tn")} == {"tp": 1, "fn": 1, "fp": 1, "tn": 0}
    assert patients["specificity"] == 0.0 and patients["recall"] == 0.5
