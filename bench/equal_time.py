"""Accuracy at equal wall time: medattn's default AGUNet vs a plain MONAI UNet trained the obvious way.

Both train for the same number of seconds on the brain MRI training cases of sample_data, then segment
the held-out test cases after a domain shift (gamma, a stronger bias field, more noise). Reported: Dice
per label and lesion-wise recall on the shifted test cases, and steps each arm managed. Appends to
BENCHMARKS.md.

    .venv/bin/python bench/equal_time.py --seconds 300

Variants of the medattn arm (ablations) run without the plain arm and print their row without appending:

    .venv/bin/python bench/equal_time.py --seconds 240 --option multi_scale_input=false --no-plain
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from options import model_option  # bench/ is on sys.path
from plain_monai import mr_preprocessing, nnunet_items, train_until  # bench/ is on sys.path
from report import append_section  # bench/report.py (scripts run from bench/ on sys.path)

import medattn
from medattn.metrics.lesions import match_lesions
from medattn.metrics.overlap import dice

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "brain_mri"
LABELS = {1: "grey_matter", 2: "white_matter", 3: "lesion"}


def shifted_test_set(folder: Path, seed: int = 0) -> Path:
    """The test images with another scanner's look: gamma 1.4, a +-30 % bias field, doubled noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((SAMPLES / "imagesTs").glob("*.nii.gz")):
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
        scale = np.percentile(data, 99.5)
        shifted = (np.clip(data / scale, 0, None) ** 1.4) * scale
        grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in data.shape], indexing="ij")
        shifted *= 1 + 0.3 * np.sin(1.3 * grid[0] + 0.7) * np.cos(0.9 * grid[2])
        shifted += rng.normal(0, 0.04 * scale, data.shape)
        nib.save(nib.Nifti1Image(shifted.astype(np.float32), image.affine), folder / path.name)
    return folder


def plain_monai(
    train_dir: Path, test_dir: Path, out: Path, seconds: float, patch, spacing, train_ids: list[str]
) -> tuple[Path, int]:
    """MONAI's tutorial recipe: UNet with residual units, DiceCE, Adam 1e-4, pos/neg crops; then predict.

    It trains on `train_ids`, the cases medattn trained on (medattn holds one out to validate every epoch;
    the plain loop does not validate, so its whole budget goes to training steps).
    """
    from monai.data import CacheDataset, DataLoader
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import (
        Compose,
        Invertd,
        RandCropByPosNegLabeld,
        RandFlipd,
    )

    items = [item for item in nnunet_items(train_dir) if Path(item["label"]).name[:-7] in train_ids]
    keys = ["image", "label"]
    pre = mr_preprocessing(keys, spacing)
    augment = [
        RandCropByPosNegLabeld(keys, "label", spatial_size=patch, pos=1, neg=1, num_samples=2),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
    ]
    loader = DataLoader(
        CacheDataset(items, Compose(pre + augment), progress=False), batch_size=1, shuffle=True
    )
    torch.manual_seed(0)
    net = UNet(3, 1, 4, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)
    steps = len(train_until(net, loss_fn, optimizer, loader, lambda _, elapsed: elapsed >= seconds))
    net.eval()
    infer_pre = Compose(mr_preprocessing(["image"], spacing))
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(test_dir.glob("*.nii.gz")):
        data = infer_pre({"image": str(path)})
        with torch.no_grad():
            logits = sliding_window_inference(data["image"][None], patch, 4, net)[0]
        data["pred"] = logits.softmax(0)
        inverted = Invertd("pred", infer_pre, orig_keys="image", nearest_interp=False)(data)["pred"]
        labels = inverted.argmax(0).numpy().astype(np.uint8)
        nib.save(nib.Nifti1Image(labels, nib.load(path).affine), out / path.name.replace("_0000", ""))
    return out, steps


