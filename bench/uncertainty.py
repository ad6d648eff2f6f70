"""Trust in a mask, measured: a k-fold ensemble against its own folds on held-out brain MRI with a domain
shift (`bench/brain_datasets.py`: other heads, a second scanner on the test side, many small lesions).

One `medattn train --folds K --max-time T` run (T per fold, CPU defaults) per training pool (``--train-
pools``: each pools the training cases of one or more dataset seeds, 6 clean-scanner cases per seed; with 6
cases in all, 3 folds train on 4 cases each and differ by their data more than an ensemble gains), then every
fold alone and the ensemble predict the pooled test cases of several dataset seeds (``--test-seeds``: 4
shifted-scanner cases each, none seen in training) with `--uncertainty --save-probabilities`, and `medattn
evaluate` scores them with the components and probabilities. Four test cases alone rank folds by chance (one
hard case moves a fold's mean lesion Dice by 0.1), hence the pool.

Reported per arm:

- mean Dice of the lesion label and of all labels (target: the ensemble's >= the best fold's), and under
  the table the ensemble against the fold a user would pick (the best validation Dice) and against the
  fold that turned out best on the test cases, paired per case (mean difference, cases won);
- voxel AUROC: how well the uncertainty map tells the voxels the mask gets wrong from those it gets right,
  within the head (the image's non-zero bounding box; target >= 0.8);
- component AUROC: how well `confidence` tells false-positive lesion components from true ones, with the
  number of each (from evaluate's summary.json), beside the same AUROC of the components' volume alone
  (small components are the usual false positives: a confidence should do at least as well as size);
- calibration of the lesion label's probabilities: expected calibration error and Brier score (target:
  the ensemble's ECE below a single fold's).

Writes its section of BENCHMARKS.md (``--no-write`` skips it). The run folder, predictions and evaluations
stay in bench_results/uncertainty/, so a rerun with the same arguments only does what is missing.

    .venv/bin/python bench/uncertainty.py [--datasets mri_2mm mri_aniso] [--folds 3]
        [--fold-time 150 | --fold-epochs 75]
        [--train-pools 1 1,2,3,4] [--test-seeds 1 2 3 4 5]
"""

from __future__ import annotations

import argparse
import csv
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


def seeded(kind: str, seeds: list[int]) -> dict[int, Path]:
    """The `kind` dataset of each seed (bench_results/datasets/<kind>_s<seed>, written first if missing)."""
    from brain_datasets import ensure_dataset

    folders = ROOT / "bench_results" / "datasets"
    return {seed: ensure_dataset(kind, folders / f"{kind}_s{seed}", seed) for seed in seeds}


