"""Tiny synthetic training data and networks shared by the training tests and the DDP worker script."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.networks.nets import UNet
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from torch import nn

SIZE = 16


def sphere_cases(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` cases of a 16^3 noisy image with a bright sphere of random centre and radius, and its label."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij"))
    cases = []
    for _ in range(count):
        centre = rng.uniform(5, SIZE - 5, size=3)
        radius = rng.uniform(2.5, 4.5)
        label = (np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0)) <= radius).astype(np.float32)
        image = label + rng.normal(0, 0.3, size=label.shape).astype(np.float32)
        cases.append({"image": image[None].astype(np.float32), "label": label[None]})
    return cases


def augmented_dataset(count: int = 6, seed: int = 0) -> Dataset:
    """The sphere cases behind random flips and noise, so every epoch's batches depend on the RNG state."""
    transform = Compose(
        [
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            RandGaussianNoised(keys="image", prob=1.0, std=0.1),
        ]
    )
    return Dataset(sphere_cases(count, seed), transform=transform)


def loader(dataset: Dataset, batch_size: int = 2, sampler=None, num_workers: int = 0) -> DataLoader:
    """MONAI's DataLoader (in the main process by default), shuffled unless a sampler is given."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, num_workers=num_workers
    )


def tiny_unet(seed: int = 0) -> nn.Module:
    """A two-level MONAI UNet with 4 and 8 channels (about 1k parameters), initialised from `seed`."""
    torch.manual_seed(seed)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0)


def dice_validator(cases: list[dict[str, np.ndarray]]):
    """A validate_fn: foreground Dice of the argmax prediction over `cases`, as ``{"val_dice": ...}``."""
    images = torch.from_numpy(np.stack([c["image"] for c in cases]))
    labels = torch.from_numpy(np.stack([c["label"] for c in cases])) > 0

    def validate(network: nn.Module) -> dict[str, float]:
        predicted = network(images).argmax(1, keepdim=True) > 0
        overlap = (predicted & labels).sum().item()
        total = predicted.sum().item() + labels.sum().item()
        return {
            "val_dice": 2 * overlap / total if total else 1.0,
            "val_voxels": float(predicted.sum().item()),
        }

    return validate
