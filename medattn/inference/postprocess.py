"""Clean predicted label maps: argmax, keep the largest component, fill holes, drop components under N mL.

All functions take a label map (*spatial) of integers, numpy or torch (2D or 3D, no channel axis), and return
a new map of the same type, dtype and shape; the input is never modified. Voxels a function removes become
background (0). Work is done per label inside that label's bounding box (one `scipy.ndimage.find_objects`
pass over the map), so a small structure in a 512 x 512 x 300 CT costs its box, not the volume.
Connected components use full connectivity (26 neighbours in 3D, 8 in 2D), as nnU-Net's postprocessing.

MONAI's `KeepLargestConnectedComponent`, `FillHoles` and `RemoveSmallObjects` are not used because
`bench/postprocess.py` shows them slower on CT-sized maps wherever they give these masks (they label the
whole volume once per label), and two of them giving other masks: `FillHoles` also overwrites another
label it encloses and counts diagonal background contacts as openings, and `RemoveSmallObjects` treats
each label value of a label map as one object and, run on one label at a time, also removes components up
to one voxel over a volume threshold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch
from scipy import ndimage

from medattn.errors import ConfigError, GeometryError

LabelMap = TypeVar("LabelMap", np.ndarray, torch.Tensor)


def argmax_labels(probabilities: LabelMap) -> LabelMap:
    """Label map (*spatial) from class scores (C, *spatial): uint8 up to 256 classes, else uint16 (NumPy)
    or int32 (torch).

    Torch tensors: a running maximum over the channels, one elementwise pass per class; torch's argmax
    over the outer axis is about 4x slower on CPU (BENCHMARKS.md, end-to-end prediction) and makes an int64
    index volume. NumPy arrays: argmax in slabs along the last axis, so its int64 index
    array never spans the whole volume. Ties go to the lower label in both (as argmax does), and a NaN
    wins as in torch.argmax (the first one), so a broken output is not silently background.
    """
    classes = probabilities.shape[0]
    if classes > 65536:
        raise ConfigError(f"argmax_labels supports up to 65536 classes, got {classes}")
    if isinstance(probabilities, torch.Tensor):
        labels, best = _running_argmax(probabilities, nan_aware=False)
        if best.isnan().any():  # the running maximum carries any NaN to the end: redo the NaN-aware way
            labels, _ = _running_argmax(probabilities, nan_aware=True)
        return labels
    slab = max(1, (1 << 24) // max(1, math.prod(probabilities.shape[:-1])))  # about 16M scores per slab
    probabilities = np.asarray(probabilities)
    labels = np.empty(probabilities.shape[1:], dtype=np.uint8 if classes <= 256 else np.uint16)
    for start in range(0, probabilities.shape[-1], slab):
        labels[..., start : start + slab] = probabilities[..., start : start + slab].argmax(axis=0)
    return labels


def _running_argmax(probabilities: torch.Tensor, nan_aware: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, running maximum) over the classes of a torch tensor; `nan_aware` gives a NaN the win (the
    first one), at two more passes per class: only needed when the maximum came out NaN somewhere."""
    classes = probabilities.shape[0]
    labels = torch.zeros(
        probabilities.shape[1:],
        dtype=torch.uint8 if classes <= 256 else torch.int32,  # torch has no masked_fill for uint16
        device=probabilities.device,
    )
    best = probabilities[0].clone()
    for value in range(1, classes):
        wins = probabilities[value] > best
        if nan_aware:
            wins |= probabilities[value].isnan() & ~best.isnan()
        labels.masked_fill_(wins, value)
        torch.maximum(best, probabilities[value], out=best)  # propagates NaN: later classes lose
    return labels, best


def keep_largest_component(
    labels: LabelMap, label_values: Iterable[int] | None = None, connectivity: int | None = None
) -> LabelMap:
    """Per label, keep only its largest connected component; the rest becomes background.

    Use for structures that are one piece (an organ, a single tumour); not for multi-focal disease.

    Args:
        labels: label map (*spatial).
        label_values: labels to clean; default: every non-zero label present.
        connectivity: neighbourhood order (1 = faces only ... ndim = full); default full (26 in 3D, 8 in 2D).

    Returns:
        A new label map; where two components tie in size, the first in scan order is kept.
    """
    array, to_input = _as_numpy(labels)
    result = array.copy()
    structure = _structure(array.ndim, connectivity)
    for value, box in _label_boxes(result, label_values):
        crop = result[box]
        components, count = ndimage.label(crop == value, structure=structure)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            crop[(components != 0) & (components != sizes.argmax())] = 0
    return to_input(result)


