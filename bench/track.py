"""Benchmark `medattn track`: rigid registration time and accuracy, measures from true masks, the cost of a
three-visit follow-up with a model over predicting the same scans.

1. Registration (`medattn.longitudinal.registration.register_rigid`, SimpleITK): the sample brain MRI
   (sample_data/brain_mri brain_001) resampled to 1.5 mm and padded to a 240 x 240 x 180 mm field of view
   is the baseline; each follow-up is it moved by a
   rigid motion made here (rotations up to 10 degrees about each axis, translations up to 20 mm along
   each), with 3 % Gaussian noise and a 10 % intensity gain (another session). Residual: the distance
   between where the found and the true transform put each voxel of the head (intensity above 10 % of
   the maximum), mean and maximum. Targets: under 20 s and under 1 mm.
2. Measures from true masks (tests/follow_up.py's visits, 3 mm): every lesion volume equals its voxel
   count times the voxel volume, every doubling time the least-squares fit.
3. Three visits of 1.5 mm with the sample model: `medattn.track --model` against `medattn.predict` of the
   same three scans in the same process; target: the difference under 30 s.

Run (on a shared machine, with the lowest priority): nice -n 19 .venv/bin/python bench/track.py
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from report import machine, write_section  # bench/report.py (scripts run from bench/ on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic follow-up the tests use

from follow_up import baseline_scan, make_follow_up  # noqa: E402

import medattn  # noqa: E402
from medattn.longitudinal.growth import doubling_time_days  # noqa: E402
from medattn.longitudinal.registration import register_rigid  # noqa: E402

MODEL = ROOT / "sample_data" / "models" / "brain_mri"
MAX_DEGREES = 10.0
MAX_SHIFT_MM = 20.0
#: Field of view of the registered scans, mm: a brain MRI's (the sample head itself spans 150 x 190 x 164).
FIELD_MM = (240.0, 240.0, 180.0)


def motions(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(degrees about x, y, z; shift mm): the extreme corner first, then random ones within the bounds."""
    rng = np.random.default_rng(seed)
    made = [
        (np.full(3, MAX_DEGREES), np.full(3, MAX_SHIFT_MM)),
        (np.array([-1.0, 1, -1]) * MAX_DEGREES, np.array([1.0, -1, 1]) * MAX_SHIFT_MM),
    ]
    while len(made) < count:
        made.append((rng.uniform(-MAX_DEGREES, MAX_DEGREES, 3), rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)))
    return made[:count]


