"""Benchmark `medattn evaluate` metrics: 20 synthetic 256^3 cases with 3 labels, against MONAI's metrics.

Each case has an organ-sized ellipsoid (label 1), a medium one (label 2) and scattered small lesions
(label 3, so its bounding box spans most of the grid); the prediction shifts, grows and shrinks them, drops
a lesion and adds a false one. Timed:

1. medattn metrics in memory (`evaluate_label_maps`: overlap, HD95/Hausdorff/ASSD/surface Dice, volumes,
   lesion matching), one process;
2. the whole `medattn.evaluate` pipeline from .nii.gz files (reading, pairing, CSV/JSON writing);
3. MONAI computed the obvious way: one-hot tensors of the full grid into `compute_dice`,
   `compute_hausdorff_distance(percentile=95)`, `compute_average_surface_distance(symmetric=True)` and
   `compute_surface_dice(use_subvoxels=True)` (no lesion metrics), on the first `--monai-cases` cases.

Prints a table and writes its section of BENCHMARKS.md. Run: .venv/bin/python bench/metrics.py
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from report import write_section  # bench/report.py (scripts run from bench/ on sys.path)

SHAPE = (256, 256, 256)
SPACING = (0.8, 0.8, 1.5)
LABELS = (1, 2, 3)


def _ellipsoid(shape, center, radii) -> tuple[tuple[slice, ...], np.ndarray]:
    """A filled ellipsoid as (box, mask inside the box), built on its bounding box only."""
    box = tuple(
        slice(max(0, int(c - r) - 1), min(n, int(c + r) + 2))
        for c, r, n in zip(center, radii, shape, strict=True)
    )
    grids = np.ogrid[tuple(box)]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii, strict=True)) <= 1.0
    return box, inside


def _paint(volume: np.ndarray, label: int, center, radii) -> None:
    box, inside = _ellipsoid(volume.shape, center, radii)
    volume[box][inside] = label


def synthetic_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) uint8 label maps of SHAPE with labels 1-3."""
    rng = np.random.default_rng(seed)
    ref, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    organ_c, organ_r = rng.uniform(100, 156, 3), rng.uniform(45, 60, 3)
    mid_c, mid_r = rng.uniform(60, 80, 3), rng.uniform(15, 25, 3)
    _paint(ref, 1, organ_c, organ_r)
    _paint(pred, 1, organ_c + rng.normal(0, 1.5, 3), organ_r * rng.uniform(0.95, 1.05, 3))
    _paint(ref, 2, mid_c, mid_r)
    _paint(pred, 2, mid_c + rng.normal(0, 1.0, 3), mid_r * rng.uniform(0.9, 1.1, 3))
    for k in range(6):
        center, radii = rng.uniform(20, 236, 3), rng.uniform(2, 9, 3)
        _paint(ref, 3, center, radii)
        if k > 0:  # the first lesion is missed
            _paint(pred, 3, center + rng.normal(0, 0.7, 3), radii * rng.uniform(0.8, 1.2, 3))
    _paint(pred, 3, rng.uniform(20, 236, 3), rng.uniform(2, 5, 3))  # a false positive
    return pred, ref


def _affine() -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-100.0, -120.0, 40.0)
    return affine


class Clock:
    """Wall and CPU seconds of a block; CPU counts this process and its children (worker processes)."""

    @staticmethod
    def _cpu() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, self._cpu() - self.cpu


def time_medattn(cases) -> Clock:
    from medattn.metrics.case import evaluate_label_maps

    with Clock() as clock:
        for index, (pred, ref) in enumerate(cases):
            evaluate_label_maps(pred, ref, _affine(), LABELS, case=f"case{index:02d}")
    return clock