def fill_holes(labels: LabelMap, label_values: Iterable[int] | None = None) -> LabelMap:
    """Per label, fill background enclosed by it (`scipy.ndimage.binary_fill_holes`, in 3D for 3D maps).

    Only background voxels are filled: another label inside the hole (a lesion within an organ) is kept.

    Args:
        labels: label map (*spatial).
        label_values: labels whose holes to fill; default: every non-zero label present.
    """
    array, to_input = _as_numpy(labels)
    result = array.copy()
    # A hole is enclosed by the label, so it lies inside the label's box; filling the crop equals filling
    # the whole map (what touches the box's border also touches the image's outside).
    for value, box in _label_boxes(result, label_values):
        crop = result[box]
        filled = ndimage.binary_fill_holes(crop == value)
        crop[filled & (crop == 0)] = value
    return to_input(result)


def remove_small_components(
    labels: LabelMap,
    min_volume_ml: float,
    spacing_mm: Sequence[float],
    label_values: Iterable[int] | None = None,
    connectivity: int | None = None,
) -> LabelMap:
    """Per label, drop connected components smaller than `min_volume_ml` (they become background).

    A component's volume is voxels x prod(spacing_mm) / 1000 mL. A 2D map counts each pixel as
    area x 1 mm thick, the convention of `medattn.metrics.volume` and volumes.csv, so 1 mL = 1000 mm^2:
    pass ``min_volume_ml = area_mm2 / 1000`` for an area threshold.

    Args:
        labels: label map (*spatial).
        min_volume_ml: components with a smaller volume are removed; 0 keeps everything.
        spacing_mm: voxel size per axis of `labels` in mm (anisotropic spacing is fine).
        label_values: labels to clean; default: every non-zero label present.
        connectivity: neighbourhood order; default full (26 in 3D, 8 in 2D).
    """
    if min_volume_ml < 0:
        raise ConfigError(f"min_volume_ml must be >= 0 mL, got {min_volume_ml}")
    array, to_input = _as_numpy(labels)
    if len(spacing_mm) != array.ndim or any(s <= 0 for s in spacing_mm):
        raise GeometryError(
            f"spacing_mm must give one positive size per axis of the {array.ndim}D label map "
            f"{array.shape}, got {tuple(spacing_mm)}"
        )
    result = array.copy()
    if min_volume_ml == 0:
        return to_input(result)
    voxel_ml = math.prod(float(s) for s in spacing_mm) / 1000.0
    structure = _structure(array.ndim, connectivity)
    for value, box in _label_boxes(result, label_values):
        crop = result[box]
        components, _ = ndimage.label(crop == value, structure=structure)
        too_small = np.bincount(components.ravel()) * voxel_ml < min_volume_ml
        too_small[0] = False
        crop[too_small[components]] = 0
    return to_input(result)


def _label_boxes(
    labels: np.ndarray, label_values: Iterable[int] | None
) -> list[tuple[int, tuple[slice, ...]]]:
    """(label, bounding box) for each requested label present in the map, from one find_objects pass."""
    if labels.size == 0 or labels.max() <= 0:
        return []
    boxes = ndimage.find_objects(labels.view(np.uint8) if labels.dtype == bool else labels)
    wanted = range(1, len(boxes) + 1) if label_values is None else sorted({int(v) for v in label_values})
    return [(v, boxes[v - 1]) for v in wanted if 0 < v <= len(boxes) and boxes[v - 1] is not None]


def _structure(ndim: int, connectivity: int | None) -> np.ndarray:
    connectivity = ndim if connectivity is None else connectivity
    if not 1 <= connectivity <= ndim:
        raise ConfigError(f"connectivity must be in 1..{ndim} for a {ndim}D map, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, connectivity)


def _as_numpy(labels):
    """The label map as numpy (ints), and a function turning a numpy result back into the caller's type."""
    if isinstance(labels, torch.Tensor):
        device = labels.device
        array = labels.detach().cpu().numpy()
        back = lambda result: torch.from_numpy(result).to(device)  # noqa: E731
    else:
        array = np.asarray(labels)
        back = lambda result: result  # noqa: E731
    if array.dtype.kind not in "iub":
        raise ConfigError(f"a label map must hold integers, got dtype {array.dtype}")
    return array, back
