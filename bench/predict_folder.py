"""A folder of scans end to end: `medattn predict`'s pipeline vs a plain MONAI loop over the files.

What a user runs on a study: every sample brain MRI (6 cases, 4 scanners' grids) resampled to a finer
grid (default 1 mm, about 150 x 190 x 160 voxels each) and stored as int16 NIfTI, as scanners give them,
segmented by one model package (`--package`, `--train SECONDS` of the default AGUNet, or by default
seeded random weights) at overlap 0.5 with 4 windows per batch, float32 on CPU:

1. plain MONAI, written the obvious way: for each file, the script of `bench/predict.py` (LoadImaged,
   Orientationd, Spacingd, NormalizeIntensityd, `sliding_window_inference`, softmax, Invertd, argmax,
   SaveImage);
2. medattn: `medattn.pipelines.predict.predict(folder, ...)`, what `medattn predict FOLDER OUT -m PKG` runs
   (discovery, read-ahead of the next case, prediction, masks, volumes.csv and predict.json per case).

With `--pipelined`, a third arm forces the CUDA default on CPU: preprocessing on the reader thread and the
way back to the input grid plus writing on a writer thread while the next case's windows run.

The arms alternate round by round so machine load hits both alike. Against the sum of the network's
forward alone on every case's windows, the pipeline's overhead is what a folder costs beyond the model
(reading overlaps the previous case's prediction, so it is hidden where the model runs long enough).
Masks are compared per label (Dice, medattn vs plain). Writes its section of BENCHMARKS.md.
Run: .venv/bin/python bench/predict_folder.py [--rounds 2] [--spacing 1.0] [--package PKG | --train 150]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from inference import PeakMemory  # bench/inference.py
from predict import (
    OVERLAP,
    SAMPLE,
    SW_BATCH,
    forward_seconds,
    plain_monai,
    random_package,
    smallest_dice,
    trained_package,
)
from report import machine, write_section

from medattn.io import load_image
from medattn.package import load_package

SAMPLES = sorted(SAMPLE.parents[1].glob("images*/*.nii.gz"))


def finer_int16_case(source: Path, folder: Path, spacing: float) -> Path:
    """`source` resampled (trilinear) to `spacing` mm and rounded to int16, as a scanner stores it."""
    image = load_image(source)
    zooms = np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0) / spacing
    size = [int(round(s * z)) for s, z in zip(image.shape[1:], zooms, strict=True)]
    data = torch.nn.functional.interpolate(image[None].as_tensor(), size=size, mode="trilinear")[0, 0]
    affine = np.asarray(image.affine, dtype=np.float64).copy()
    affine[:3, :3] = affine[:3, :3] / zooms
    path = folder / source.name
    nib.save(nib.Nifti1Image(data.round().numpy().astype(np.int16), affine), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per arm (best is reported)")
    parser.add_argument("--spacing", type=float, default=1.0, help="grid of the test cases in mm")
    parser.add_argument("--package", type=Path, help="a model package folder (default: random AGUNet)")
    parser.add_argument(
        "--train", type=float, metavar="SECONDS", help="train the default AGUNet this long (1.5 mm) instead"
    )
    parser.add_argument(
        "--pipelined", action="store_true", help="also time medattn pipelined (the CUDA default) on CPU"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    import medattn
    from medattn.pipelines.predict import predict

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        folder = work / "scans"
        folder.mkdir()
        paths = [finer_int16_case(source, folder, args.spacing) for source in SAMPLES]
        if args.train:
            package = trained_package(work / "trained", args.train)
        else:
            package = args.package or random_package(work / "package")
        network, config = load_package(package)
        plain_times, medattn_times, plain_memory, medattn_memory = [], [], [], []
        pipelined_times, pipelined_memory = [], []
        for round_index in range(args.rounds):
            plain_out = work / f"plain_{round_index}"
            with PeakMemory() as memory:
                start = time.perf_counter()
                plain_masks = {path.name: plain_monai(network, config, path, plain_out) for path in paths}
                plain_times.append(time.perf_counter() - start)
            plain_memory.append(memory.above_start_mb)
            out = work / f"medattn_{round_index}"
            with PeakMemory() as memory:
                start = time.perf_counter()
                results = predict(folder, out, package, device="cpu", overlap=OVERLAP, sw_batch_size=SW_BATCH)
                medattn_times.append(time.perf_counter() - start)
            medattn_memory.append(memory.above_start_mb)
            failed = [r for r in results if r.status != "done"]
            if failed:
                raise SystemExit(f"medattn failed on {failed}")
            if args.pipelined:
                with PeakMemory() as memory:
                    start = time.perf_counter()
                    options = {"overlap": OVERLAP, "sw_batch_size": SW_BATCH, "pipelined": True}
                    pipelined_results = predict(
                        folder, work / f"pipelined_{round_index}", package, device="cpu", **options
                    )
                    pipelined_times.append(time.perf_counter() - start)
                pipelined_memory.append(memory.above_start_mb)
                failed = [r for r in pipelined_results if r.status != "done"]
                if failed:
                    raise SystemExit(f"medattn pipelined failed on {failed}")
                results += pipelined_results  # its masks are compared with plain MONAI's too
            print(
                f"round {round_index + 1}: plain MONAI {plain_times[-1]:.2f} s, "
                f"medattn {medattn_times[-1]:.2f} s"
                + (f", pipelined {pipelined_times[-1]:.2f} s" if args.pipelined else "")
                + f" for {len(paths)} cases"
            )
        predictor = medattn.load_model(package, device="cpu", overlap=OVERLAP, sw_batch_size=SW_BATCH)
        forward = sum(forward_seconds(predictor, path) for path in paths)
        labels = [value for value in config.plan.labels if value]
        agreement = min(
            smallest_dice(
                np.asarray(nib.load(result.output).dataobj),
                plain_masks[f"{result.case}_0000.nii.gz"],
                labels,
            )
            for result in results
        )
        shapes = [tuple(nib.load(path).shape) for path in paths]
    cases = len(paths)
    best_medattn, best_plain = min(medattn_times), min(plain_times)
    overhead = best_medattn - forward
    table = "\n".join(
        [
            "| what | best s | s per case | peak RSS above start MB |",
            "| --- | ---: | ---: | ---: |",
            f"| plain MONAI loop over the files | {best_plain:.2f} | {best_plain / cases:.2f} | "
            f"{max(plain_memory):.0f} |",
            f"| medattn predict FOLDER | {best_medattn:.2f} | {best_medattn / cases:.2f} | "
            f"{max(medattn_memory):.0f} |",
            *(
                [
                    f"| medattn predict FOLDER, pipelined | {min(pipelined_times):.2f} | "
                    f"{min(pipelined_times) / cases:.2f} | {max(pipelined_memory):.0f} |"
                ]
                if args.pipelined
                else []
            ),
            f"| network forward alone on every case's windows | {forward:.2f} | {forward / cases:.2f} | |",
        ]
    )
    summary = (
        f"Speed-up, plain MONAI / medattn (best of {args.rounds}): {best_plain / best_medattn:.2f}x; "
        f"medattn's pipeline beyond the forward: {overhead / cases:.2f} s per case = "
        f"{100 * overhead / forward:.0f} % of the forward time; smallest Dice per label and case, "
        f"medattn vs plain: {agreement:.5f}."
    )
    print(table)
    print(summary)
    if not args.no_write:
        package_name = (
            f"default AGUNet trained {args.train:.0f} s on the brain samples, 1.5 mm, patch 64^3"
            if args.train
            else args.package or "AGUNet (CPU default), random weights, 1.5 mm, patch 64^3"
        )
        write_section(
            "## a folder end to end vs a plain MONAI loop: `bench/predict_folder.py`",
            f"`.venv/bin/python bench/predict_folder.py {' '.join(sys.argv[1:])}`. "
            f"Cases: the {cases} sample brain MRIs resampled to {args.spacing} mm, int16 NIfTI "
            f"({min(shapes)} to {max(shapes)} voxels); package: {package_name}; overlap {OVERLAP}, "
            f"{SW_BATCH} windows per batch, float32 on CPU.\n\n"
            f"Machine: {machine()}.\n\n{table}\n\n{summary}\n",
        )


if __name__ == "__main__":
    main()
