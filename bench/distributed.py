"""`predict --ray` against the in-process loop on the same cases: cases per second and Ray's cost per case.

The cases: the sample brain MRIs, copied (each copy its own case) to two folder sizes, segmented by the
sample brain package on CPU at predict's defaults. Arms, on one local Ray cluster started once (its start
is timed apart, as a cluster joined with `--ray auto` is already running):

1. in process: `medattn.predict(folder, out, package)`, torch on every core;
2. Ray, 1 worker holding every core (`workers=1, cpus_per_worker=<cores>`): the same compute as 1, so the
   difference is what Ray costs;
3. Ray, one worker per core (`workers=<cores>, cpus_per_worker=1`).

Each arm predicts both folders; its wall time is a line in the number of cases: the slope is its seconds
per case once running, the intercept its start (for Ray: starting the workers, each a process that imports
torch, loads the package and builds its kernels on its first cases; the in-process arm runs after an
untimed warm-up run). (Results reach the caller of a Ray run in bursts, so times between them say
little.) Ray's cost per case is arm 2's slope minus arm 1's, also as a share of arm 1's. The masks of every
arm are compared with arm 1's. Writes its section of BENCHMARKS.md.
Run: nice -n 19 .venv/bin/python bench/distributed.py [--copies 1,3] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from report import machine, write_section

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "sample_data" / "brain_mri").glob("images*/*.nii.gz"))
PACKAGE = ROOT / "sample_data" / "models" / "brain_mri"


def timed_run(folder: Path, out: Path, **options) -> float:
    """Wall seconds of one prediction of the folder, every case done."""
    import medattn

    started = time.perf_counter()
    results = medattn.predict(folder, out, PACKAGE, device="cpu", **options)
    wall = time.perf_counter() - started
    failed = [r for r in results if r.status != "done"]
    if failed:
        raise SystemExit(f"failed: {failed}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="1,3", help="copies of the sample cases in the two folders")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every arm (best is reported)")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    import logging

    import ray

    cores = len(os.sched_getaffinity(0))
    arms = {
        "in process (medattn.predict)": {},
        f"Ray, 1 worker x {cores} CPUs": {"ray": "local", "workers": 1, "cpus_per_worker": cores},
        f"Ray, {cores} workers x 1 CPU": {"ray": "local", "workers": cores, "cpus_per_worker": 1},
    }
    copies = [int(v) for v in args.copies.split(",")]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        folders = []
        for count in copies:
            folder = work / f"scans_{count}"
            folder.mkdir()
            for copy in range(count):
                for sample in SAMPLES:
                    shutil.copy(sample, folder / sample.name.replace("_0000", f"c{copy}_0000"))
            folders.append(folder)
        sizes = [len(list(folder.iterdir())) for folder in folders]
        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        cluster_start = time.perf_counter() - started
        # Untimed: this process's first prediction builds oneDNN's kernels for each grid, which a worker
        # does on its first cases (part of its start, the intercept).
        timed_run(folders[0], work / "warm_up")
        walls: dict[str, float] = {}
        try:
            for round_index in range(args.rounds):
                for arm, (name, options) in enumerate(arms.items()):
                    for folder, size in zip(folders, sizes, strict=True):
                        wall = timed_run(folder, work / f"out_{arm}_{size}_{round_index}", **options)
                        print(f"round {round_index + 1}, {name}, {size} cases: {wall:.1f} s", flush=True)
                        key = f"{name}|{size}"
                        walls[key] = min(walls.get(key, wall), wall)
        finally:
            ray.shutdown()
        same = all(
            np.array_equal(
                np.asarray(nib.load(work / f"out_{arm}_{sizes[-1]}_0" / mask.name).dataobj),
                np.asarray(nib.load(mask).dataobj),
            )
            for arm in range(1, len(arms))
            for mask in (work / f"out_0_{sizes[-1]}_0").glob("brain_*.nii.gz")
        )
    fits = {}
    for name in arms:
        small, big = walls[f"{name}|{sizes[0]}"], walls[f"{name}|{sizes[-1]}"]
        slope = (big - small) / (sizes[-1] - sizes[0])
        fits[name] = (slope, small - slope * sizes[0], small, big)
    rows = [
        f"| arm | wall s, {sizes[0]} cases | wall s, {sizes[-1]} cases | cases/s, {sizes[-1]} cases | "
        "s per case (slope) | cases/s running | start s (intercept) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (slope, intercept, small, big) in fits.items():
        rows.append(
            f"| {name} | {small:.1f} | {big:.1f} | {sizes[-1] / big:.3f} | {slope:.2f} | {1 / slope:.3f} | "
            f"{intercept:.1f} |"
        )
    table = "\n".join(rows)
    plain = fits["in process (medattn.predict)"]
    one_worker = fits[f"Ray, 1 worker x {cores} CPUs"]
    overhead = one_worker[0] - plain[0]
    reading = (
        "below what this machine measures: the worker ran its cases faster than the in-process loop, which "
        "reads the next case on a third thread while torch's threads hold every core (a worker given one "
        "case per batch reads it first)"
        if overhead < 0
        else "what Ray adds to every case: moving its description and result, recording it in the driver"
    )
    summary = (
        f"Ray's cost per case (1 worker with every core vs in process, slopes): {overhead:+.2f} s = "
        f"{100 * overhead / plain[0]:+.1f} % of a case's {plain[0]:.2f} s, {reading}. Starting the local "
        f"cluster (once, not in the table): {cluster_start:.1f} s; starting the workers (import torch, load "
        f"the package, first kernels): {one_worker[1] - plain[1]:+.1f} s beyond the in-process start. Masks "
        f"equal to in process in every arm: {'yes' if same else 'NO'}."
    )
    print(table)
    print(summary)
    if not args.no_write:
        write_section(
            "## many scans on Ray vs in process: `bench/distributed.py`",
            f"`nice -n 19 .venv/bin/python bench/distributed.py {' '.join(sys.argv[1:])}`. Cases: the "
            f"{len(SAMPLES)} sample brain MRIs copied {' and '.join(map(str, copies))} times "
            f"({' and '.join(map(str, sizes))} cases), package sample_data/models/brain_mri, predict's "
            f"defaults, float32 on CPU; best of {args.rounds} round(s). Run at nice 19 on a shared machine "
            f"(load average {load:.1f} at the start): wall times vary with the other jobs.\n\n"
            f"Machine: {machine(ray=ray.__version__)}.\n\n{table}\n\n{summary}\n",
        )


if __name__ == "__main__":
    main()
