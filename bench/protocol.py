"""What the equal-time protocols (`equal_time.py` in 3D, `equal_time_2d.py` in 2D) share: one process per
run, one JSON per run, and mean ± sd over seeds.

A protocol is datasets x seeds x arms. Each run is its own process (`SCRIPT run ...`) that leaves
``RESULTS/<dataset>_s<data seed>/<arm>_seed<seed>.json``, so a protocol stopped early continues where it
stopped, and one crashed run does not take the others with it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def spread(values: list[float]) -> str:
    """'mean ± sd' over seeds (population sd), or the value alone for one seed."""
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def run_stem(args: argparse.Namespace, results: Path) -> Path:
    """Where one run's files go, without suffix: ``results/<dataset>_s<data seed>/<name>_seed<seed>``."""
    return results / f"{args.dataset}_s{args.data_seed}" / f"{args.name or args.arm}_seed{args.seed}"


def write_result(args: argparse.Namespace, results: Path, measured: dict, shown: tuple[str, ...]) -> Path:
    """One run's JSON (what was run, then `measured`) at its protocol path; prints the `shown` keys."""
    import torch

    result = {
        "dataset": args.dataset,
        "data_seed": args.data_seed,
        "arm": args.name or args.arm,
        "options": {key: json.loads(value) for key, value in args.set},
        "seed": args.seed,
        "seconds": args.seconds if getattr(args, "steps", None) is None else None,
        "threads": torch.get_num_threads(),
        **measured,
    }
    stem = run_stem(args, results)
    path = stem.with_name(stem.name + ".json")  # not with_suffix: a variant's name may hold a dot
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({key: result[key] for key in ("arm", "seed", *shown)}))
    return path


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


def protocol_parser(
    description: str, datasets: list[str], arms: list[str], seconds: float
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The `run`, `protocol` and `report` commands both protocols share: (parser, run's, report's), for each
    script's own options. `run` takes one dataset, arm, seed and variant; `protocol` every missing run of
    datasets x seeds x arms plus ``--variant NAME:KEY=JSON;KEY=JSON``."""
    parser = argparse.ArgumentParser(description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("run", help="one arm, one dataset, one seed")
    one.add_argument("--dataset", choices=datasets, default=datasets[0])
    one.add_argument("--arm", choices=arms, default="medattn")
    one.add_argument("--name", help="the variant's name in the results (default: the arm)")
    one.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "JSON"))
    one.add_argument("--seed", type=int, default=0)
    many = commands.add_parser("protocol", help="datasets x seeds x arms, skipping finished runs")
    many.add_argument("--datasets", nargs="+", choices=datasets, default=datasets)
    many.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    many.add_argument("--arms", nargs="+", choices=arms, default=arms)
    many.add_argument("--variant", action="append", default=[], help="NAME:KEY=JSON;KEY=JSON")
    for command in (one, many):
        command.add_argument("--data-seed", type=int, default=1, help="1: test data; 1000: tuning")
        command.add_argument("--seconds", type=float, default=seconds, help="training wall time per run")
    summary = commands.add_parser("report", help="tables of mean ± sd over seeds")
    summary.add_argument("--data-seed", type=int, default=1)
    return parser, one, summary


def dispatch(args: argparse.Namespace, script: str, results: Path, run, report) -> None:
    """Run the parsed command: `run(args)` with ``args.set`` as (key, JSON) pairs, the protocol, or
    `report(args)`."""
    if args.command == "run":
        args.set = [tuple(pair) for pair in args.set]
        run(args)
    elif args.command == "protocol":
        arms = variant_arms(args.arms, args.variant)
        run_protocol(script, results, args.datasets, args.seeds, arms, args.data_seed, args.seconds)
    else:
        report(args)
