"""Calibration: expected calibration error and Brier score of probabilities, AUROC of confidences.

Definitions (one label against the rest, over voxels):

- `p` is the label's probability at a voxel, `y` is 1 where the reference holds the label, else 0;
- expected calibration error (ECE, Guo et al. 2017; the classwise form of Kull et al. 2019): the
  probabilities fall into `n_bins` equal-width bins, bin b = [b / n_bins, (b + 1) / n_bins) with 1.0 in the
  last bin; ECE = sum over bins of (voxels in bin / all voxels) x |mean p in bin - fraction of y = 1 in bin|.
  0 is perfectly calibrated: where the model says 0.8, 80 % of the voxels hold the label;
- Brier score: mean over voxels of (p - y)^2 (0 best, 1 worst);
- AUROC of a confidence for telling true from false positives: the probability that a random true
  positive's confidence exceeds a random false positive's, ties counting one half (the Mann-Whitney U
  statistic divided by the number of pairs).

`CalibrationCounts` holds the sums these need, so cases pool by adding their counts: a cohort's ECE and
Brier score are over all its voxels, not a mean of per-case values (a small case weighs what its voxels
weigh).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

#: Bins of the expected calibration error (Guo et al. use 15).
N_BINS = 15
# Voxels binned at once: bounds the float64 temporaries to a few tens of MB whatever the volume.
_BLOCK = 1 << 22


@dataclass
class CalibrationCounts:
    """Per-bin sums of one label's probabilities against its reference mask, and the squared-error sum.

    Attributes:
        voxels: voxels per bin, shape (n_bins,).
        probability_sums: sum of p per bin.
        positives: voxels with y = 1 per bin.
        squared_error_sum: sum over all voxels of (p - y)^2.
    """

    voxels: np.ndarray
    probability_sums: np.ndarray
    positives: np.ndarray
    squared_error_sum: float = 0.0

    @classmethod
    def empty(cls, n_bins: int = N_BINS) -> CalibrationCounts:
        return cls(np.zeros(n_bins, np.int64), np.zeros(n_bins), np.zeros(n_bins, np.int64))

    @classmethod
    def from_arrays(cls, probability: ArrayLike, truth: ArrayLike, n_bins: int = N_BINS) -> CalibrationCounts:
        """Counts of one label: `probability` in [0, 1] (values a float rounding outside are clipped) and
        the boolean reference mask `truth` of the same shape.

        Raises:
            ValueError: shapes differ, or a probability is NaN or clearly outside [0, 1].
        """
        probability, truth = np.asarray(probability), np.asarray(truth, dtype=bool)
        if probability.shape != truth.shape:
            raise ValueError(f"probabilities of shape {probability.shape} for a mask of shape {truth.shape}")
        counts = cls.empty(n_bins)
        flat_p, flat_y = probability.reshape(-1), truth.reshape(-1)
        for start in range(0, flat_p.size, _BLOCK):
            counts += cls._block(flat_p[start : start + _BLOCK], flat_y[start : start + _BLOCK], n_bins)
        return counts

    @classmethod
    def _block(cls, p: np.ndarray, y: np.ndarray, n_bins: int) -> CalibrationCounts:
        p = p.astype(np.float64)
        if not np.all((p >= -1e-4) & (p <= 1 + 1e-4)):  # also false for NaN
            raise ValueError("probabilities must lie in [0, 1] (NaN or values outside found)")
        p = np.clip(p, 0.0, 1.0)
        bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
        return cls(
            voxels=np.bincount(bins, minlength=n_bins),
            probability_sums=np.bincount(bins, weights=p, minlength=n_bins),
            positives=np.bincount(bins[y], minlength=n_bins),
            squared_error_sum=float(np.sum(np.square(p - y))),
        )

    def __iadd__(self, other: CalibrationCounts) -> CalibrationCounts:
        self.voxels = self.voxels + other.voxels
        self.probability_sums = self.probability_sums + other.probability_sums
        self.positives = self.positives + other.positives
        self.squared_error_sum += other.squared_error_sum
        return self

    @property
    def n_voxels(self) -> int:
        return int(self.voxels.sum())

    def expected_calibration_error(self) -> float:
        """ECE over every voxel counted (module docstring); NaN when none was."""
        if not self.n_voxels:
            return math.nan
        filled = self.voxels > 0
        gaps = np.abs(self.probability_sums[filled] - self.positives[filled]) / self.voxels[filled]
        return float(np.sum(gaps * self.voxels[filled]) / self.n_voxels)

    def brier_score(self) -> float:
        """Mean of (p - y)^2 over every voxel counted; NaN when none was."""
        return self.squared_error_sum / self.n_voxels if self.n_voxels else math.nan


def expected_calibration_error(probability: ArrayLike, truth: ArrayLike, n_bins: int = N_BINS) -> float:
    """ECE of one label's probabilities against its boolean reference mask (module docstring).

    Example:
        >>> round(expected_calibration_error([0.9, 0.9, 0.2, 0.2], [True, False, False, False]), 6)
        0.3
    """
    return CalibrationCounts.from_arrays(probability, truth, n_bins).expected_calibration_error()


def brier_score(probability: ArrayLike, truth: ArrayLike) -> float:
    """Mean squared difference between one label's probabilities and its boolean reference mask."""
    return CalibrationCounts.from_arrays(probability, truth).brier_score()


def auroc(positive_scores: ArrayLike, negative_scores: ArrayLike) -> float:
    """Area under the ROC curve of scores separating positives from negatives, exact with ties.

    It is the Mann-Whitney U statistic of the positives over the number of (positive, negative) pairs:
    ranks over both groups (ties get their mean rank), U = rank sum of the positives - n_pos (n_pos + 1) / 2.

    Args:
        positive_scores: scores of the positives (e.g. the confidences of true-positive lesions).
        negative_scores: scores of the negatives (e.g. those of false-positive lesions).

    Returns:
        AUROC in [0, 1] (0.5: no separation); NaN when either group is empty.

    Example:
        >>> auroc([0.9, 0.6], [0.6, 0.1])
        0.875
    """
    from scipy.stats import rankdata  # scipy.stats takes a while to import; only AUROC needs it

    positives = np.asarray(positive_scores, dtype=np.float64).reshape(-1)
    negatives = np.asarray(negative_scores, dtype=np.float64).reshape(-1)
    if not positives.size or not negatives.size:
        return math.nan
    ranks = rankdata(np.concatenate([positives, negatives]))
    u_statistic = ranks[: positives.size].sum() - positives.size * (positives.size + 1) / 2
    return float(u_statistic / (positives.size * negatives.size))
