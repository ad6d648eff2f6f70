"""Dataset fingerprint and training plan: spacing, patch, batch and normalisation chosen from the data.

Like nnU-Net's experiment planning, but small: the fingerprint records what the training cases are
(spacings, sizes, foreground intensities, label volumes); the plan turns it into choices (target
spacing, patch size, batch size, intensity preset), each of which a user may override. Both are saved
as JSON beside every run and inside every model package.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from medattn.errors import ConfigError, InputWarning, MedattnError
from medattn.io.discovery import Case
from medattn.io.mask_images import binarized, is_binary_mask_file

PRESETS = ("ct", "mr", "rgb")
#: A package whose plan has this intensity preset is run with MedSAM's conventions (window/percentile clip,
#: [0, 1], 3 channels, bicubic resize) instead of one of `PRESETS` (written by hand around a MedSAM model).
MEDSAM_PRESET = "medsam"
# Patch voxel budgets: nnU-Net's 3D default fits 128^3 at batch 2 on a 24 GB GPU; CPUs get smaller ones.
PATCH_BUDGET_3D = {"cuda": 128**3, "cpu": 64**3}
PATCH_BUDGET_2D = {"cuda": 512**2, "cpu": 256**2}
# Iterations per epoch when the data gives fewer (nnU-Net: 250), so small datasets do not validate after
# every step; a CPU epoch is shorter so progress and checkpoints still come every minute or so.
MIN_STEPS_PER_EPOCH = {"cuda": 250, "cpu": 50}
ANISOTROPY_RATIO = 3.0
INTENSITY_SAMPLES_PER_CASE = 10_000


@dataclass
class Fingerprint:
    """What the training cases are. Spacings in mm per spatial axis (RAS order), sizes in voxels."""

    spatial_dims: int
    channels: int
    spacings: list[list[float]]
    shapes: list[list[int]]
    modality: str
    intensity_percentiles: dict[str, float]  # foreground p00_5, p50, p99_5, mean, std
    label_values: list[int]
    label_volumes_ml: dict[str, list[float]] = field(default_factory=dict)  # label -> per-case volume
    excluded: dict[str, str] = field(default_factory=dict)  # case id -> why it cannot be trained on
    binary_mask_labels: int = 0  # label images read as 0/1 from black/white (0/255) masks

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Fingerprint:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class Plan:
    """The choices a run trains with and a package predicts with; every field can be overridden."""

    spatial_dims: int
    in_channels: int
    num_classes: int
    spacing: list[float] | None  # target spacing in mm (None: keep each image's own grid, 2D images)
    patch_size: list[int]
    batch_size: int
    preset: str  # ct | mr | rgb
    clip_range: list[float] | None = None  # CT: foreground p0.5/p99.5 in HU
    normalize_mean: float | None = None
    normalize_std: float | None = None
    labels: dict[int, str] = field(default_factory=dict)
    # Label images that are black/white masks (0/255, JPEG noise) are read as 0/1 (medattn.io.mask_images).
    binary_mask_labels: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["labels"] = {int(k): v for k, v in (data.get("labels") or {}).items()}
        return cls(**values)


def fingerprint_dataset(
    cases: Sequence[Case], progress: Callable[[Iterable], Iterable] | None = None, seed: int = 0
) -> Fingerprint:
    """Read every training case once (image and label) and summarise it.

    Args:
        cases: labelled training cases (from `medattn.io.discover`).
        progress: optional wrapper that shows progress over the cases (e.g. rich's `track`).
        seed: for the foreground intensity sample.
    """
    from medattn.metrics.volume import spacing_from_affine, voxel_volume_ml

    if not cases:
        raise ConfigError("no labelled training cases: training needs images with labels")
    rng = np.random.default_rng(seed)
    spacings, shapes, samples, modalities, channels = [], [], [], set(), set()
    volumes: dict[int, list[float]] = {}
    spatial_dims = 3
    iterator = progress(cases) if progress is not None else cases
    excluded: dict[str, str] = {}
    binary_masks = 0
    for case in iterator:
        try:
            image, labels = checked_training_case(case)
        except MedattnError as error:
            excluded[case.id] = str(error)
            continue
        spatial_dims = 2 if image.ndim == 3 else 3
        channels.add(int(image.shape[0]))
        modalities.add(str(image.meta.get("modality") or ""))
        spacings.append(list(spacing_from_affine(np.asarray(image.affine), spatial_dims)))
        shapes.append([int(s) for s in image.shape[1:]])
        if labels is None:
            labels = np.zeros(image.shape[1:], np.uint8)
        elif is_binary_mask_file(case.label, labels):
            labels = binarized(labels)
            binary_masks += 1
        values = np.asarray(image)
        foreground = values[:, labels > 0] if (labels > 0).any() else values.reshape(values.shape[0], -1)
        take = min(INTENSITY_SAMPLES_PER_CASE, foreground.shape[1])
        samples.append(foreground[:, rng.choice(foreground.shape[1], take, replace=False)].ravel())
        voxel_ml = voxel_volume_ml(np.asarray(image.affine), spatial_dims)
        present = np.bincount(labels.ravel().astype(np.int64))
        for value in range(1, len(present)):
            volumes.setdefault(value, []).append(float(present[value]) * voxel_ml)
    if excluded:
        listing = "; ".join(f"{case_id}: {reason}" for case_id, reason in list(excluded.items())[:5])
        more = f"; and {len(excluded) - 5} more" if len(excluded) > 5 else ""
        if len(excluded) == len(cases):
            raise ConfigError(f"no training case can be used: {listing}{more}")
        warnings.warn(
            f"{len(excluded)} of {len(cases)} training case(s) left out (listed in plan.json): "
            f"{listing}{more}",
            InputWarning,
            stacklevel=2,
        )
    if binary_masks:
        warnings.warn(
            f"{binary_masks} label image(s) are black/white masks (0 and 255, as Kvasir-SEG and ISIC ship "
            "them): read as 0/1, foreground where at least half white",
            InputWarning,
            stacklevel=2,
        )
    if len(channels) > 1:
        raise ConfigError(f"training cases differ in channel count {sorted(channels)}")
    pooled = np.concatenate(samples).astype(np.float64)
    percentiles = {
        "p00_5": float(np.percentile(pooled, 0.5)),
        "p50": float(np.percentile(pooled, 50)),
        "p99_5": float(np.percentile(pooled, 99.5)),
        "mean": float(pooled.mean()),
        "std": float(pooled.std()),
    }
    modalities.discard("")
    return Fingerprint(
        spatial_dims=spatial_dims,
        channels=channels.pop(),
        spacings=spacings,
        shapes=shapes,
        modality=modalities.pop() if len(modalities) == 1 else "",
        intensity_percentiles=percentiles,
        label_values=sorted(volumes),
        label_volumes_ml={str(k): v for k, v in sorted(volumes.items())},
        excluded=excluded,
        binary_mask_labels=binary_masks,
    )


#: Largest difference (mm) between an image's and its label's voxel -> world matrices still read as one grid.
LABEL_GRID_ATOL_MM = 1e-3


def checked_training_case(case: Case):
    """A training case's image and its labels on the image's grid (an array; None without a label), read and
    checked: the label must lie on the image's grid (same shape, spacing, origin and directions, as
    nnU-Net's dataset check demands; in 3D any axis order of those voxels) and hold integer labels.

    Raises:
        MedattnError naming the file: unreadable, another grid (a label saved without the image's header,
        or cropped), or non-integer values.
    """
    from medattn.errors import GeometryError, UnreadableImageError
    from medattn.io.geometry import affine_4x4
    from medattn.metrics.case import as_label_map

    image = case.load_image()
    label = case.load_label()
    if label is None:
        return image, None
    dims = image.ndim - 1
    image_affine = affine_4x4(image.affine, dims)
    label_affine = affine_4x4(label.affine, dims)
    same_grid = tuple(label.shape[1:]) == tuple(image.shape[1:]) and np.allclose(
        label_affine, image_affine, rtol=0, atol=LABEL_GRID_ATOL_MM
    )
    labels = np.asarray(label[0])
    if not same_grid and dims == 3:
        reordered = _reordered_onto(labels, label_affine, image, image_affine)
        if reordered is not None:  # another axis order (LPS vs RAS): training orients both to RAS first
            labels, same_grid = reordered, True
    if not same_grid and tuple(label.shape[1:]) != tuple(image.shape[1:]):
        raise GeometryError(
            f"the label's shape {tuple(label.shape[1:])} differs from the image's {tuple(image.shape[1:])}",
            case.label,
        )
    if not same_grid:
        difference = float(np.abs(label_affine - image_affine).max())
        raise GeometryError(
            f"the label's voxel grid (spacing, origin or directions) differs from the image's by up to "
            f"{difference:.3g} mm: a label written without the image's header? Save it with the image's "
            "affine",
            case.label,
        )
    try:
        as_label_map(labels, "the label")
    except ValueError as error:
        raise UnreadableImageError(str(error), case.label) from error
    return image, labels


def _guess_preset(fingerprint: Fingerprint) -> str:
    if fingerprint.modality == "CT" or fingerprint.intensity_percentiles["p00_5"] < -500:
        return "ct"
    if fingerprint.spatial_dims == 2 and fingerprint.channels == 3:
        return "rgb"
    return "mr"


def _target_spacing(spacings: np.ndarray) -> list[float]:
    """Median spacing per axis; a much coarser axis takes its 10th percentile (nnU-Net's rule)."""
    target = np.median(spacings, axis=0)
    worst = int(np.argmax(target))
    others = np.delete(target, worst)
    if target[worst] > ANISOTROPY_RATIO * others.max():
        target[worst] = max(np.percentile(spacings[:, worst], 10), others.max())
    return [round(float(v), 4) for v in target]


def _patch_size(median_shape: np.ndarray, budget: int, divisor: int) -> list[int]:
    """The median (resampled) shape, shrunk along its longest axis until it fits the voxel budget.

    At least twice the divisor per axis: one divisor would leave the network's deepest level a single
    voxel, where instance norm has nothing to normalise over (training fails on it); smaller images are
    padded up to the patch.
    """
    smallest = 2 * divisor
    patch = np.maximum(np.ceil(median_shape / divisor) * divisor, smallest)
    while np.prod(patch) > budget and patch.max() > smallest:
        axis = int(np.argmax(patch))
        patch[axis] = max(smallest, patch[axis] - divisor)
    return [int(v) for v in patch]


def make_plan(
    fingerprint: Fingerprint,
    *,
    labels: dict[int, str] | None = None,
    device: str = "cpu",
    divisor: int = 16,
    spacing: Sequence[float] | None = None,
    patch_size: Sequence[int] | None = None,
    batch_size: int | None = None,
    preset: str | None = None,
) -> Plan:
    """Choose target spacing, patch, batch and normalisation; any given argument overrides the choice.

    Args:
        fingerprint: from `fingerprint_dataset`.
        labels: label value -> name (from dataset.json); missing names become `label_N`.
        device: 'cpu' or 'cuda' — sets the patch voxel budget.
        divisor: patch sides are multiples of it (2 ** number of down-samplings of the network).
        spacing, patch_size, batch_size, preset: user overrides.
    """
    dims = fingerprint.spatial_dims
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    preset = preset or _guess_preset(fingerprint)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)
    shapes = np.asarray(fingerprint.shapes, dtype=np.float64)
    if spacing is not None:
        target = [float(v) for v in spacing]
    else:
        target = None if dims == 2 else _target_spacing(spacings)
    if target is not None and len(target) != dims:
        raise ConfigError(f"--spacing needs {dims} values, got {len(target)}")
    resampled = shapes if target is None else shapes * spacings / np.asarray(target)
    budget = (PATCH_BUDGET_3D if dims == 3 else PATCH_BUDGET_2D)[kind]
    patch = (
        list(patch_size) if patch_size is not None else _patch_size(np.median(resampled, 0), budget, divisor)
    )
    if len(patch) != dims:
        raise ConfigError(f"--patch needs {dims} values, got {len(patch)}")
    bad = [p for p in patch if p % divisor]
    if bad:
        raise ConfigError(f"patch sides must be multiples of {divisor} for this network; got {patch}")
    if batch_size is None:
        batch_size = 2 if dims == 3 else (12 if kind == "cuda" else 8)
    stats = fingerprint.intensity_percentiles
    values = set(fingerprint.label_values) | set(labels or {})
    num_classes = max(values | {1}) + 1
    names = {0: "background"}
    names.update({v: f"label_{v}" for v in range(1, num_classes)})
    names.update({int(k): str(v) for k, v in (labels or {}).items()})
    return Plan(
        spatial_dims=dims,
        in_channels=fingerprint.channels,
        num_classes=num_classes,
        spacing=target,
        patch_size=[int(p) for p in patch],
        batch_size=int(batch_size),
        preset=preset,
        clip_range=[stats["p00_5"], stats["p99_5"]] if preset == "ct" else None,
        normalize_mean=stats["mean"] if preset == "ct" else None,
        normalize_std=max(stats["std"], 1e-6) if preset == "ct" else None,
        labels=names,
        binary_mask_labels=bool(fingerprint.binary_mask_labels),
    )


LESION_WORDS = re.compile(r"lesion|tumou?r|nodul|polyp|metasta|mening|cancer|mass", re.IGNORECASE)


def lesion_labels(plan: Plan, label_volumes_ml: dict[str, list[float]] | None = None) -> list[int]:
    """Labels whose names say lesion (tumour, nodule, polyp...); else the foreground label of smallest
    median volume, the one most likely to hold small structures."""
    named = [value for value, name in plan.labels.items() if value and LESION_WORDS.search(name)]
    if named or not label_volumes_ml:
        return named or ([plan.num_classes - 1] if plan.num_classes > 1 else [])
    medians = {int(k): float(np.median(v)) for k, v in label_volumes_ml.items() if v}
    return [min(medians, key=medians.get)] if medians else []


def default_steps_per_epoch(batches_per_pass: int, device_type: str) -> int:
    """Iterations per epoch: one pass over the data, at least `MIN_STEPS_PER_EPOCH` for the device."""
    return max(batches_per_pass, MIN_STEPS_PER_EPOCH["cuda" if device_type == "cuda" else "cpu"])


def _reordered_onto(labels: np.ndarray, label_affine: np.ndarray, image, image_affine: np.ndarray):
    """The labels re-indexed onto the image grid when they hold its voxels in another axis order or
    direction (exactly), else None."""
    from medattn.errors import GeometryError
    from medattn.io.geometry import onto_grid

    try:
        return onto_grid(labels, label_affine, tuple(image.shape[1:]), image_affine)
    except GeometryError:
        return None
