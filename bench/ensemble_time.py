"""What an ensemble costs: N members against N runs of one member, time and memory, through `medattn.predict`.

The sample brain package is copied into N member folders (the same weights: what is timed is the work,
which does not depend on them) and the sample test scans are predicted three ways, round by round so that
machine load hits every arm alike:

1. one member alone (``-m fold_0``), the reference;
2. the ensemble of N (``-m fold_0 ... -m fold_N-1``): every member on every case, probabilities averaged;
3. the same ensemble with ``--uncertainty`` (maps, disagreement, components.csv).

Reported: the median seconds of each arm, the ratio ensemble / (N x one member) (target: at most 1.10,
issue 21) and the peak resident memory above the start of each arm (an ensemble holds one more network
and one running sum of probabilities, whatever N is). Writes its section of BENCHMARKS.md.

    .venv/bin/python bench/ensemble_time.py [--members 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from inference import PeakMemory  # bench/inference.py
from report import machine, write_section

import medattn

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sample_data" / "models" / "brain_mri"
SCANS = ROOT / "sample_data" / "brain_mri" / "imagesTs"
HEADING = "## what an ensemble costs, N members vs N x one member: `bench/ensemble_time.py`"


def timed_predict(out: Path, members: list[Path], uncertainty: bool) -> tuple[float, float]:
    """Seconds and peak MB above the start of one `medattn.predict` over the sample test scans."""
    shutil.rmtree(out, ignore_errors=True)
    with PeakMemory() as memory:
        start = time.perf_counter()
        results = medattn.predict(SCANS, out, members, device="cpu", uncertainty=uncertainty)
        seconds = time.perf_counter() - start
    if any(r.status != "done" for r in results):
        sys.exit(f"a case failed: {[r for r in results if r.status != 'done']}")
    return seconds, memory.above_start_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        members = [Path(shutil.copytree(PACKAGE, work / f"fold_{k}")) for k in range(args.members)]
        arms = {
            "one member": (members[:1], False),
            f"ensemble of {args.members}": (members, False),
            f"ensemble of {args.members}, --uncertainty": (members, True),
        }
        timed_predict(work / "warm-up", members[:1], False)
        seconds = {arm: [] for arm in arms}
        peaks = {arm: [] for arm in arms}
        for _ in range(args.rounds):
            for arm, (packages, uncertainty) in arms.items():
                spent, peak = timed_predict(work / "out", packages, uncertainty)
                seconds[arm].append(spent)
                peaks[arm].append(peak)
    one = statistics.median(seconds["one member"])
    cases = len(list(SCANS.glob("*.nii.gz")))
    rows = [
        "| arm | median s | / (members x one member) | peak MB above start |",
        "| --- | ---: | ---: | ---: |",
    ]
    for arm, (packages, _) in arms.items():
        median = statistics.median(seconds[arm])
        rows.append(
            f"| {arm} | {median:.2f} | {median / (len(packages) * one):.3f} | {max(peaks[arm]):.0f} |"
        )
    table = "\n".join(rows)
    print(table)
    if not args.no_write:
        body = (
            f"`.venv/bin/python bench/ensemble_time.py --members {args.members} --rounds {args.rounds}`; "
            f"{machine()}. The sample brain package copied into {args.members} members, {cases} sample test "
            f"scans through `medattn.predict` (reading, writing, volumes.csv included), {args.rounds} "
            "interleaved rounds after a warm-up; target: the ensemble within 1.10 x members x one member.\n\n"
            + table
            + "\n"
        )
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
