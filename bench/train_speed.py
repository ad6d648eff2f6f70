"""Training iterations per second: `medattn.train` vs a plain MONAI training loop, same network and data.

Both train MONAI's UNet (16-256, 2 residual units, batch norm; the registry's `monai.unet`, so the network
is the same) on the brain MRI sample cases at medattn's planned spacing and patch, batch 2, AdamW, for the
same number of steps. medattn's run is the product path (`medattn.train`: plan, cached preprocessing,
size-aware patch sampling, augmentation, Dice+CE, checkpoints, validation off); the plain loop is MONAI's
tutorial recipe (CacheDataset, RandCropByPosNegLabeld, flips, DiceCELoss). Reported: steady-state steps per
second (the first 3 steps, which include caching, are left out) and peak resident memory.

    .venv/bin/python bench/train_speed.py [--steps 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from inference import PeakMemory  # bench/inference.py
from plain_monai import mr_preprocessing, nnunet_items, train_until  # bench/plain_monai.py
from report import machine, write_section

import medattn

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "brain_mri"
WARMUP = 3


def medattn_run(steps: int, out: Path) -> tuple[float, float]:
    stamps: list[float] = []
    with PeakMemory() as memory:
        medattn.train(
            SAMPLES,
            model="monai.unet",
            out=out,
            device="cpu",
            epochs=1,
            steps_per_epoch=steps,
            val_fraction=0.0,
            batch=2,
            deep_supervision=False,
            on_step=lambda info: stamps.append(time.perf_counter()),
        )
    return (len(stamps) - WARMUP) / (stamps[-1] - stamps[WARMUP - 1]), memory.above_start_mb


def plain_run(steps: int, patch, spacing) -> tuple[float, float]:
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandFlipd,
    )

    from medattn.models import create

    keys = ["image", "label"]
    transform = Compose(
        [
            *mr_preprocessing(keys, spacing),
            RandCropByPosNegLabeld(keys, "label", spatial_size=patch, pos=1, neg=1, num_samples=2),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
        ]
    )
    loader = DataLoader(
        CacheDataset(nnunet_items(SAMPLES), transform, progress=False), batch_size=1, shuffle=True
    )
    torch.manual_seed(0)
    network = create("monai.unet", 3, 1, 4).train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), 1e-3)
    with PeakMemory() as memory:
        stamps = train_until(network, loss_fn, optimizer, loader, lambda done, _: done >= steps)
    return (len(stamps) - WARMUP) / (stamps[-1] - stamps[WARMUP - 1]), memory.above_start_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        medattn_rate, medattn_memory = medattn_run(args.steps, Path(work) / "run")
        plan = medattn.load_model(Path(work) / "run").plan
    plain_rate, plain_memory = plain_run(args.steps, plan.patch_size, plan.spacing)
    table = "\n".join(
        [
            "| loop | steps/s | peak RSS above start MB |",
            "| --- | ---: | ---: |",
            f"| plain MONAI loop | {plain_rate:.2f} | {plain_memory:.0f} |",
            f"| medattn.train | {medattn_rate:.2f} | {medattn_memory:.0f} |",
        ]
    )
    summary = f"medattn / plain MONAI steps per second: {medattn_rate / plain_rate:.2f}."
    print(table)
    print(summary)
    if not args.no_write:
        write_section(
            "## training steps/s vs a plain MONAI loop: `bench/train_speed.py`",
            f"`.venv/bin/python bench/train_speed.py --steps {args.steps}`. "
            "Network monai.unet (the same in both), brain MRI sample cases at "
            f"spacing {plan.spacing} mm, "
            f"patch {plan.patch_size}, batch 2, {args.steps} steps (first {WARMUP} left out), CPU.\n\n"
            f"Machine: {machine()}.\n\n{table}\n\n{summary}\n",
        )


if __name__ == "__main__":
    main()
