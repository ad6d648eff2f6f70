"""The pieces of "plain MONAI, written the obvious way" that several benchmarks share.

A tutorial-style training loop, and the nnU-Net-layout items and MR preprocessing chain the 3D
benchmarks feed it, so the reference arm is the same code in every comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch


def nnunet_items(folder: Path) -> list[dict[str, str]]:
    """{"image", "label"} paths of an nnU-Net dataset's training cases (`imagesTr/*_0000` + `labelsTr/`)."""
    images = sorted((folder / "imagesTr").glob("*.nii.gz"))
    return [
        {"image": str(p), "label": str(folder / "labelsTr" / p.name.replace("_0000", ""))} for p in images
    ]


def mr_preprocessing(keys: list[str], spacing) -> list:
    """Load, channel first, RAS, resample to `spacing` (labels nearest), z-score the image's foreground."""
    from monai.transforms import EnsureChannelFirstd, LoadImaged, NormalizeIntensityd, Orientationd, Spacingd

    return [
        LoadImaged(keys),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=spacing, mode=("bilinear", "nearest")[: len(keys)]),
        NormalizeIntensityd("image", nonzero=True, channel_wise=True),
    ]


def train_until(
    network: torch.nn.Module,
    loss_fn: Callable,
    optimizer: torch.optim.Optimizer,
    loader,
    stop: Callable[[int, float], bool],
) -> list[float]:
    """The tutorial loop over `loader`, pass after pass, until ``stop(steps, seconds)``; step end times.

    `stop` is asked after every step with the steps done and the seconds since the start (and before the
    first step, so a zero budget trains nothing).
    """
    network.train()
    stamps: list[float] = []
    start = time.perf_counter()
    while not stop(len(stamps), time.perf_counter() - start):
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(network(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
            stamps.append(time.perf_counter())
            if stop(len(stamps), stamps[-1] - start):
                break
    return stamps