def pooled(kind: str, datasets: dict[int, Path], pool: Path, side: str) -> Path:
    """`pool` linking the cases of one side (``Tr`` training, ``Ts`` test) of `datasets` (dataset seed ->
    folder) under images<side>/labels<side>, each case renamed ``<kind>_s<seed>_<side>NN`` so the seeds'
    case ids do not collide; a training pool gets a dataset.json. Returns `pool`."""
    tag = side.lower()
    for seed, dataset in datasets.items():
        for subset in (f"images{side}", f"labels{side}"):
            (pool / subset).mkdir(parents=True, exist_ok=True)
            for source in sorted((dataset / subset).glob("*.nii.gz")):
                link = pool / subset / source.name.replace(f"{kind}_{tag}", f"{kind}_s{seed}_{tag}")
                if not link.exists():
                    link.symlink_to(source.resolve())
    if side == "Tr":
        description = json.loads((next(iter(datasets.values())) / "dataset.json").read_text())
        description["numTraining"] = len(list((pool / "labelsTr").glob("*.nii.gz")))
        (pool / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    return pool


def score(arm: str, pred_dir: Path, test: Path) -> dict:
    """One arm's figures over the test cases, with its per-case Dice (lesion, mean of all labels); the
    arm's evaluation folder is reused when an earlier run wrote it (predictions are never redone either)."""
    from medattn.pipelines.evaluate import evaluate, output_files, write_outputs

    written = output_files(pred_dir / "evaluation")
    if not all(path.is_file() for path in written.values()):
        result = evaluate(pred_dir, test / "labelsTs", probabilities=pred_dir)
        written = write_outputs(result, pred_dir / "evaluation", plot=False)
    summary = json.loads(Path(written["summary"]).read_text())
    labels = summary["labels"]
    lesion = labels[str(LESION)]
    confidence = lesion["lesions"]["confidence"] or {}
    calibration = lesion["calibration"] or {}
    voxels, n_wrong, n_right = voxel_auroc(pred_dir, test / "labelsTs", test / "imagesTs")
    per_case: dict[str, dict[int, float]] = {}
    with open(written["metrics"], newline="") as table:
        for row in csv.DictReader(table):
            per_case.setdefault(row["case"], {})[int(row["label"])] = float(row["dice"])
    return {
        "arm": arm,
        "cases": len(per_case),
        "dice_lesion": lesion["metrics"]["dice"]["mean"],
        "dice_all": float(np.mean([block["metrics"]["dice"]["mean"] for block in labels.values()])),
        "case_dice_lesion": {case: dice[LESION] for case, dice in per_case.items()},
        "case_dice_all": {case: float(np.mean(list(dice.values()))) for case, dice in per_case.items()},
        "voxel_auroc": voxels,
        "n_wrong_voxels": n_wrong,
        "n_right_voxels": n_right,
        "component_auroc": confidence.get("auroc"),
        "volume_auroc": volume_auroc(Path(written["lesions"])),
        "n_tp": confidence.get("n_tp"),
        "n_fp": confidence.get("n_fp"),
        "ece": calibration.get("ece"),
        "brier": calibration.get("brier"),
    }


def volume_auroc(lesions_csv: Path) -> float | None:
    """AUROC of predicted lesion components' volume for true against false positives (evaluate's
    lesions.csv); None without both kinds."""
    from medattn.metrics.calibration import auroc

    volumes: dict[str, list[float]] = {"TP": [], "FP": []}
    with open(lesions_csv, newline="") as table:
        for row in csv.DictReader(table):
            if row["source"] == "pred" and int(row["label"]) == LESION and row["status"] in volumes:
                volumes[row["status"]].append(float(row["volume_ml"]))
    return float(auroc(volumes["TP"], volumes["FP"])) if all(volumes.values()) else None


def paired(ensemble: dict, fold: dict, key: str) -> tuple[float, int, int]:
    """The ensemble's per-case Dice (`key`: case_dice_lesion or case_dice_all) against a fold's: mean
    difference, cases where the ensemble is at least as good, and cases."""
    cases = sorted(ensemble[key])
    differences = np.array([ensemble[key][case] - fold[key][case] for case in cases])
    return float(differences.mean()), int((differences >= 0).sum()), len(cases)


def comparison(rows: list[dict], run: Path, folds: int) -> str:
    """Lines on one run's ensemble (`rows`: its arms) against the fold picked by validation Dice and the
    fold best on the test cases, paired per case (what the table's means do not show)."""
    from medattn.package import read_config

    mine = {row["arm"]: row for row in rows}
    ensemble = mine[f"ensemble of {folds}"]
    where = f"{ensemble['dataset']}, {ensemble['training_cases']} training cases"
    validation = [read_config(run / f"fold_{k}").training["best_metric"] for k in range(folds)]
    picked = int(np.argmax(validation))
    best_on_test = max(range(folds), key=lambda k: mine[f"fold {k}"]["dice_all"])
    compared = {picked: "picked by validation Dice"}
    compared[best_on_test] = (
        "picked by validation Dice and best on the test cases"
        if best_on_test == picked
        else "best on the test cases"
    )
    lines = []
    for k, what in compared.items():
        fold = mine[f"fold {k}"]
        parts = []
        for key, name in (("case_dice_all", "all labels"), ("case_dice_lesion", "lesion")):
            difference, won, cases = paired(ensemble, fold, key)
            parts.append(f"{name} {difference:+.3f} (at least as good on {won} of {cases} cases)")
        lines.append(f"- {where}, ensemble - fold {k} ({what}): Dice " + "; ".join(parts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["mri_2mm"],
        help="kinds of bench/brain_datasets.py, one table row group each",
    )
    parser.add_argument(
        "--train-pools",
        nargs="+",
        default=["1"],
        help="training pools, each a comma-separated list of dataset seeds whose training cases it pools "
        "(6 each, clean scanners): 1 is 6 cases, 1,2,3,4 is 24",
    )
    parser.add_argument(
        "--test-seeds",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5],
        help="dataset seeds whose test cases are pooled (4 each)",
    )
    parser.add_argument("--folds", type=int, default=3)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--fold-time", type=float, default=150.0, help="training seconds per fold")
    budget.add_argument(
        "--fold-epochs",
        type=int,
        help="epochs per fold instead of a time limit (the same training whatever the machine's load)",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "bench_results" / "uncertainty")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    from brain_datasets import TRAIN_CASES

    import medattn

    if args.fold_epochs:
        per_fold, limit = f"{args.fold_epochs}ep", {"epochs": args.fold_epochs, "max_time": None}
        budget_flag, budget_text = f"--fold-epochs {args.fold_epochs}", f"{args.fold_epochs} epochs"
    else:
        per_fold, limit = f"{int(args.fold_time)}s", {"max_time": args.fold_time}
        budget_flag, budget_text = f"--fold-time {int(args.fold_time)}", f"{int(args.fold_time)} s"
    pools = [[int(seed) for seed in pool.split(",")] for pool in args.train_pools]
    testing = "-".join(map(str, args.test_seeds))
    rows, notes = [], []
    for kind in args.datasets:
        test = pooled(kind, seeded(kind, args.test_seeds), args.work / f"{kind}_test_s{testing}", "Ts")
        for pool in pools:
            training = "-".join(map(str, pool))
            dataset = pooled(kind, seeded(kind, pool), args.work / f"{kind}_train_s{training}", "Tr")
            run = args.work / f"{kind}_s{training}_{args.folds}x{per_fold}"
            if not (run / "medattn.json").is_file():
                medattn.train(dataset, out=run, folds=args.folds, device="cpu", resume=True, **limit)
            arms = {f"fold {k}": [run / f"fold_{k}"] for k in range(args.folds)}
            arms[f"ensemble of {args.folds}"] = [run]
            run_rows = []
            for arm, packages in arms.items():
                pred_dir = run.parent / f"{run.name}_predictions_{test.name}" / arm.replace(" ", "_")
                medattn.predict(
                    test / "imagesTs",
                    pred_dir,
                    packages,
                    device="cpu",
                    uncertainty=True,
                    save_probabilities=True,
                )
                run_rows.append(
                    {"dataset": kind, "training_cases": len(pool) * TRAIN_CASES, **score(arm, pred_dir, test)}
                )
                print(
                    json.dumps({k: v for k, v in run_rows[-1].items() if not k.startswith("case_")}),
                    flush=True,
                )
            rows += run_rows
            notes.append(comparison(run_rows, run, args.folds))
    table = _table(rows) + "\n" + "\n".join(notes) + "\n"
    print(table)
    if not args.no_write:
        from report import machine, write_section

        command = (
            f"`.venv/bin/python bench/uncertainty.py --datasets {' '.join(args.datasets)} "
            f"--folds {args.folds} {budget_flag} --train-pools {' '.join(args.train_pools)} "
            f"--test-seeds {' '.join(map(str, args.test_seeds))}`"
        )
        body = (
            f"{command}; {machine()}. {args.folds} folds of {budget_text} each on CPU defaults, one run per "
            "training pool (the clean-scanner training cases of dataset seeds "
            f"{' and '.join(args.train_pools)}); test cases: the {rows[0]['cases']} shifted-scanner cases of "
            f"dataset seeds {', '.join(map(str, args.test_seeds))}. Voxel AUROC: uncertainty of wrong vs "
            "right voxels inside the head; component AUROC: confidence (and volume alone) of true vs "
            "false-positive lesion components (TP / FP counts); ECE and Brier of the lesion label's "
            "probabilities.\n\n" + table
        )
        write_section(HEADING, body)


def _table(rows: list[dict]) -> str:
    def number(value, digits=3):
        return "" if value is None else f"{value:.{digits}f}"

    lines = [
        "| dataset | training cases | arm | Dice lesion | Dice all labels | voxel AUROC "
        "| component AUROC (TP / FP) | volume AUROC | ECE lesion | Brier lesion |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['training_cases']} | {row['arm']} | {number(row['dice_lesion'])} | "
            f"{number(row['dice_all'])} | {number(row['voxel_auroc'])} | {number(row['component_auroc'])} "
            f"({row['n_tp']} / {row['n_fp']}) | {number(row['volume_auroc'])} | "
            f"{number(row['ece'], 4)} | {number(row['brier'], 4)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
