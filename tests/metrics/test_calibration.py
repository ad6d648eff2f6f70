"""Calibration: ECE, Brier score and AUROC against hand computations, MONAI's and scikit-learn's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medattn.metrics.calibration import (
    N_BINS,
    CalibrationCounts,
    auroc,
    brier_score,
    expected_calibration_error,
)


def test_ece_by_hand():
    # 15 bins of width 1/15: 0.9 -> bin 13, 0.95 -> bin 14, 0.2 and 0.21 -> bin 3, 0.0 -> bin 0.
    p = np.array([0.9, 0.9, 0.95, 0.2, 0.21, 0.0, 0.0, 0.0])
    y = np.array([1, 0, 1, 0, 1, 0, 0, 0], bool)
    # bin 13: mean p 0.9, positives 1/2 -> gap 0.4, weight 2/8; bin 14: |0.95 - 1| = 0.05, weight 1/8;
    # bin 3: mean p 0.205, positives 1/2 -> gap 0.295, weight 2/8; bin 0: gap 0, weight 3/8.
    expected = 0.4 * 2 / 8 + 0.05 / 8 + 0.295 * 2 / 8
    assert expected_calibration_error(p, y) == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(p, y, n_bins=1) == pytest.approx(abs(p.mean() - y.mean()))


def test_bin_edges_and_ends():
    counts = CalibrationCounts.from_arrays([0.0, 1 / 15 - 1e-9, 1 / 15 + 1e-9, 1.0, 1.00001], [0, 0, 0, 1, 1])
    assert counts.voxels.tolist() == [2, 1] + [0] * 12 + [2]  # 1.0 (and float rounding above it) in the last
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CalibrationCounts.from_arrays([0.5, math.nan], [0, 1])
    with pytest.raises(ValueError, match="shape"):
        CalibrationCounts.from_arrays([0.5, 0.5], [0, 1, 1])


def test_brier_by_hand():
    assert brier_score([0.9, 0.2, 0.5, 0.0], [1, 1, 0, 0]) == pytest.approx((0.01 + 0.64 + 0.25 + 0.0) / 4)
    assert math.isnan(CalibrationCounts.empty().brier_score())
    assert math.isnan(CalibrationCounts.empty().expected_calibration_error())


def test_counts_pool_over_voxels():
    rng = np.random.default_rng(0)
    p, y = rng.random(3000), rng.random(3000) < 0.3
    pooled = CalibrationCounts.from_arrays(p[:1000], y[:1000])
    pooled += CalibrationCounts.from_arrays(p[1000:], y[1000:])
    assert pooled.expected_calibration_error() == pytest.approx(expected_calibration_error(p, y), abs=1e-12)
    assert pooled.brier_score() == pytest.approx(brier_score(p, y), abs=1e-12)
    assert pooled.n_voxels == 3000


def test_blocks_give_the_whole_volume_answer(monkeypatch):
    import medattn.metrics.calibration as calibration

    rng = np.random.default_rng(1)
    p, y = rng.random((11, 9, 5)).astype(np.float32), rng.random((11, 9, 5)) < 0.4
    whole = CalibrationCounts.from_arrays(p, y)
    monkeypatch.setattr(calibration, "_BLOCK", 37)
    blocks = CalibrationCounts.from_arrays(p, y)
    np.testing.assert_array_equal(whole.voxels, blocks.voxels)
    assert blocks.expected_calibration_error() == pytest.approx(whole.expected_calibration_error(), abs=1e-12)
    assert blocks.brier_score() == pytest.approx(whole.brier_score(), abs=1e-12)


def test_ece_matches_monai():
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    if not hasattr(metrics, "CalibrationErrorMetric"):
        pytest.skip("MONAI without CalibrationErrorMetric")
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 12, 10, 6)) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    labels = np.argmax(probabilities + rng.normal(scale=0.3, size=probabilities.shape), axis=0)
    one_hot = np.stack([labels == k for k in range(3)]).astype(np.float32)
    metric = metrics.CalibrationErrorMetric(num_bins=N_BINS, include_background=True, metric_reduction="none")
    metric(torch.as_tensor(probabilities[None], dtype=torch.float32), torch.as_tensor(one_hot[None]))
    theirs = metric.aggregate().numpy().reshape(-1)
    ours = [expected_calibration_error(probabilities[k].astype(np.float32), labels == k) for k in range(3)]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_auroc_by_hand_with_ties():
    # pairs (pos, neg): 0.9 beats 0.6 and 0.1; 0.6 ties 0.6 (1/2) and beats 0.1 -> 3.5 of 4 pairs.
    assert auroc([0.9, 0.6], [0.6, 0.1]) == 0.875
    assert auroc([1, 1], [1]) == 0.5
    assert auroc([0.2], [0.3, 0.4]) == 0.0
    assert math.isnan(auroc([], [0.3])) and math.isnan(auroc([0.3], []))


def test_auroc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    positives, negatives = np.round(rng.random(40) + 0.2, 1), np.round(rng.random(25), 1)  # many ties
    scores = np.concatenate([positives, negatives])
    truth = np.r_[np.ones(40), np.zeros(25)]
    assert auroc(positives, negatives) == pytest.approx(metrics.roc_auc_score(truth, scores), abs=1e-12)
