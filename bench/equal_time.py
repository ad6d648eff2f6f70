"""Accuracy at equal wall time on held-out data: `medattn train` against a plain MONAI loop, several datasets
and seeds, lesion-wise recall by size.

Each run trains one arm for `--seconds` on the training cases of one generated dataset
(`bench/brain_datasets.py`: other anatomy and scanners than the sample data; 1 mm, 2 mm and 0.9 x 0.9 x 3 mm),
predicts its domain-shifted test cases and scores them: Dice per label, lesion-wise recall per stratum
(< 1, 1-3, 3-10, > 10 mL) and false-positive lesions per case. Runs are separate processes and leave one JSON
each, so a protocol can be stopped and continued.

Arms: ``plain`` is MONAI written the obvious way (UNet 16-128 with 2 residual units, DiceCE, AdamW 2e-3, 64^3
patches half of them lesion-centred, batch 2, no validation, at the data's median spacing); ``medattn`` is
`medattn.train` with its defaults then `medattn.predict`; ``medattn`` with ``--set KEY=JSON`` (TrainOptions
fields) and ``--name`` is a variant. Choices are tuned on ``--data-seed 1000`` and reported on 1.
``run --steps N`` trains a medattn arm for N steps instead of a wall time (50 per epoch, no time limit): a
comparison of variants that cost the same per step which a busy machine cannot skew. ``run
--train-scanner test`` (row `<arm>_trained_on_test_scanner`) trains on cases from the test side's scanner
(the same test cases): how many test lesions a model finds when training has seen that scanner, a ceiling
for the arms.

    .venv/bin/python bench/equal_time.py protocol --datasets mri_2mm mri_aniso mri_1mm --seeds 0 1 2
    .venv/bin/python bench/equal_time.py run --dataset mri_2mm --data-seed 1000 --arm medattn \
        --name unet --set model='"monai.unet"'
    .venv/bin/python bench/equal_time.py report --data-seed 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from protocol import dispatch, protocol_parser, run_stem, spread, write_result  # bench/protocol.py

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = ROOT / "bench_results" / "equal_time"
DATASETS = ROOT / "bench_results" / "datasets"
LABELS = {1: "grey_matter", 2: "white_matter", 3: "lesion"}
STRATA = ("<1", "1-3", "3-10", ">10")


def median_spacing(folder: Path) -> list[float]:
    """Median voxel size (mm) of the training images, in RAS axis order."""
    spacings = [
        nib.as_closest_canonical(nib.load(p)).header.get_zooms()[:3]
        for p in sorted((folder / "imagesTr").glob("*.nii.gz"))
    ]
    return [float(v) for v in np.median(np.asarray(spacings), axis=0)]


def plain_monai(data: Path, pred_dir: Path, seconds: float, seed: int) -> int:
    """Train MONAI's UNet the tutorial way for `seconds`, predict the test cases; returns the steps done."""
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import Compose, Invertd, RandCropByLabelClassesd, RandFlipd, SpatialPadd
    from monai.utils import set_determinism
    from plain_monai import mr_preprocessing, nnunet_items, train_until  # bench/ is on sys.path

    started = time.perf_counter()  # the budget covers reading and caching, as medattn's --max-time does
    set_determinism(seed)
    spacing = median_spacing(data)
    keys = ["image", "label"]
    patch = (64, 64, 64)
    train = Compose(
        mr_preprocessing(keys, spacing)
        + [
            SpatialPadd(keys, patch),  # 3 mm slices: 54 of them are fewer than the patch's 64
            # half of the patches centred on a lesion voxel, the rest on background, grey or white matter
            RandCropByLabelClassesd(keys, "label", patch, ratios=[1, 1, 1, 3], num_classes=4, num_samples=2),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
        ]
    )
    loader = DataLoader(CacheDataset(nnunet_items(data), train, progress=False), batch_size=1, shuffle=True)
    net = UNet(3, 1, 4, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(net.parameters(), 2e-3)
    budget = seconds - (time.perf_counter() - started)
    steps = len(train_until(net, loss_fn, optimizer, loader, lambda _, elapsed: elapsed >= budget))
    net.eval()
    infer = Compose(mr_preprocessing(["image"], spacing))
    pred_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted((data / "imagesTs").glob("*.nii.gz")):
        item = infer({"image": str(path)})
        with torch.no_grad():
            logits = sliding_window_inference(item["image"][None], patch, 4, net, overlap=0.5)[0]
        item["pred"] = logits.softmax(0)
        inverted = Invertd("pred", infer, orig_keys="image", nearest_interp=False)(item)["pred"]
        labels = inverted.argmax(0).numpy().astype(np.uint8)
        nib.save(nib.Nifti1Image(labels, nib.load(path).affine), pred_dir / path.name.replace("_0000", ""))
    return steps


def medattn_arm(
    data: Path, pred_dir: Path, seconds: float, seed: int, options: dict, work: Path, steps: int | None = None
) -> dict:
    """`medattn.train` (defaults plus `options`) for `seconds` (or `steps`), then `medattn.predict` on the
    test cases.

    The package's other checkpoint (the best validation epoch, or the final one) is scored too, under
    "other_weights", when it differs, so one run tells whether the default choice of weights is right.
    """
    import shutil

    import torch

    import medattn

    budget = {"max_time": seconds} if steps is None else {"epochs": -(-steps // 50), "steps_per_epoch": 50}
    run = medattn.train(data, out=work / "run", device="cpu", seed=seed, **budget, **options)
    medattn.predict(data / "imagesTs", pred_dir, model=run.package, device="cpu", save_probabilities=True)
    history = run.history
    config = medattn.load_model(run.package).config
    scored = [row for row in history if "val_dice" in row]
    best_epoch = max(scored, key=lambda row: row["val_dice"])["epoch"] if scored else None
    other = None
    if best_epoch is not None and best_epoch != history[-1]["epoch"]:
        used = config.training.get("weights", "best")
        source = run.run / ("checkpoint_last.pt" if used == "best" else "checkpoint_best.pt")
        package = work / "other_package"
        package.mkdir()
        shutil.copy(run.package / "medattn.json", package / "medattn.json")
        kept = torch.load(run.package / "model.pt", map_location="cpu", weights_only=True).keys()
        state = torch.load(source, map_location="cpu", weights_only=True)["model"]
        torch.save({k: v for k, v in state.items() if k in kept}, package / "model.pt")
        medattn.predict(data / "imagesTs", work / "other_pred", model=package, device="cpu")
        other = {"weights": "final" if used == "best" else "best", **score(data, work / "other_pred")}
    return {
        "lesion_thresholds": {str(t): threshold_score(data, pred_dir, t) for t in LESION_THRESHOLDS},
        "other_weights": other,
        "steps": history[-1]["step"] if history else 0,
        "epochs": run.epochs,
        "validation_s": float(sum(row.get("validation_s", 0.0) for row in history)),
        "best_metric": run.best_metric,
        "model": config.model,
    }


LESION_THRESHOLDS = (0.4, 0.3, 0.2)


def threshold_score(data: Path, pred_dir: Path, threshold: float) -> dict:
    """`score` of masks that call a voxel lesion wherever its lesion probability reaches `threshold` (and
    argmax elsewhere): how far recall rises, and false positives with it, at a more sensitive operating
    point. Reads the `<case>_probabilities.nii.gz` beside the masks."""
    out = pred_dir.parent / f"{pred_dir.name}_lesion_{threshold}"
    out.mkdir(exist_ok=True)
    for mask_path in sorted(pred_dir.glob("*.nii.gz")):
        if mask_path.name.endswith("_probabilities.nii.gz"):
            continue
        mask = nib.load(mask_path)
        case = mask_path.name[: -len(".nii.gz")]
        lesion = np.asarray(nib.load(pred_dir / f"{case}_probabilities.nii.gz").dataobj)[..., 3]
        labels = np.where(lesion >= threshold, 3, np.asarray(mask.dataobj)).astype(np.uint8)
        nib.save(nib.Nifti1Image(labels, mask.affine), out / mask_path.name)
    return score(data, out)


def score(data: Path, pred_dir: Path) -> dict:
    """Dice per label (mean over cases), lesions found per stratum, false-positive lesions per case."""
    from medattn.metrics.lesions import match_lesions
    from medattn.metrics.overlap import dice

    dices: dict[str, list[float]] = {name: [] for name in LABELS.values()}
    found = {name: [0, 0] for name in STRATA}
    false_positives = []
    for ref_path in sorted((data / "labelsTs").glob("*.nii.gz")):
        reference = nib.load(ref_path)
        ref = np.asarray(reference.dataobj)
        pred = np.asarray(nib.load(pred_dir / ref_path.name).dataobj)
        for value, name in LABELS.items():
            dices[name].append(float(dice(pred == value, ref == value)))
        voxel_ml = abs(np.linalg.det(reference.affine[:3, :3])) / 1000
        lesions = match_lesions(pred == 3, ref == 3, voxel_ml)
        for lesion in lesions:
            if lesion.source == "ref":
                found[lesion.stratum][1] += 1
                found[lesion.stratum][0] += lesion.status == "TP"
        false_positives.append(sum(x.source == "pred" and x.status == "FP" for x in lesions))
    return {
        "dice": {name: float(np.mean(v)) for name, v in dices.items()},
        "found": found,
        "fp_per_case": float(np.mean(false_positives)),
    }


def run(args: argparse.Namespace) -> Path:
    """One arm on one dataset and seed; writes and returns its result JSON."""
    import tempfile

    from brain_datasets import ensure_ceiling_dataset, ensure_dataset  # bench/ is on sys.path

    data = ensure_dataset(args.dataset, DATASETS / f"{args.dataset}_s{args.data_seed}", args.data_seed)
    if args.train_scanner == "test":  # its own row in the report, never the arm's results
        args.name = args.name or f"{args.arm}_trained_on_test_scanner"
        ceiling = DATASETS / f"{args.dataset}_s{args.data_seed}_trained_on_test_scanner"
        data = ensure_ceiling_dataset(args.dataset, ceiling, args.data_seed, data)
    options = {key: json.loads(value) for key, value in args.set}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        start = time.perf_counter()
        if args.arm == "plain":
            measured = {"steps": plain_monai(data, work / "pred", args.seconds, args.seed)}
        else:
            measured = medattn_arm(data, work / "pred", args.seconds, args.seed, options, work, args.steps)
        measured["wall_s"] = time.perf_counter() - start
        measured = {"budget_steps": args.steps, **measured, **score(data, work / "pred")}
        if args.keep_predictions:  # for bench/lesion_visibility.py
            import shutil

            shutil.copytree(work / "pred", run_stem(args, RESULTS), dirs_exist_ok=True)
    return write_result(args, RESULTS, measured, ("steps", "dice", "found", "fp_per_case"))


def _operating_points(runs: dict[str, list[dict]]) -> str:
    """Lines on the medattn arms' other operating points: lesion thresholds and the other weights."""
    lines = []
    for arm, results in sorted(runs.items()):
        sweeps = [r["lesion_thresholds"] for r in results if r.get("lesion_thresholds")]
        for threshold in sweeps[0] if sweeps else []:
            points = [sweep[threshold] for sweep in sweeps]
            small = [sum(p["found"][s][i] for p in points for s in ("<1", "1-3")) for i in (0, 1)]
            large = [sum(p["found"][s][i] for p in points for s in ("3-10", ">10")) for i in (0, 1)]
            lines.append(
                f"- {arm}, lesion where its probability >= {threshold} ({len(points)} seeds): lesion Dice "
                f"{spread([p['dice']['lesion'] for p in points])}, found under 3 mL {small[0]}/{small[1]}, "
                f"above {large[0]}/{large[1]}, FP lesions / case "
                f"{spread([p['fp_per_case'] for p in points])}"
            )
        others = [r["other_weights"] for r in results if r.get("other_weights")]
        if others:
            mean = [float(np.mean([o["dice"][n] for n in LABELS.values()])) for o in others]
            own = [
                float(np.mean([r["dice"][n] for n in LABELS.values()]))
                for r in results
                if r.get("other_weights")
            ]
            lines.append(
                f"- {arm}, {others[0]['weights']} weights instead ({len(others)} runs where they differ): "
                f"mean Dice {spread(mean)} against {spread(own)}"
            )
    return "\n\n" + "\n".join(lines) if lines else ""


SCORES = ("dice", "found", "fp_per_case")


def with_weights(result: dict, weights: str) -> dict:
    """A medattn run's result as scored with the package's `weights` ("best" or "final"), whichever the
    run packaged: the other checkpoint's scores are in the run's "other_weights" when the two differ."""
    other = result.get("other_weights")
    if not other or other["weights"] != weights:
        return result
    packaged = "final" if weights == "best" else "best"
    swapped = {"weights": packaged, **{key: result[key] for key in SCORES}}
    return {**result, **{key: other[key] for key in SCORES}, "other_weights": swapped}


def report(args: argparse.Namespace) -> str:
    """Markdown tables, one per dataset: mean ± standard deviation over seeds for each arm; medattn arms
    as scored with `args.weights` (train's default)."""
    sections = []
    for folder in sorted(RESULTS.glob(f"*_s{args.data_seed}")):
        runs: dict[str, list[dict]] = {}
        for path in sorted(folder.glob("*.json")):
            result = json.loads(path.read_text())
            if "arm" in result:  # not a placeholder that keeps `protocol` from a run
                runs.setdefault(result["arm"], []).append(with_weights(result, args.weights))
        header = (
            "| arm | seeds | steps | Dice GM | Dice WM | Dice lesion | mean Dice "
            "| found <1 | 1-3 | 3-10 | >10 | FP lesions / case |"
        )
        rows = [header, "|" + " --- |" * 12]
        for arm, results in sorted(runs.items(), key=lambda item: (item[0] != "plain", item[0])):
            dice = {name: [r["dice"][name] for r in results] for name in LABELS.values()}
            means = [float(np.mean([r["dice"][n] for n in LABELS.values()])) for r in results]
            found = [
                f"{sum(r['found'][s][0] for r in results)}/{sum(r['found'][s][1] for r in results)}"
                for s in STRATA
            ]
            rows.append(
                f"| {arm} | {len(results)} | {np.mean([r['steps'] for r in results]):.0f} | "
                + " | ".join(spread(v) for v in dice.values())
                + f" | {spread(means)} | "
                + " | ".join(found)
                + f" | {spread([r['fp_per_case'] for r in results])} |"
            )
        sections.append(f"**{folder.name}**\n\n" + "\n".join(rows) + _operating_points(runs))
    text = "\n\n".join(sections)
    print(text)
    return text


def main() -> None:
    parser, one, summary = protocol_parser(
        __doc__.splitlines()[0], ["mri_2mm", "mri_aniso", "mri_1mm"], ["plain", "medattn"], 300.0
    )
    one.add_argument("--steps", type=int, help="medattn arms: train this many steps instead of --seconds")
    one.add_argument("--keep-predictions", action="store_true", help="keep test predictions beside the JSON")
    one.add_argument(
        "--train-scanner",
        choices=("clean", "test"),
        default="clean",
        help="test: train on cases from the test side's scanner (same test cases): a ceiling, not an arm",
    )
    summary.add_argument("--weights", choices=("best", "final"), default="best", help="medattn rows' weights")
    dispatch(parser.parse_args(), __file__, RESULTS, run, report)


if __name__ == "__main__":
    main()
