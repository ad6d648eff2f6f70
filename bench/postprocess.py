"""medattn's label-map postprocessing against MONAI's transforms on a CT-sized label map: time and equality.

Two 256 x 256 x 160 uint8 maps at 0.8 x 0.8 x 1.5 mm: three lesion labels of many blobs each, and 16
organ labels of one large blob and a few stray pieces each; both with ragged edges and holes, and a cavity
in label 1 holding a blob of label 3. For each operation it prints
medattn's time, MONAI's, their ratio (ours / MONAI's, below 1 = ours faster) and whether the maps are equal:

- keep largest component: `keep_largest_component` vs `KeepLargestConnectedComponent(is_onehot=False)`;
- fill holes: `fill_holes` vs `FillHoles()` and `FillHoles(connectivity=1)` (the background connectivity
  `scipy.ndimage.binary_fill_holes` uses);
- small components: `remove_small_components` vs `RemoveSmallObjects(by_measure=True)` on the label map,
  and on one binary mask per label recombined (what per-label, per-component removal needs from it).

Writes its section of BENCHMARKS.md (``--no-write`` skips it).

    python bench/postprocess.py [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np
import torch
from monai.transforms import FillHoles, KeepLargestConnectedComponent, RemoveSmallObjects
from scipy import ndimage

from medattn.inference import fill_holes, keep_largest_component, remove_small_components

HEADING = "## label-map postprocessing vs MONAI's: `bench/postprocess.py`"
# The comparisons on the page: MONAI's default FillHoles and its whole-map RemoveSmallObjects answer other
# questions (see the module docstring) and are printed only.
ON_PAGE = ("KeepLargestConnectedComponent", "FillHoles(connectivity=1)", "RemoveSmallObjects per label")

SHAPE = (256, 256, 160)
SPACING = (0.8, 0.8, 1.5)
MIN_ML = 0.05  # 0.05 mL = 52 voxels of 0.96 mm^3


# (label, large blobs, small blobs): lesions of three kinds, or 16 organs with a few stray pieces each.
LESIONS = ((1, 2, 12), (2, 2, 20), (3, 1, 30))
ORGANS = tuple((value, 1, 3) for value in range(1, 17))


def label_map(blobs, seed: int = 0) -> np.ndarray:
    """Ellipsoid blobs per label (large, then small), irregular edges, cavities in label 1's largest blob."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    labels = np.zeros(SHAPE, np.uint8)
    for value, big, small in blobs:
        for radius in [*rng.uniform(18, 35 if len(blobs) < 5 else 25, big), *rng.uniform(1.5, 5, small)]:
            centre = [rng.uniform(radius, n - radius) for n in SHAPE]
            axes = radius * rng.uniform(0.7, 1.3, 3)
            inside = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes, strict=True)) <= 1
            labels[inside] = value
    rough = ndimage.gaussian_filter(rng.random(SHAPE, dtype=np.float32), 1.0) > 0.56
    labels[rough & (labels > 0) & (rng.random(SHAPE) < 0.5)] = 0  # speckle: holes and small bits
    largest, count = ndimage.label(labels == 1)
    biggest = np.bincount(largest.ravel())[1:].argmax() + 1
    centre = np.round(ndimage.center_of_mass(largest == biggest)).astype(int)
    cavity = tuple(slice(c - 6, c + 6) for c in centre)
    labels[cavity] = 0
    labels[tuple(slice(c - 2, c + 2) for c in centre)] = 3  # another label inside the cavity
    return labels


