"""Trust in a mask, measured: a k-fold ensemble against its own folds on held-out brain MRI with a domain
shift (`bench/brain_datasets.py`: other heads, a second scanner on the test side, many small lesions).

One `medattn train --folds K --max-time T` run (T per fold, CPU defaults), then every fold alone and the
ensemble predict the test cases with `--uncertainty --save-probabilities`, and `medattn evaluate` scores
them with the components and probabilities. Reported per arm:

- mean Dice of the lesion label and of all labels (target: the ensemble's >= the best fold's);
- voxel AUROC: how well the uncertainty map tells the voxels the mask gets wrong from those it gets right,
  within the head (the image's non-zero bounding box; target >= 0.8);
- component AUROC: how well `confidence` tells false-positive lesion components from true ones, with the
  number of each (from evaluate's summary.json);
- calibration of the lesion label's probabilities: expected calibration error and Brier score (target:
  the ensemble's ECE below a single fold's).

Writes its section of BENCHMARKS.md (``--no-write`` skips it). The run folder and predictions stay in
bench_results/uncertainty/ so a rerun with the same arguments only predicts and scores again.

    .venv/bin/python bench/uncertainty.py [--datasets mri_2mm mri_aniso] [--folds 3] [--fold-time 150]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
HEADING = "## trust in a mask, k-fold ensemble vs its folds: `bench/uncertainty.py`"
LESION = 3  # the datasets' lesion label


def voxel_auroc(pred_dir: Path, ref_dir: Path, images: Path) -> tuple[float, int, int]:
    """AUROC of the uncertainty map for wrong vs right voxels, pooled over the cases, inside each head's
    bounding box; and the numbers of wrong and right voxels."""
    from medattn.metrics.calibration import auroc

    wrong_scores, right_scores = [], []
    for reference in sorted(ref_dir.glob("*.nii.gz")):
        case = reference.name[: -len(".nii.gz")]
        mask = np.asarray(nib.load(pred_dir / f"{case}.nii.gz").dataobj)
        truth = np.asarray(nib.load(reference).dataobj)
        uncertainty = np.asarray(nib.load(pred_dir / f"{case}_uncertainty.nii.gz").dataobj)
        image = np.asarray(nib.load(images / f"{case}_0000.nii.gz").dataobj)
        head = np.argwhere(image > 0)
        box = tuple(slice(lo, hi + 1) for lo, hi in zip(head.min(0), head.max(0), strict=True))
        wrong = mask[box] != truth[box]
        wrong_scores.append(uncertainty[box][wrong])
        right_scores.append(uncertainty[box][~wrong])
    wrong_all, right_all = np.concatenate(wrong_scores), np.concatenate(right_scores)
    return float(auroc(wrong_all, right_all)), int(wrong_all.size), int(right_all.size)


def score(arm: str, pred_dir: Path, dataset: Path) -> dict:
    from medattn.pipelines.evaluate import evaluate, write_outputs

    result = evaluate(pred_dir, dataset / "labelsTs", probabilities=pred_dir)
    written = write_outputs(result, pred_dir / "evaluation", plot=False)
    summary = json.loads(Path(written["summary"]).read_text())
    labels = summary["labels"]
    lesion = labels[str(LESION)]
    confidence = lesion["lesions"]["confidence"] or {}
    calibration = lesion["calibration"] or {}
    voxels, n_wrong, n_right = voxel_auroc(pred_dir, dataset / "labelsTs", dataset / "imagesTs")
    return {
        "arm": arm,
        "dice_lesion": lesion["metrics"]["dice"]["mean"],
        "dice_all": float(np.mean([block["metrics"]["dice"]["mean"] for block in labels.values()])),
        "voxel_auroc": voxels,
        "n_wrong_voxels": n_wrong,
        "n_right_voxels": n_right,
        "component_auroc": confidence.get("auroc"),
        "n_tp": confidence.get("n_tp"),
        "n_fp": confidence.get("n_fp"),
        "ece": calibration.get("ece"),
        "brier": calibration.get("brier"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["mri_2mm"],
        help="kinds of bench/brain_datasets.py, one table row group each",
    )
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (1: the test datasets)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-time", type=float, default=150.0, help="training seconds per fold")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_results" / "uncertainty")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    from brain_datasets import ensure_dataset

    import medattn

    rows = []
    for kind in args.datasets:
        dataset = ensure_dataset(
            kind, ROOT / "bench_results" / "datasets" / f"{kind}_s{args.seed}", args.seed
        )
        run = args.work / f"{kind}_s{args.seed}_{args.folds}x{int(args.fold_time)}s"
        if not (run / "medattn.json").is_file():
            medattn.train(
                dataset, out=run, folds=args.folds, max_time=args.fold_time, device="cpu", resume=True
            )
        arms = {f"fold {k}": [run / f"fold_{k}"] for k in range(args.folds)}
        arms[f"ensemble of {args.folds}"] = [run]
        for arm, packages in arms.items():
            pred_dir = run.parent / f"{run.name}_predictions" / arm.replace(" ", "_")
            medattn.predict(
                dataset / "imagesTs",
                pred_dir,
                packages,
                device="cpu",
                uncertainty=True,
                save_probabilities=True,
            )
            rows.append({"dataset": kind, **score(arm, pred_dir, dataset)})
            print(json.dumps(rows[-1]), flush=True)
    table = _table(rows)
    print(table)
    if not args.no_write:
        from report import machine, write_section

        command = (
            f"`.venv/bin/python bench/uncertainty.py --datasets {' '.join(args.datasets)} "
            f"--folds {args.folds} --fold-time {int(args.fold_time)}`"
        )
        body = (
            f"{command}; {machine()}. Test cases: seed {args.seed} of each dataset (domain-shifted "
            f"scanner); {args.folds} folds of {int(args.fold_time)} s each on CPU defaults. Voxel AUROC: "
            "uncertainty of wrong vs right voxels inside the head; component AUROC: confidence of true vs "
            "false-positive "
            "lesion components (TP / FP counts); ECE and Brier of the lesion label's probabilities.\n\n"
            + table
            + "\n"
        )
        write_section(HEADING, body)


def _table(rows: list[dict]) -> str:
    def number(value, digits=3):
        return "" if value is None else f"{value:.{digits}f}"

    lines = [
        "| dataset | arm | Dice lesion | Dice all labels | voxel AUROC | component AUROC (TP / FP) "
        "| ECE lesion | Brier lesion |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['arm']} | {number(row['dice_lesion'])} | {number(row['dice_all'])} | "
            f"{number(row['voxel_auroc'])} | {number(row['component_auroc'])} "
            f"({row['n_tp']} / {row['n_fp']}) | "
            f"{number(row['ece'], 4)} | {number(row['brier'], 4)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