def brain_scan_1p5mm() -> sitk.Image:
    """The sample head at 1.5 mm, padded with air to a clinical field of view (FIELD_MM)."""
    head = baseline_scan(1.5)
    missing = [max(0, round(mm / 1.5) - n) for mm, n in zip(FIELD_MM, head.GetSize(), strict=True)]
    return sitk.ConstantPad(head, [m // 2 for m in missing], [m - m // 2 for m in missing], 0.0)


def registration_rows(count: int) -> tuple[list[dict], tuple[int, ...]]:
    fixed = brain_scan_1p5mm()
    array = sitk.GetArrayFromImage(fixed)
    head = np.argwhere(array > 0.1 * array.max())[:, ::-1]  # (i, j, k) of the head's voxels
    points = np.array([fixed.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in head[::7]])
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    rng = np.random.default_rng(1)
    rows = []
    for degrees, shift in motions(count):
        moved = sitk.Euler3DTransform(centre, *np.radians(degrees), tuple(float(v) for v in shift))
        moving = sitk.Resample(fixed, fixed, moved, sitk.sitkLinear, 0.0) * 1.1
        noisy = sitk.GetArrayFromImage(moving)
        noisy += rng.normal(0, 0.03 * float(noisy.max()), noisy.shape).astype(np.float32)
        moving_noisy = sitk.GetImageFromArray(noisy)
        moving_noisy.CopyInformation(moving)
        result = register_rigid(fixed, moving_noisy)
        truth = moved.GetInverse()  # baseline point -> follow-up point
        found = np.array([result.transform.TransformPoint(tuple(p)) for p in points])
        expected = np.array([truth.TransformPoint(tuple(p)) for p in points])
        error = np.linalg.norm(found - expected, axis=1)
        rows.append(
            {
                "motion": f"{np.round(degrees, 1).tolist()} deg, {np.round(shift, 1).tolist()} mm",
                "seconds": result.seconds,
                "mean_mm": float(error.mean()),
                "max_mm": float(error.max()),
            }
        )
        print(rows[-1], flush=True)
    return rows, fixed.GetSize()


def true_mask_check(folder: Path) -> tuple[float, float]:
    """(largest |volume - voxels x voxel volume| in mL, largest |doubling time - fit| in days)."""
    follow_up = make_follow_up(folder / "true")
    result = medattn.track(follow_up.scans, out=folder / "true_out", masks=follow_up.masks)
    volume_error = 0.0
    for visit in result.visits:
        mask = nib.load(follow_up.masks / f"{visit['case']}.nii.gz")
        voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000.0
        total = sum(r.volume_ml for r in result.lesions if r.date == visit["date"])
        volume_error = max(volume_error, abs(total - float(np.asarray(mask.dataobj).sum()) * voxel_ml))
    fit_error = 0.0
    for row in result.growth:
        present = [r for r in result.lesions if r.lesion == row.lesion and r.status != "vanished"]
        fit = doubling_time_days([r.days for r in present], [r.volume_ml for r in present])
        if (fit is None) != (row.doubling_time_days is None):
            fit_error = math.inf
        elif fit is not None:
            fit_error = max(fit_error, abs(fit - row.doubling_time_days))
    return volume_error, fit_error


def model_times(folder: Path) -> tuple[float, float, int]:
    """(predict seconds, track seconds, voxels per scan) for three 1.5 mm visits and the sample model."""
    follow_up = make_follow_up(folder / "visits", spacing=1.5)
    medattn.predict(follow_up.scans[0], folder / "warm", MODEL)  # imports and first-call costs, not counted
    started = time.perf_counter()
    medattn.predict(folder / "visits" / "scans", folder / "predicted", MODEL)
    predict_seconds = time.perf_counter() - started
    started = time.perf_counter()
    medattn.track(folder / "visits" / "scans", out=folder / "tracked", model=MODEL)
    track_seconds = time.perf_counter() - started
    voxels = int(np.prod(nib.load(follow_up.scans[0]).shape))
    return predict_seconds, track_seconds, voxels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--motions", type=int, default=6, help="rigid motions to register")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    where = machine(SimpleITK=sitk.Version.VersionString())
    rows, size = registration_rows(args.motions)
    folder = Path(tempfile.mkdtemp(prefix="bench_track_"))
    try:
        volume_error, fit_error = true_mask_check(folder)
        predict_seconds, track_seconds, voxels = model_times(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = ["| motion (rotation about x, y, z; shift) | time s | residual mean mm | residual max mm |"]
    lines.append("| --- | ---: | ---: | ---: |")
    lines += [
        f"| {r['motion']} | {r['seconds']:.1f} | {r['mean_mm']:.3f} | {r['max_mm']:.3f} |" for r in rows
    ]
    table = "\n".join(lines)
    worst_time = max(r["seconds"] for r in rows)
    worst_error = max(r["max_mm"] for r in rows)
    extra = track_seconds - predict_seconds
    summary = (
        f"- registration of two 1.5 mm brain MRIs ({size[0]}x{size[1]}x{size[2]} voxels): at most "
        f"{worst_time:.1f} s (target < 20 s), residual at most {worst_error:.3f} mm (target < 1 mm);\n"
        "- from true masks: volumes differ from voxel count x voxel volume by at most "
        f"{volume_error:.1e} mL, doubling times from the least-squares fit by at most {fit_error:.2f} days "
        "(rounding to 0.1 day);\n"
        f"- three 1.5 mm visits ({voxels} voxels each) with the sample model: predict "
        f"{predict_seconds:.1f} s, track {track_seconds:.1f} s: track = predict + {extra:.1f} s "
        "(target: + under 30 s; ratio "
        f"{track_seconds / predict_seconds:.2f})."
    )
    print(table)
    print(summary)
    if args.no_write:
        return
    section = (
        "`nice -n 19 .venv/bin/python bench/track.py` (lowest priority on a shared machine: wall times are "
        "upper bounds). Registration: SimpleITK's framework (Mattes mutual information, regular-step "
        "gradient descent, Euler3DTransform started by CenteredTransformInitializer on moments, three levels "
        "of 8, 4 mm and full resolution, 32 histogram bins, 60,000 random samples of the head (Otsu mask)); "
        "the baseline is the sample head at 1.5 mm in a 240 x 240 x 180 mm field of view; each follow-up is "
        "it moved by the motion in the table, with 3 % noise and a 10 % intensity gain; residual over the "
        "head's voxels.\n\n"
        f"Machine: {where}.\n\n{summary}\n\n{table}\n\n"
        "Ruled out: plain gradient descent at a fixed learning rate (SimpleITK's introductory recipe) "
        "stopped after about 10 iterations 6 to 24 mm off on such motions of the 2 mm sample; sampling the "
        "whole field of view instead of the head: 1.6 and 2.9 mm off on the two largest motions (38 s); 50 "
        "histogram bins: up to 1.06 mm off; itk-elastix and ANTsPy were not needed "
        "(SimpleITK, already a dependency, meets both targets with a wide margin)."
    )
    write_section("## track: `bench/track.py`", section)


if __name__ == "__main__":
    main()
