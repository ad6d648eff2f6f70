"""Cohort summary: mean/std/median per label and volume stratum, lesion-wise and patient-wise detection.

Undefined values (NaN: distances when exactly one mask is empty, precision or recall with a zero
denominator) are never averaged: every statistic is over the defined values and says how many there
were (`n`) and how many were left out (`n_undefined`). Cases where the reference or the prediction is
empty are also counted under `empty`. Ratios with a zero denominator are `None` (JSON null).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from medattn.metrics.case import LabelMetrics, LesionRow
from medattn.metrics.lesions import STRATA, volume_stratum

#: Per-case metrics summarised per label (metrics.csv columns plus the Hausdorff distance).
SUMMARY_METRICS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95_mm",
    "hausdorff_mm",
    "assd_mm",
    "surface_dice",
    "vol_pred_ml",
    "vol_ref_ml",
    "vol_diff_ml",
)


def describe(values: Iterable[float]) -> dict[str, float | int | None]:
    """Mean, sample std (ddof=1; 0 for one value), median, n and n_undefined of the finite values."""
    values = np.asarray(list(values), dtype=np.float64)
    finite = values[np.isfinite(values)]
    n = int(finite.size)
    return {
        "mean": float(finite.mean()) if n else None,
        "std": float(finite.std(ddof=1)) if n > 1 else (0.0 if n == 1 else None),
        "median": float(np.median(finite)) if n else None,
        "n": n,
        "n_undefined": int(values.size - n),
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None or precision + recall == 0:
        return None
    return 2 * precision * recall / (precision + recall)


def _metric_block(rows: Sequence[LabelMetrics]) -> dict[str, dict]:
    return {name: describe(getattr(row, name) for row in rows) for name in SUMMARY_METRICS}


def _lesion_block(lesions: Sequence[LesionRow]) -> dict:
    ref = [lesion for lesion in lesions if lesion.source == "ref"]
    pred = [lesion for lesion in lesions if lesion.source == "pred"]
    ref_tp = sum(lesion.status == "TP" for lesion in ref)
    pred_tp = sum(lesion.status == "TP" for lesion in pred)
    recall, precision = _ratio(ref_tp, len(ref)), _ratio(pred_tp, len(pred))
    strata = {}
    for name, _, _ in STRATA:
        members = [lesion for lesion in ref if lesion.stratum == name]
        detected = sum(lesion.status == "TP" for lesion in members)
        strata[name] = {
            "n_ref": len(members),
            "detected": detected,
            "recall": _ratio(detected, len(members)),
            "best_dice": describe(lesion.best_dice for lesion in members),
            "volume_ml": describe(lesion.volume_ml for lesion in members),
        }
    return {
        "n_ref": len(ref),
        "n_pred": len(pred),
        "ref_tp": ref_tp,
        "fn": len(ref) - ref_tp,
        "pred_tp": pred_tp,
        "fp": len(pred) - pred_tp,
        "recall": recall,
        "precision": precision,
        "f1": _f1(precision, recall),
        "strata": strata,
    }


def _patient_block(cases: Sequence[str], lesions: Sequence[LesionRow]) -> dict:
    """Patient-wise detection: a case with reference lesions is a TP when at least one is detected."""
    counts = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    by_case: dict[str, list[LesionRow]] = {}
    for lesion in lesions:
        by_case.setdefault(lesion.case, []).append(lesion)
    for case in cases:
        mine = by_case.get(case, [])
        has_ref = any(lesion.source == "ref" for lesion in mine)
        detected = any(lesion.source == "ref" and lesion.status == "TP" for lesion in mine)
        has_pred = any(lesion.source == "pred" for lesion in mine)
        key = ("tp" if detected else "fn") if has_ref else ("fp" if has_pred else "tn")
        counts[key] += 1
    recall = _ratio(counts["tp"], counts["tp"] + counts["fn"])
    precision = _ratio(counts["tp"], counts["tp"] + counts["fp"])
    return {
        **counts,
        "recall": recall,
        "precision": precision,
        "f1": _f1(precision, recall),
        "specificity": _ratio(counts["tn"], counts["tn"] + counts["fp"]),
    }


def summarize(metrics: Sequence[LabelMetrics], lesions: Sequence[LesionRow]) -> dict:
    """Summarise per-case rows and lesions per label.

    Args:
        metrics: one LabelMetrics per case and label.
        lesions: every lesion row of those cases.

    Returns:
        A JSON-ready dict keyed by label (as a string), each with `n_cases`, `empty` (counts of cases with
        both masks empty, only the prediction empty, only the reference empty), `metrics` (describe() of
        every SUMMARY_METRICS entry), `by_reference_volume` (the same for cases grouped by the stratum of
        their reference volume; cases with an empty reference are only under `empty`), `lesions`
        (lesion-wise counts, recall, precision, F1, and recall and best Dice per lesion volume stratum)
        and `patients` (patient-wise TP/FN/FP/TN, recall, precision, F1, specificity).
    """
    summary = {}
    for label in sorted({row.label for row in metrics}):
        rows = [row for row in metrics if row.label == label]
        mine = [lesion for lesion in lesions if lesion.label == label]
        by_volume = {}
        for name, _, _ in STRATA:
            members = [row for row in rows if row.vol_ref_ml > 0 and volume_stratum(row.vol_ref_ml) == name]
            by_volume[name] = {"n_cases": len(members), "metrics": _metric_block(members)}
        summary[str(label)] = {
            "n_cases": len(rows),
            "empty": {
                "both": sum(row.vol_ref_ml == 0 and row.vol_pred_ml == 0 for row in rows),
                "prediction_only": sum(row.vol_pred_ml == 0 < row.vol_ref_ml for row in rows),
                "reference_only": sum(row.vol_ref_ml == 0 < row.vol_pred_ml for row in rows),
            },
            "metrics": _metric_block(rows),
            "by_reference_volume": by_volume,
            "lesions": _lesion_block(mine),
            "patients": _patient_block([row.case for row in rows], mine),
        }
    return summary


def json_safe(value):
    """Replace NaN/inf floats (nested in dicts and lists) with None so the result is strict JSON."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