def timed(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def monai_map(transform, labels: np.ndarray) -> np.ndarray:
    return np.asarray(transform(torch.from_numpy(labels[None].copy()))[0]).astype(labels.dtype)


def per_label_monai(transform, labels: np.ndarray) -> np.ndarray:
    result = np.zeros_like(labels)
    for value in np.unique(labels[labels > 0]):
        kept = np.asarray(transform(torch.from_numpy((labels == value)[None])))[0].astype(bool)
        result[kept] = value
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cells: dict[str, list[str]] = {}
    for name, blobs in (("3 lesion labels", LESIONS), ("16 organ labels", ORGANS)):
        labels = label_map(blobs)
        counts = [ndimage.label(labels == v, np.ones((3, 3, 3)))[1] for v, *_ in blobs]
        print(f"\n{name}: {SHAPE} uint8, components (26-conn.) per label {counts}, best of {args.repeats}")
        for row, cell in compare(labels, args.repeats).items():
            cells.setdefault(row, []).append(cell)
    if not args.no_write:
        from report import machine, write_section

        rows = "\n".join(f"| {row} | {' | '.join(values)} |" for row, values in cells.items())
        command = f"`.venv/bin/python -W ignore bench/postprocess.py --repeats {args.repeats}`"
        body = (
            f"{command}; {machine()}.\n\n256 x 256 x 160 uint8 maps at 0.8 x 0.8 x 1.5 mm; best of the "
            "repeats; "
            "ratio = ours / MONAI's (below 1: ours faster). MONAI's FillHoles also overwrites another label "
            "inside a hole; RemoveSmallObjects on a label map treats each label value as one object, and per "
            "label it also removes components of exactly the threshold.\n\n"
            "| medattn vs MONAI | 3 lesion labels: s ours / MONAI, ratio, same mask "
            "| 16 organ labels: s ours / MONAI, ratio, same mask |\n|---|---|---|\n" + rows + "\n\n"
        )
        write_section(f"{HEADING}", body)
        print(f"({datetime.date.today()}) section written")


def compare(labels: np.ndarray, repeats: int) -> dict[str, str]:
    """Print every comparison; return the page's cells ("ours / MONAI, ratio, same mask") by row name."""
    voxel_mm3 = float(np.prod(SPACING))
    cases = [
        (
            "keep_largest_component",
            lambda: keep_largest_component(labels),
            "KeepLargestConnectedComponent",
            lambda: monai_map(KeepLargestConnectedComponent(is_onehot=False), labels),
        ),
        (
            "fill_holes",
            lambda: fill_holes(labels),
            "FillHoles()",
            lambda: monai_map(FillHoles(), labels),
        ),
        (
            "fill_holes",
            lambda: fill_holes(labels),
            "FillHoles(connectivity=1)",
            lambda: monai_map(FillHoles(connectivity=1), labels),
        ),
        (
            "remove_small_components",
            lambda: remove_small_components(labels, MIN_ML, SPACING),
            "RemoveSmallObjects on the map",
            lambda: monai_map(
                RemoveSmallObjects(MIN_ML * 1000, connectivity=3, by_measure=True, pixdim=SPACING), labels
            ),
        ),
        (
            "remove_small_components",
            lambda: remove_small_components(labels, MIN_ML, SPACING),
            "RemoveSmallObjects per label",
            lambda: per_label_monai(
                RemoveSmallObjects(MIN_ML * 1000, connectivity=3, by_measure=True, pixdim=SPACING), labels
            ),
        ),
    ]
    print(f"{'medattn':26s} {'MONAI':32s} {'ours s':>8s} {'MONAI s':>8s} {'ratio':>6s}  equal  voxels differ")
    cells = {}
    for ours_name, ours, monai_name, theirs in cases:
        ours_s, ours_map = timed(ours, repeats)
        monai_s, monai_result = timed(theirs, repeats)
        differ = int((ours_map != monai_result).sum())
        differ_ml = differ * voxel_mm3 / 1000
        print(
            f"{ours_name:26s} {monai_name:32s} {ours_s:8.3f} {monai_s:8.3f} {ours_s / monai_s:6.2f}  "
            f"{differ == 0!s:5s}  {differ} ({differ_ml:.2f} mL)"
        )
        if monai_name in ON_PAGE:
            same = "yes" if differ == 0 else f"no ({differ_ml:.2f} mL)"
            row = f"{ours_name} vs {monai_name}"
            cells[row] = f"{ours_s:.3f} / {monai_s:.3f}, {ours_s / monai_s:.2f}, {same}"
    return cells


if __name__ == "__main__":
    main()
