"""The JSON written beside an exported network: how to prepare its input and read its output."""

from __future__ import annotations

import platform
from typing import Any

import torch

from medattn import __version__
from medattn.export.network import INPUT_NAME, OUTPUT_NAME, ExportResult
from medattn.package import PackageConfig

_INTENSITY_METHODS = {
    "ct": "clip to clip_range, then (x - mean) / std with the training foreground's mean and std",
    "mr": "z-score over the non-zero voxels of each channel, per image",
    "rgb": "z-score of each channel, per image",
}


def deployment_metadata(config: PackageConfig, result: ExportResult, weights_sha256: str) -> dict[str, Any]:
    """The JSON written beside an exported network: how to prepare its input and read its output."""
    plan = config.plan
    spatial = [f"spatial_{axis}" if result.dynamic_spatial else p for axis, p in enumerate(plan.patch_size)]
    intensity: dict[str, Any] = {"preset": plan.preset, "method": _INTENSITY_METHODS.get(plan.preset, "")}
    if plan.preset == "ct":
        intensity.update(clip_range=plan.clip_range, mean=plan.normalize_mean, std=plan.normalize_std)
    return {
        "format": result.format,
        "network_file": result.network.name,
        "exporter": result.exporter,
        "input": {"name": INPUT_NAME, "shape": ["batch", plan.in_channels, *spatial], "dtype": "float32"},
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", plan.num_classes, *spatial],
            "dtype": "float32",
            "meaning": "logits; softmax over axis 1 gives class probabilities, argmax the label values",
        },
        "dynamic_spatial": result.dynamic_spatial,
        "preprocessing": {
            "orientation": "RAS" if plan.spatial_dims == 3 else None,
            "spacing_mm": plan.spacing if plan.spatial_dims == 3 else None,
            "resampling": "bilinear for images, nearest for labels",
            "intensity": intensity,
        },
        "inference": {
            "patch_size": list(plan.patch_size),
            "size_divisor": result.size_divisor,
            "sliding_window": {"overlap": 0.5, "blend": "gaussian", "sigma_scale": 0.125},
        },
        "labels": {
            str(value): {"name": name, "color": config.label_colors.get(value)}
            for value, name in sorted(plan.labels.items())
        },
        "model": config.model,
        "model_kwargs": config.model_kwargs,
        "plan": plan.to_dict(),
        "check": {"shapes": result.checked_shapes, "max_abs_diff_vs_torch": result.max_abs_diff},
        "source": {
            "weights_sha256": weights_sha256,
            "package_medattn_version": config.medattn_version,
            "medattn_version": __version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
        },
    }
