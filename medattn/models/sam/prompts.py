"""Prompts for the SAM family: the boxes and points of one image (`ImagePrompts`, parsed from what users
type), boxes from masks (per component, carried to a neighbouring slice) and MedSAM's jittered
ground-truth boxes for training.

Boxes are (x0, y0, x1, y1) with inclusive pixel indices, as MedSAM takes them from ``np.where(mask)``. In
medattn's layout a 2D mask is (W, H): x indexes the first axis, y the second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from medattn.errors import ConfigError

Box = tuple[float, float, float, float]
Point = tuple[float, float, int]  # x, y, label (1 foreground, 0 background)


def mask_box(mask: np.ndarray | torch.Tensor) -> Box | None:
    """The bounding box (x0, y0, x1, y1) of a 2D (W, H) mask's non-zero pixels, or None when it is empty."""
    array = np.asarray(mask) != 0
    xs = np.flatnonzero(array.any(axis=1))
    if xs.size == 0:
        return None
    ys = np.flatnonzero(array.any(axis=0))
    return float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1])


def component_boxes(mask: np.ndarray | torch.Tensor, min_pixels: int = 1) -> list[Box]:
    """One box per connected component (8-connected) of each non-zero label of a 2D (W, H) label map.

    Args:
        mask: label map; each label value is split into its components separately.
        min_pixels: components with fewer pixels give no box (speckles of a coarse model).
    """
    array = np.asarray(mask)
    structure = ndimage.generate_binary_structure(2, 2)
    boxes = []
    for value in np.unique(array[array != 0]):
        components, count = ndimage.label(array == value, structure=structure)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        for index, region in enumerate(ndimage.find_objects(components), start=1):
            if region is not None and sizes[index] >= min_pixels:
                xs, ys = region
                boxes.append((float(xs.start), float(ys.start), float(xs.stop - 1), float(ys.stop - 1)))
    return boxes


def expand_box(box: Box, margin: float, grid: Sequence[int]) -> Box:
    """`box` pushed out by `margin` pixels on every side and clipped to a (W, H) grid."""
    x0, y0, x1, y1 = box
    width, height = grid
    return (
        max(0.0, x0 - margin),
        max(0.0, y0 - margin),
        min(float(width - 1), x1 + margin),
        min(float(height - 1), y1 + margin),
    )


def jittered_boxes(
    labels: torch.Tensor,
    max_shift: float | tuple[float, float],
    layout: str = "xy",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MedSAM's training boxes: each label patch's foreground bounding box, every side pushed out by a
    random 0 to `max_shift` pixels (their bbox_shift, 20 px at 1024) and clipped to the patch.

    A patch without foreground gets a random box (corners uniform over the patch), so the model also learns
    that a box around background holds nothing.

    Args:
        labels: (B, 1, W, H) label patches (``layout="xy"``) or (B, 1, H, W) (``"hw"``); > 0 is foreground.
        max_shift: the largest push per side in pixels, one value or (along x, along y).
        layout: which axis is x, as in `medattn.models.sam.SAM`.
        generator: random source (default: torch's global one, which the trainer seeds per epoch).

    Returns:
        (B, 4) float32 boxes (x0, y0, x1, y1), on the CPU.
    """
    foreground = labels.detach().reshape(labels.shape[0], *labels.shape[-2:]).cpu() > 0
    if layout == "hw":
        foreground = foreground.transpose(-1, -2)
    batch, width, height = foreground.shape
    shift_x, shift_y = (max_shift, max_shift) if isinstance(max_shift, (int, float)) else max_shift
    limits = torch.tensor([width - 1, height - 1, width - 1, height - 1], dtype=torch.float32)
    boxes = torch.empty(batch, 4)
    for index in range(batch):
        box = mask_box(foreground[index].numpy())
        if box is None:
            corners = torch.rand(2, 2, generator=generator) * limits[:2]
            low, high = corners.min(dim=0).values, corners.max(dim=0).values
            boxes[index] = torch.cat([low, high]).round()
            continue
        push = torch.rand(4, generator=generator) * torch.tensor([shift_x, shift_y, shift_x, shift_y])
        boxes[index] = torch.tensor(box) + push * torch.tensor([-1.0, -1.0, 1.0, 1.0])
    return torch.minimum(boxes.clamp_min(0.0), limits)


def _numbers(value, count: tuple[int, ...], what: str) -> list[float]:
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in count:
        form = "x0,y0,x1,y1" if what == "box" else "x,y[,label]"
        raise ConfigError(f"a {what} is {form} in pixels of the input image; got {value!r}")
    return numbers


def parse_box(value: str | Sequence[float]) -> Box:
    """A box from ``"x0,y0,x1,y1"`` or 4 numbers (pixels of the input image); corners in either order."""
    x0, y0, x1, y1 = _numbers(value, (4,), "box")
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def parse_point(value: str | Sequence[float]) -> Point:
    """A point from ``"x,y"`` or ``"x,y,label"`` (label 1 foreground, the default; 0 background)."""
    numbers = _numbers(value, (2, 3), "point")
    label = int(numbers[2]) if len(numbers) == 3 else 1
    if label not in (0, 1):
        raise ConfigError(f"a point's label is 1 (foreground) or 0 (background); got {value!r}")
    return numbers[0], numbers[1], label


def _one_or_many(value, size_of_one: tuple[int, ...]) -> list:
    """A single prompt (a string or a flat sequence of numbers) as a one-item list; a list stays a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    items = list(value)
    if items and not isinstance(items[0], (str, Sequence)) and len(items) in size_of_one:
        return [items]
    return items


@dataclass
class ImagePrompts:
    """Prompts for one image, in pixels of its input grid: x along the first spatial axis, y the second.

    Attributes:
        boxes: (x0, y0, x1, y1) per object (inclusive pixel indices, MedSAM's convention).
        points: (x, y, label) clicks, label 1 foreground, 0 background; they go with every box (or make one
            object when there is no box).
        slice_index: 3D: the slice (last axis) that `boxes` and `points` are drawn on.
        slice_boxes: 3D: boxes per slice (from a prior mask), used instead of `boxes`.
        from_mask: the boxes come from a prior mask: where it has none, nothing is segmented (instead of
            SAM's no-prompt mode).
    """

    boxes: list[Box] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    slice_index: int | None = None
    slice_boxes: dict[int, list[Box]] = field(default_factory=dict)
    from_mask: bool = False

    @classmethod
    def build(cls, box=None, points=None, slice_index: int | None = None) -> ImagePrompts:
        """Prompts from loose values: `box` one box (``"x0,y0,x1,y1"`` or 4 numbers) or a list of them,
        `points` one point (``"x,y[,label]"`` or 2-3 numbers) or a list of them."""
        return cls(
            boxes=[parse_box(b) for b in _one_or_many(box, (4,))],
            points=[parse_point(p) for p in _one_or_many(points, (2, 3))],
            slice_index=None if slice_index is None else int(slice_index),
        )

    @classmethod
    def from_label_map(cls, mask: np.ndarray | torch.Tensor, min_pixels: int = 1) -> ImagePrompts:
        """Box prompts from a label map on the input grid, (W, H) or (W, H, D): one box per connected
        component of each label, per slice in 3D. An empty mask gives an empty prediction."""
        array = np.asarray(mask)
        if array.ndim == 2:
            return cls(boxes=component_boxes(array, min_pixels), from_mask=True)
        slices = {k: component_boxes(array[..., k], min_pixels) for k in range(array.shape[-1])}
        return cls(slice_boxes={k: boxes for k, boxes in slices.items() if boxes}, from_mask=True)
