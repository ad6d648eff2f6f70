"""bench/uncertainty.py: the pooled test set keeps the seeds' cases apart; comparisons are paired per case."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# bench/ is a folder of scripts, not a package: load the module by path.
_spec = importlib.util.spec_from_file_location(
    "bench_uncertainty", Path(__file__).resolve().parents[2] / "bench" / "uncertainty.py"
)
uncertainty = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(uncertainty)


def _dataset(root: Path, cases: int) -> Path:
    for number in range(cases):
        for subset, suffix in (("imagesTs", "_0000"), ("labelsTs", "")):
            path = root / subset / f"mri_2mm_ts{number:02d}{suffix}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{root.name} {number}")
    return root


def test_pooled_test_set_links_every_seeds_cases_under_ids_that_do_not_collide(tmp_path):
    datasets = {1: _dataset(tmp_path / "s1", 2), 7: _dataset(tmp_path / "s7", 2)}
    pool = uncertainty.pooled("mri_2mm", datasets, tmp_path / "pool", "Ts")
    images = sorted(p.name for p in (pool / "imagesTs").iterdir())
    assert images == [f"mri_2mm_s{s}_ts{n:02d}_0000.nii.gz" for s in (1, 7) for n in (0, 1)]
    assert (pool / "labelsTs" / "mri_2mm_s7_ts01.nii.gz").read_text() == "s7 1"
    # a second call (a rerun of the benchmark) finds the links in place
    assert uncertainty.pooled("mri_2mm", datasets, tmp_path / "pool", "Ts") == pool


def test_paired_is_the_mean_per_case_difference_and_the_cases_won():
    ensemble = {"case_dice_all": {"a": 0.8, "b": 0.6, "c": 0.7}}
    fold = {"case_dice_all": {"a": 0.7, "b": 0.7, "c": 0.7}}
    difference, won, cases = uncertainty.paired(ensemble, fold, "case_dice_all")
    assert difference == pytest.approx(0.0) and (won, cases) == (2, 3)
