"""Plots for `evaluate --plot`: per-label Dice boxplot and a Bland-Altman plot of volumes (matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medattn.errors import MedattnError
from medattn.io.atomic import atomic_path
from medattn.metrics.case import LabelMetrics


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise MedattnError(
            "plots need matplotlib: pip install 'medattn[plot]' (or leave out --plot)"
        ) from error
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _by_label(rows: Sequence[LabelMetrics]) -> dict[int, list[LabelMetrics]]:
    grouped: dict[int, list[LabelMetrics]] = {}
    for row in rows:
        grouped.setdefault(row.label, []).append(row)
    return dict(sorted(grouped.items()))


def _save(figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return path


def plot_dice(rows: Sequence[LabelMetrics], path: Path) -> Path:
    """Boxplot of per-case Dice for each label, every case drawn as a point over its box."""
    plt = _pyplot()
    grouped = _by_label(rows)
    figure, axes = plt.subplots(figsize=(1.6 + 1.2 * len(grouped), 4.5))
    values = [[row.dice for row in group if math.isfinite(row.dice)] for group in grouped.values()]
    axes.boxplot(values, showfliers=False)
    rng = np.random.default_rng(0)
    for position, points in enumerate(values, start=1):
        axes.scatter(
            position + rng.uniform(-0.12, 0.12, len(points)), points, s=12, alpha=0.6, color="tab:blue"
        )
    axes.set_xticks(range(1, len(grouped) + 1), [f"label {label}" for label in grouped])
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("Dice")
    axes.set_title(f"Dice per label ({len({row.case for row in rows})} cases)")
    figure.tight_layout()
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)


def plot_volumes(rows: Sequence[LabelMetrics], path: Path) -> Path:
    """Bland-Altman plot of volumes: pred - ref (mL) against their mean; bias and 95 % limits per label."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for index, (label, group) in enumerate(_by_label(rows).items()):
        color = f"C{index % 10}"
        mean = np.array([(row.vol_pred_ml + row.vol_ref_ml) / 2 for row in group])
        diff = np.array([row.vol_diff_ml for row in group])
        bias, spread = float(diff.mean()), float(diff.std(ddof=1)) if diff.size > 1 else 0.0
        axes.scatter(mean, diff, s=14, color=color, label=f"label {label}: bias {bias:+.2f} mL")
        axes.axhline(bias, color=color, linewidth=1)
        for limit in (bias - 1.96 * spread, bias + 1.96 * spread):
            axes.axhline(limit, color=color, linewidth=0.8, linestyle="--")
    axes.axhline(0.0, color="black", linewidth=0.5)
    axes.set_xlabel("mean of predicted and reference volume (mL)")
    axes.set_ylabel("predicted - reference volume (mL)")
    axes.set_title("Bland-Altman: volumes (dashed: bias ± 1.96 SD)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    try:
        return _save(figure, path)
    finally:
        plt.close(figure)
