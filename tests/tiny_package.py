"""A tiny untrained model package (agunet, 3D, CT preset), a CT-like volume, a labelled sphere dataset and
the options of a training run of seconds."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medattn.package import PackageConfig, build_network, save_package
from medattn.plan import Plan

PATCH = [16, 16, 16]
LABELS = {0: "background", 1: "liver", 2: "tumour"}
COLORS = {1: [200, 120, 60], 2: [250, 250, 0]}
# `medattn.train` options for the smallest real run: agunet of base 4, depth 2, on 16^3 patches, on CPU.
TINY_TRAINING = {
    "model": "agunet",
    "model_kwargs": {"base_channels": 4, "depth": 2},
    "patch": [16, 16, 16],
    "batch": 2,
    "device": "cpu",
    "steps_per_epoch": 2,
    "seed": 0,
    "num_workers": 0,
}


def make_package(folder: Path, seed: int = 0) -> Path:
    """An agunet package (base 4, depth 2: size divisor 4) with random weights and batch-norm statistics.

    The running statistics are randomised too: a network exported in train mode (batch statistics) or
    with its deep-supervision heads would then give different logits.
    """
    plan = Plan(
        spatial_dims=3,
        in_channels=1,
        num_classes=3,
        spacing=[1.5, 1.5, 2.0],
        patch_size=list(PATCH),
        batch_size=2,
        preset="ct",
        clip_range=[-100.0, 240.0],
        normalize_mean=60.0,
        normalize_std=45.0,
        labels=dict(LABELS),
    )
    config = PackageConfig(
        model="agunet",
        model_kwargs={"base_channels": 4, "depth": 2, "deep_supervision": True},
        plan=plan,
        label_colors=dict(COLORS),
    )
    torch.manual_seed(seed)
    network = build_network(config)
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    # Centre the head's mean logits on a CT-like input, so random weights give every label somewhere.
    with torch.no_grad():
        head = network.heads[0]
        logits = network(torch.randn(1, 1, *PATCH, generator=generator))
        head.bias -= logits.mean(dim=(0, 2, 3, 4))
    return save_package(folder, network.state_dict(), config)


def make_ct_case(folder: Path, name: str = "case_0000.nii.gz") -> Path:
    """A 26 x 22 x 14 CT-like volume (HU) on an anisotropic, shifted grid: a bright blob in soft tissue."""
    grid = np.indices((26, 22, 14)).astype(np.float32)
    distance = np.sqrt((grid[0] - 12) ** 2 + (grid[1] - 10) ** 2 + ((grid[2] - 7) * 1.5) ** 2)
    noise = np.random.default_rng(0).normal(0, 20, distance.shape)
    image = (40 + 150 * (distance < 6) + noise).astype(np.float32)
    affine = np.diag([1.2, 1.4, 2.5, 1.0])
    affine[:3, 3] = (-15, 10, 30)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), folder / name)
    return folder / name


def sphere_case(shape, centre, radius: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy scan (about 0.5 outside, 1.5 inside) of a sphere (radius in voxels) and its label."""
    grid = np.indices(shape).astype(np.float32)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    label = (distance < radius).astype(np.uint8)
    noise = np.random.default_rng(seed).normal(0, 0.1, shape).astype(np.float32)
    return (label * 1.0 + noise + 0.5).astype(np.float32), label


def write_sphere_dataset(root: Path, cases: int) -> Path:
    """An nnU-Net layout dataset in `root`: `cases` labelled 20 x 22 x 18 sphere scans (1 x 1 x 1.5 mm)
    named s_000, s_001, ... in imagesTr/labelsTr, and dataset.json (label 1: sphere)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    for index in range(cases):
        image, label = sphere_case((20, 22, 18), np.add((9, 10, 8), index % 2), 5, seed=index)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"s_{index:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"s_{index:03d}.nii.gz")
    spec = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "sphere": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(spec))
    return root
