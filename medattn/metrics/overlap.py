"""Voxel overlap metrics (Dice, IoU, precision, recall) with one documented rule for empty masks.

Empty masks, decided once for all of medattn (the convention of MONAI's `DiceMetric(ignore_empty=False)`
and of Metrics Reloaded for "nothing there, nothing found"):

- prediction and reference both empty: every overlap metric is 1 (perfect agreement);
- one of them empty: Dice and IoU are 0; precision is 0 when only the prediction has voxels and
  undefined (NaN) when the prediction is empty; recall is 0 when only the reference has voxels and
  undefined (NaN) when the reference is empty. An undefined value is never averaged: summaries count it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

NAN = float("nan")


@dataclass(frozen=True)
class OverlapCounts:
    """Voxel counts of a prediction against a reference: true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @classmethod
    def from_masks(cls, pred: ArrayLike, ref: ArrayLike) -> OverlapCounts:
        """Count voxels of two boolean masks of one shape."""
        pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
        if pred.shape != ref.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
        tp = int(np.count_nonzero(pred & ref))
        return cls(tp=tp, fp=int(np.count_nonzero(pred)) - tp, fn=int(np.count_nonzero(ref)) - tp)

    @property
    def both_empty(self) -> bool:
        return self.tp + self.fp + self.fn == 0

    def dice(self) -> float:
        """2 TP / (2 TP + FP + FN); 1 when both masks are empty."""
        return 1.0 if self.both_empty else 2.0 * self.tp / (2 * self.tp + self.fp + self.fn)

    def iou(self) -> float:
        """TP / (TP + FP + FN) (Jaccard); 1 when both masks are empty."""
        return 1.0 if self.both_empty else self.tp / (self.tp + self.fp + self.fn)

    def precision(self) -> float:
        """TP / (TP + FP); 1 when both masks are empty, NaN when only the reference has voxels."""
        if self.both_empty:
            return 1.0
        return NAN if self.tp + self.fp == 0 else self.tp / (self.tp + self.fp)

    def recall(self) -> float:
        """TP / (TP + FN); 1 when both masks are empty, NaN when only the prediction has voxels."""
        if self.both_empty:
            return 1.0
        return NAN if self.tp + self.fn == 0 else self.tp / (self.tp + self.fn)

    def as_dict(self) -> dict[str, float]:
        """dice, iou, precision and recall by name."""
        return dict(dice=self.dice(), iou=self.iou(), precision=self.precision(), recall=self.recall())


def dice(pred: ArrayLike, ref: ArrayLike) -> float:
    """Dice similarity coefficient of two boolean masks (1 when both are empty)."""
    return OverlapCounts.from_masks(pred, ref).dice()


def iou(pred: ArrayLike, ref: ArrayLike) -> float:
    """Intersection over union (Jaccard index) of two boolean masks (1 when both are empty)."""
    return OverlapCounts.from_masks(pred, ref).iou()


def precision(pred: ArrayLike, ref: ArrayLike) -> float:
    """Fraction of predicted voxels inside the reference (NaN: empty prediction, non-empty reference)."""
    return OverlapCounts.from_masks(pred, ref).precision()


def recall(pred: ArrayLike, ref: ArrayLike) -> float:
    """Fraction of reference voxels predicted (NaN for an empty reference with a non-empty prediction)."""
    return OverlapCounts.from_masks(pred, ref).recall()
