"""PraNet's multi-scale training: what it costs per step in `medattn.train`, on and off.

Both arms train the same network (pranet's CPU defaults unless `--model` says otherwise) on the sample
endoscopy frames (sample_data/endoscopy) with medattn's plan (patch, batch) for the same number of steps,
validation off. A step is one batch: one optimiser update without multi-scale, three with it (the batch at
0.75, 1 and 1.25 of the patch, rounded to the network's size divisor). Reported: steady-state steps per
second (the first steps, which include caching, left out) and updates per second, the median over
interleaved rounds, so a change of machine load hits both arms alike.

Accuracy at equal time is the 2D protocol's: ``bench/equal_time_2d.py protocol --arms pranet --variant
'pranet_single:model="pranet";multi_scale=false'``.

    nice -n 19 .venv/bin/python bench/multiscale.py [--steps 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from report import machine, write_section  # bench/report.py

import medattn
from medattn.training.multiscale import MULTI_SCALE_RATES

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "endoscopy"
WARMUP = 2


def step_rates(
    model: str, multi_scale: bool, steps: int, out: Path, batch: int | None
) -> tuple[float, float, list[int], int]:
    """Steady-state steps per wall second and CPU seconds per step of one `medattn.train` run (the training
    process's CPU time: on a shared machine it moves far less with the load than wall time), and the plan's
    patch and batch size."""
    stamps: list[tuple[float, float]] = []
    medattn.train(
        SAMPLES,
        model=model,
        out=out,
        device="cpu",
        epochs=1,
        steps_per_epoch=steps,
        val_fraction=0.0,
        multi_scale=multi_scale,
        batch=batch,
        on_step=lambda info: stamps.append((time.perf_counter(), time.process_time())),
    )
    plan = medattn.load_model(out).plan
    counted = len(stamps) - WARMUP
    wall = stamps[-1][0] - stamps[WARMUP - 1][0]
    cpu = stamps[-1][1] - stamps[WARMUP - 1][1]
    return counted / wall, cpu / counted, list(plan.patch_size), plan.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pranet", help="a 2D registry name")
    parser.add_argument("--steps", type=int, default=12, help="steps per run (the first 2 left out)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs per arm")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the plan's)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpu_seconds: dict[bool, list[float]] = {False: [], True: []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(args.rounds):
            for multi_scale in (False, True):
                out = Path(work) / f"run_{round_}_{int(multi_scale)}"
                rate, cpu, patch, batch = step_rates(args.model, multi_scale, args.steps, out, args.batch)
                rates[multi_scale].append(rate)
                cpu_seconds[multi_scale].append(cpu)
    load_after = os.getloadavg()[0]
    plain, multi = (statistics.median(rates[arm]) for arm in (False, True))
    plain_cpu, multi_cpu = (statistics.median(cpu_seconds[arm]) for arm in (False, True))
    updates = len(MULTI_SCALE_RATES)
    table = "\n".join(
        [
            "| training | steps/s | CPU s per step | CPU s per step vs single scale | updates per step |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| single scale (`--no-multi-scale`) | {plain:.3f} | {plain_cpu:.2f} | 1.00 | 1 |",
            f"| multi-scale 0.75/1/1.25 (`--multi-scale`) | {multi:.3f} | {multi_cpu:.2f} | "
            f"{multi_cpu / plain_cpu:.2f} | {updates} |",
        ]
    )
    summary = (
        f"A multi-scale step (one batch, {updates} updates) costs {multi_cpu / plain_cpu:.2f}x the CPU time "
        f"of a single-scale step ({plain / multi:.2f}x the wall time under this load); steps/s per run: "
        f"{', '.join(f'{r:.3f}' for r in rates[False])} vs {', '.join(f'{r:.3f}' for r in rates[True])}."
    )
    print(table)
    print(summary)
    if not args.no_write:
        frames = len(os.listdir(SAMPLES / "images"))
        command = f"--steps {args.steps} --rounds {args.rounds}"
        command += f" --batch {args.batch}" if args.batch else ""
        setup = (
            f"`nice -n 19 .venv/bin/python bench/multiscale.py {command}`. Speed: `medattn.train --model "
            f"{args.model}` (CPU defaults) on the {frames} sample endoscopy frames, patch {patch}, batch "
            f"{batch}, validation off; {args.steps} steps per run (first {WARMUP} left out), arms "
            f"interleaved, median of {args.rounds} runs each. "
            f"Load average {load_before:.1f} at the start, {load_after:.1f} at the end (shared 2-core "
            "machine, nice 19)."
        )
        write_section(
            "## multi-scale training, cost per step: `bench/multiscale.py`",
            f"{setup}\n\nMachine: {machine()}.\n\n{table}\n\n{summary}\n",
        )


if __name__ == "__main__":
    main()