def write_cases(cases, folder: Path) -> float:
    """Save the cases as pred/ and ref/ folders of .nii.gz files; returns the seconds it took."""
    import nibabel as nib

    start = time.perf_counter()
    for sub in ("pred", "ref"):
        (folder / sub).mkdir()
    for index, (pred, ref) in enumerate(cases):
        nib.save(nib.Nifti1Image(pred, _affine()), folder / "pred" / f"case{index:02d}.nii.gz")
        nib.save(nib.Nifti1Image(ref, _affine()), folder / "ref" / f"case{index:02d}.nii.gz")
    return time.perf_counter() - start


def time_pipeline(folder: Path, workers: int) -> Clock:
    import medattn

    with Clock() as clock:
        medattn.evaluate(
            folder / "pred", folder / "ref", folder / f"out{workers}", labels=LABELS, workers=workers
        )
    return clock


def time_monai(cases) -> Clock:
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_surface_dice,
    )
    from monai.networks.utils import one_hot

    with Clock() as clock:
        for pred, ref in cases:
            y_pred = one_hot(torch.from_numpy(pred.astype(np.int64))[None, None], num_classes=len(LABELS) + 1)
            y = one_hot(torch.from_numpy(ref.astype(np.int64))[None, None], num_classes=len(LABELS) + 1)
            compute_dice(y_pred, y, include_background=False)
            compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=SPACING)
            compute_average_surface_distance(
                y_pred, y, include_background=False, symmetric=True, spacing=SPACING
            )
            compute_surface_dice(
                y_pred, y, [1.0] * len(LABELS), include_background=False, spacing=SPACING, use_subvoxels=True
            )
    return clock


def _versions() -> str:
    import monai
    import scipy
    import torch

    import medattn

    return (
        f"medattn {medattn.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"MONAI {monai.__version__}, torch {torch.__version__}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument(
        "--monai-cases", type=int, default=3, help="cases timed with MONAI (slow; 0 skips it)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()

    start = time.perf_counter()
    cases = [synthetic_case(seed) for seed in range(args.cases)]
    print(f"generated {args.cases} cases of {SHAPE} in {time.perf_counter() - start:.1f} s")
    rows = [("medattn metrics, in memory, 1 process", args.cases, time_medattn(cases))]
    with tempfile.TemporaryDirectory() as tmp:
        written = write_cases(cases, Path(tmp))
        for workers in (1, 2):
            what = f"medattn.evaluate from .nii.gz (read, metrics, CSV/JSON), {workers} worker(s)"
            rows.append((what, args.cases, time_pipeline(Path(tmp), workers)))
    if args.monai_cases:
        n = min(args.monai_cases, args.cases)
        rows.append(("MONAI metrics on the full one-hot grid (no lesions)", n, time_monai(cases[:n])))

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    header = "| what | cases | wall s | CPU s | wall s / case |\n| --- | ---: | ---: | ---: | ---: |"
    # Worker processes fork from a forkserver, not from this process: their CPU time is not ours to count.
    lines = [
        f"| {what} | {n} | {clock.wall:.1f} | {'-' if '2 worker' in what else f'{clock.cpu:.1f}'} | "
        f"{clock.wall / n:.2f} |"
        for what, n, clock in rows
    ]
    table = "\n".join([header, *lines])
    print(table)
    if args.no_write:
        return
    section = (
        f"`.venv/bin/python bench/metrics.py --cases {args.cases}`. "
        f"{args.cases} synthetic cases of {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} voxels ({SPACING} mm), labels 1-3 "
        "(organ, medium structure, 6 scattered lesions); per label Dice/IoU/precision/recall, HD95, "
        "Hausdorff, ASSD, surface Dice at 1 mm, volumes, lesion matching. The MONAI row computes Dice, HD95, "
        "ASSD and surface Dice only.\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {cpus} CPU cores (shared, so wall times "
        "vary); "
        f"{_versions()}. Writing the .nii.gz inputs took {written:.1f} s (not counted). The 2-worker row "
        "includes starting the worker server (it imports torch and MONAI once, seconds) and shares the "
        "cores with whatever else runs.\n\n{table}\n"
    )
    write_section("## metrics: `bench/metrics.py`", section)


if __name__ == "__main__":
    main()
