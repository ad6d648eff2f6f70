"""Accuracy at equal wall time on endoscopy frames: `medattn train --model pranet` vs a plain MONAI 2D UNet.

Training frames come from the sample-data generator (sample_data/gen_endoscopy.py: rendered colon wall,
one polyp per frame, 192 x 192), the test frames from other seeds after a domain shift: another colour
balance (channel gains 0.8-1.25), blur (gaussian sigma 1.5 px) and noise (sigma 8 grey levels), as another
endoscope would give. Both arms train for the same seconds on the same frames, then segment the shifted
test frames; reported are Dice (mean over frames), polyp detection (a frame counts when Dice > 0.5) and
the steps each arm managed. Writes its section of BENCHMARKS.md.

    .venv/bin/python bench/equal_time_2d.py --seconds 120 [--model pranet] [--model-kwargs '{"width": 16}']
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from plain_monai import train_until  # bench/plain_monai.py
from report import write_section  # bench/report.py

import medattn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sample_data"))
from gen_endoscopy import write_frames  # noqa: E402  (sample-data generator, not a package)


def shifted_test_frames(folder: Path, count: int, seed: int) -> Path:
    """Test frames from unseen scenes with another endoscope's look: colour gains, blur, noise."""
    from scipy.ndimage import gaussian_filter

    write_frames(folder, count, 192, seed)
    rng = np.random.default_rng(seed)
    for path in sorted((folder / "images").glob("*.png")):
        rgb = np.asarray(Image.open(path), dtype=np.float32)
        rgb *= rng.uniform(0.8, 1.25, size=3)
        rgb = gaussian_filter(rgb, sigma=(1.5, 1.5, 0))
        rgb += rng.normal(0, 8, rgb.shape)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return folder


def plain_monai(train_dir: Path, test_dir: Path, out: Path, seconds: float) -> int:
    """MONAI's 2D tutorial recipe: UNet (16-256, residual units), DiceCE, Adam 1e-3, per-image scaling."""
    from monai.data import DataLoader, Dataset
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        RandFlipd,
        RandRotate90d,
        ScaleIntensityd,
    )

    items = [
        {"image": str(p), "label": str(train_dir / "labels" / p.name)}
        for p in sorted((train_dir / "images").glob("*.png"))
    ]
    keys = ["image", "label"]
    transform = Compose(
        [
            LoadImaged(keys),
            EnsureChannelFirstd(keys),
            ScaleIntensityd("image"),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandRotate90d(keys, prob=0.5),
        ]
    )
    loader = DataLoader(Dataset(items, transform), batch_size=8, shuffle=True)
    torch.manual_seed(0)
    net = UNet(2, 3, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    steps = len(train_until(net, loss_fn, optimizer, loader, lambda _, elapsed: elapsed >= seconds))
    net.eval()
    read = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ScaleIntensityd("image")])
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((test_dir / "images").glob("*.png")):
        image = read({"image": str(path)})["image"]
        with torch.no_grad():
            logits = sliding_window_inference(image[None], (192, 192), 1, net)[0]
        labels = logits.argmax(0).numpy().astype(np.uint8)  # (W, H), PILReader's layout
        Image.fromarray(labels.T).save(out / path.name)
    return steps


def score(pred_dir: Path, test_dir: Path) -> dict[str, float]:
    dices = []
    for ref_path in sorted((test_dir / "labels").glob("*.png")):
        ref = np.asarray(Image.open(ref_path)) > 0
        pred = np.asarray(Image.open(pred_dir / ref_path.name)) > 0
        total = ref.sum() + pred.sum()
        dices.append(2 * (ref & pred).sum() / total if total else 1.0)
    return {"dice": float(np.mean(dices)), "detected": float(np.mean(np.asarray(dices) > 0.5))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="training wall time per arm")
    parser.add_argument("--model", default="pranet", help="medattn registry name")
    parser.add_argument("--model-kwargs", default="{}", help="model options as JSON")
    parser.add_argument("--train-frames", type=int, default=48)
    parser.add_argument("--test-frames", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        write_frames(work / "train", args.train_frames, 192, seed=101)
        test_dir = shifted_test_frames(work / "test", args.test_frames, seed=202)
        start = time.perf_counter()
        run = medattn.train(
            work / "train",
            model=args.model,
            model_kwargs=json.loads(args.model_kwargs),
            out=work / "medattn_run",
            device="cpu",
            epochs=10_000,
            max_time=args.seconds,
            val_fraction=0.125,
            seed=0,
        )
        medattn_seconds = time.perf_counter() - start
        medattn.predict(
            test_dir / "images", work / "medattn_pred", model=run.package, device="cpu", format="png"
        )
        medattn_scores = score(work / "medattn_pred", test_dir)
        start = time.perf_counter()
        monai_steps = plain_monai(work / "train", test_dir, work / "monai_pred", args.seconds)
        monai_seconds = time.perf_counter() - start
        monai_scores = score(work / "monai_pred", test_dir)
    medattn_steps = run.history[-1]["step"] if run.history else 0
    name = f"medattn {args.model} {args.model_kwargs if args.model_kwargs != '{}' else '(defaults)'}"
    rows = [
        f"| {name} | {medattn_seconds:.0f} | {medattn_steps} | {medattn_scores['dice']:.3f} | "
        f"{medattn_scores['detected']:.2f} |",
        f"| plain MONAI 2D UNet loop | {monai_seconds:.0f} | {monai_steps} | {monai_scores['dice']:.3f} | "
        f"{monai_scores['detected']:.2f} |",
    ]
    table = "\n".join(
        [
            "| arm | train + predict s | steps | Dice | frames detected |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    print(table)
    write_section(
        "## accuracy at equal time, 2D endoscopy: `bench/equal_time_2d.py`",
        f"`.venv/bin/python bench/equal_time_2d.py --seconds {args.seconds:.0f}`. "
        f"{args.train_frames} generated training frames (192 x 192), {args.test_frames} test frames of other "
        "scenes after a domain shift (colour gains 0.8-1.25, blur sigma 1.5 px, noise sigma 8). Dice is the "
        "mean over test frames; a frame is detected when its Dice > 0.5.\n\n"
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}.\n\n"
        f"{table}\n",
    )


if __name__ == "__main__":
    main()