def score(pred_dir: Path) -> dict[str, float]:
    scores: dict[str, list[float]] = {name: [] for name in LABELS.values()}
    detected = total = 0
    for ref_path in sorted((SAMPLES / "labelsTs").glob("*.nii.gz")):
        ref_image = nib.load(ref_path)
        ref = np.asarray(ref_image.dataobj)
        pred = np.asarray(nib.load(pred_dir / ref_path.name).dataobj)
        for value, name in LABELS.items():
            scores[name].append(dice(pred == value, ref == value))
        voxel_ml = abs(np.linalg.det(ref_image.affine[:3, :3])) / 1000
        lesions = [x for x in match_lesions(pred == 3, ref == 3, voxel_ml) if x.source == "ref"]
        detected += sum(x.status == "TP" for x in lesions)
        total += len(lesions)
    result = {name: float(np.mean(v)) for name, v in scores.items()}
    result["lesion_recall"] = detected / total if total else float("nan")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training wall time per arm")
    parser.add_argument("--model", default="agunet", help="medattn arm's model (default: agunet)")
    parser.add_argument(
        "--option",
        type=model_option,
        action="append",
        default=[],
        help="medattn arm's model option KEY=VALUE",
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="medattn arm's learning rate (default: train's)"
    )
    parser.add_argument(
        "--no-plain", action="store_true", help="medattn arm only; print its row, append nothing"
    )
    args = parser.parse_args()
    train_extra = {} if args.lr is None else {"lr": args.lr}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        shifted_test_set(work / "shifted")
        start = time.perf_counter()
        run = medattn.train(
            SAMPLES,
            model=args.model,
            model_kwargs=dict(args.option),
            out=work / "medattn_run",
            device="cpu",
            epochs=10_000,
            max_time=args.seconds,
            val_fraction=0.25,
            seed=0,
            **train_extra,
        )
        medattn_seconds = time.perf_counter() - start
        medattn.predict(work / "shifted", work / "medattn_pred", model=run.package, device="cpu")
        plan = medattn.load_model(run.package).plan
        medattn_scores = score(work / "medattn_pred")
        medattn_steps = run.history[-1]["step"] if run.history else 0
        if args.no_plain:
            for row in run.history:  # the learning curve: validation scores per epoch
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
            options = " ".join(f"{k}={v}" for k, v in args.option) or "defaults"
            print(
                f"| medattn {args.model} | {options} | {medattn_steps} | "
                + " | ".join(f"{v:.3f}" for v in medattn_scores.values())
                + " |"
            )
            return
        start = time.perf_counter()
        _, monai_steps = plain_monai(
            SAMPLES,
            work / "shifted",
            work / "monai_pred",
            args.seconds,
            plan.patch_size,
            plan.spacing,
            train_ids=medattn.load_model(run.package).config.training["split"]["train"],
        )
        monai_seconds = time.perf_counter() - start
        monai_scores = score(work / "monai_pred")
    header = "| arm | train s | steps | " + " | ".join(medattn_scores) + " |"
    rows = [
        f"| medattn agunet (defaults) | {medattn_seconds:.0f} | {medattn_steps} | "
        + " | ".join(f"{v:.3f}" for v in medattn_scores.values())
        + " |",
        f"| plain MONAI UNet loop | {monai_seconds:.0f} | {monai_steps} | "
        + " | ".join(f"{v:.3f}" for v in monai_scores.values())
        + " |",
    ]
    table = "\n".join([header, "|" + " --- |" * (3 + len(medattn_scores)), *rows])
    print(table)
    section = (
        f"\n## accuracy at equal time: `bench/equal_time.py --seconds {args.seconds:.0f}` "
        f"({date.today()})\n\n"
        "Brain MRI sample data: both arms train on the same 3 of the 4 training cases (medattn validates on "
        "the 4th every epoch, inside its time; the plain loop does not validate), the 2 test cases "
        "after a domain shift (gamma 1.4, bias field, doubled noise); Dice per label and lesion-wise "
        "recall on the shifted test cases. Both arms use medattn's planned spacing and patch.\n\n"
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"Python {platform.python_version()}.\n\n{table}\n"
    )
    append_section(section)


if __name__ == "__main__":
    main()
