"""What the equal-time protocols (`equal_time.py` in 3D, `equal_time_2d.py` in 2D) share: one process per
run, one JSON per run, and mean ± sd over seeds.

A protocol is datasets x seeds x arms. Each run is its own process (`SCRIPT run ...`) that leaves
``RESULTS/<dataset>_s<data seed>/<arm>_seed<seed>.json``, so a protocol stopped early continues where it
stopped, and one crashed run does not take the others with it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np


def spread(values: list[float]) -> str:
    """'mean ± sd' over seeds (population sd), or the value alone for one seed."""
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def variant_arms(base: list[str], variants: list[str], arm: str = "medattn") -> list[tuple[str, list[str]]]:
    """(arm, extra `run` arguments) for the base arms and each ``NAME:KEY=JSON;KEY=JSON`` variant of `arm`."""
    arms: list[tuple[str, list[str]]] = [(name, []) for name in base]
    for name, sets in (v.split(":", 1) for v in variants):
        pairs = sum((["--set", *s.split("=", 1)] for s in sets.split(";")), [])
        arms.append((arm, ["--name", name, *pairs]))
    return arms


def run_protocol(
    script: str,
    results: Path,
    datasets: list[str],
    seeds: list[int],
    arms: list[tuple[str, list[str]]],
    data_seed: int,
    seconds: float,
) -> None:
    """Every seed x dataset x arm without a result yet, each as ``python SCRIPT run ...`` in its own process.

    Seed by seed, so a protocol stopped early has results on every dataset, and the arms of one seed run
    back to back (closest in time, so under the same load).
    """
    for seed in seeds:
        for dataset in datasets:
            for arm, extra in arms:
                name = extra[1] if extra else arm
                if (results / f"{dataset}_s{data_seed}" / f"{name}_seed{seed}.json").is_file():
                    continue
                command = [sys.executable, script, "run", "--dataset", dataset, "--arm", arm]
                command += ["--seed", str(seed), "--data-seed", str(data_seed), "--seconds", str(seconds)]
                command += extra
                print(" ".join(command), flush=True)
                subprocess.run(command, check=False)
