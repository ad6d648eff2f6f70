"""What the speed flags of `medattn predict` cost in accuracy: --overlap and --tta on the brain test cases.

Fewer overlapping windows and no mirror TTA are the usual ways to buy speed; this measures, with a trained
package (default: the demo package in sample_data/models/brain_mri, trained on the brain training cases),
the seconds per case and the Dice per label against the reference labels of the held-out test cases
(imagesTs/labelsTs), plus the agreement (smallest Dice per label) with the default setting (overlap 0.5,
no TTA). Writes its section of BENCHMARKS.md.

    .venv/bin/python bench/tradeoffs.py [--package PKG] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from report import machine, write_section  # bench/ is on sys.path when run as a script

import medattn
from medattn.metrics.overlap import dice

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data" / "brain_mri"
SETTINGS = [  # (overlap, tta); the first is the default every other row is compared with
    (0.5, False),
    (0.25, False),
    (0.75, False),
    (0.5, True),
    (0.25, True),
]


def run_setting(package: Path, overlap: float, tta: bool, rounds: int) -> tuple[float, dict[str, np.ndarray]]:
    """Best-of-`rounds` total seconds over the test cases, and each case's mask."""
    predictor = medattn.load_model(package, device="cpu", overlap=overlap, tta=tta)
    images = sorted((SAMPLES / "imagesTs").glob("*.nii.gz"))
    times, masks = [], {}
    for _ in range(rounds):
        start = time.perf_counter()
        for path in images:
            masks[path.name.replace("_0000", "")] = predictor.predict(path)[0].numpy()
        times.append(time.perf_counter() - start)
    return min(times), masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=ROOT / "sample_data" / "models" / "brain_mri")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per setting (best is reported)")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    labels = {int(k): v for k, v in medattn.load_model(args.package).config.plan.labels.items() if int(k)}
    references = {
        path.name: np.asarray(nib.load(path).dataobj)
        for path in sorted((SAMPLES / "labelsTs").glob("*.nii.gz"))
    }
    rows, default_masks, default_seconds = [], None, None
    for overlap, tta in SETTINGS:
        seconds, masks = run_setting(args.package, overlap, tta, args.rounds)
        if default_masks is None:
            default_masks, default_seconds = masks, seconds
        scores = {
            name: np.mean([dice(masks[case] == value, ref == value) for case, ref in references.items()])
            for value, name in labels.items()
        }
        agreement = min(
            dice(masks[case] == value, default_masks[case] == value) for case in masks for value in labels
        )
        rows.append(
            f"| {overlap} | {'on' if tta else 'off'} | {seconds / len(masks):.2f} | "
            f"{default_seconds / seconds:.2f}x | "
            + " | ".join(f"{v:.3f}" for v in scores.values())
            + f" | {agreement:.3f} |"
        )
        print(rows[-1], flush=True)
    header = (
        "| overlap | TTA | s per case | speed vs default | "
        + " | ".join(f"Dice {name}" for name in labels.values())
        + " | smallest Dice vs default |"
    )
    table = "\n".join([header, "|" + " ---: |" * (5 + len(labels)), *rows])
    print(table)
    if not args.no_write:
        shown = args.package.relative_to(ROOT) if args.package.is_relative_to(ROOT) else args.package
        write_section(
            "## accuracy cost of the speed flags: `bench/tradeoffs.py`",
            f"`.venv/bin/python bench/tradeoffs.py --rounds {args.rounds}`. Package: {shown}"
            f"; the {len(references)} brain test cases (imagesTs, unshifted) against labelsTs; seconds per "
            f"case are end to end (read to mask), best of {args.rounds}. Default: overlap 0.5, no TTA.\n\n"
            f"Machine: {machine()}.\n\n{table}\n",
        )


if __name__ == "__main__":
    main()
