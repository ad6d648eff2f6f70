"""Bring probabilities back from the model's grid to the input grid, and decide labels there.

Aligned 3D grids (the preprocessing only reorients and rescales) take the separable resampling of
`medattn.transforms.aligned_resample`, which gives MONAI Invertd's values at a fraction of the time and
memory (BENCHMARKS.md, end-to-end prediction); labels alone are interpolated only where the 8 model-grid
neighbours of a voxel disagree. Grids that are not aligned (an oblique scan resampled to RAS) fall back to
Invertd through the preprocessing chain.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from medattn.device import to_host
from medattn.errors import ConfigError
from medattn.inference.postprocess import argmax_labels
from medattn.transforms.aligned_resample import (
    aligned_axis_map,
    axis_neighbours,
    resample_aligned,
    source_order,
    source_positions,
)

# Share of mixed cells above which `resample_labels_aligned` resamples densely instead: interpolating a
# mixed voxel from its corners costs about twice a voxel of the dense path (BENCHMARKS.md, end-to-end
# prediction).
_MIXED_LIMIT = 0.4
# Target voxels per slab whose mixed cells `resample_labels_aligned` interpolates at once (bounds the
# gathered corners' memory, about 200 bytes per mixed voxel).
_MIXED_SLAB_VOXELS = 1 << 20


def resample_labels_aligned(
    probabilities: torch.Tensor,
    source_affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: Sequence[int],
) -> torch.Tensor | None:
    """The argmax of `resample_aligned(probabilities, ...)` without building the target-grid probabilities.

    A target voxel's trilinear value is a convex combination of the 8 source voxels around it (its cell).
    Where one class wins at all 8 corners it wins in every such combination (its margin over each other
    class is non-negative at every corner), so the voxel takes that label directly, gathered from the
    source-grid labels. Only voxels in cells whose corners disagree, a thin shell along the label
    boundaries, are interpolated (from their 8 corners) and compared. Labels equal
    ``argmax_labels(resample_aligned(...))`` except where two classes tie to float rounding.

    For a trained model the mixed cells are a small share of the voxels (13 % for the sample brain at
    1.5 mm back onto 1 mm), so this costs about a third of the dense argmax (BENCHMARKS.md, end-to-end
    prediction).

    Args:
        probabilities: class scores (C, X, Y, Z) on the source grid (softmax probabilities or logits).
        source_affine: the source grid's voxel -> world matrix (4x4).
        target_affine: the target grid's voxel -> world matrix (4x4).
        target_shape: the target grid's (X, Y, Z) voxels.

    Returns:
        Labels (*target_shape) as uint8 (int32 beyond 256 classes), or None when the grids are not
        axis-aligned.
    """

    axes = aligned_axis_map(source_affine, target_affine)
    if axes is None or probabilities.ndim != 4:
        return None
    source_labels = argmax_labels(probabilities)
    # Per source axis: each target position's lower and upper neighbour and the upper one's weight.
    neighbours: list = [None] * 3
    for target_axis, (source_axis, scale, offset) in enumerate(axes):
        positions = source_positions(scale, offset, target_shape[target_axis])
        neighbours[source_axis] = axis_neighbours(
            positions, probabilities.shape[1 + source_axis], probabilities.dtype
        )
    # The label of each target voxel's lower corner and whether its cell mixes labels, gathered together:
    # packed into one signed integer whose sign bit marks a mixed cell.
    mixed_cells = _mixed_cells(source_labels)
    if int(mixed_cells.sum()) > _MIXED_LIMIT * mixed_cells.numel():
        # Boundaries everywhere (an untrained network's speckle): the dense resampling is cheaper.
        return argmax_labels(resample_aligned(probabilities, source_affine, target_affine, target_shape))
    packed_dtype, sign_bit = (torch.int16, 15) if source_labels.dtype == torch.uint8 else (torch.int64, 63)
    mixed_cells = mixed_cells.to(packed_dtype) << sign_bit
    packed = source_labels.to(packed_dtype) | mixed_cells
    for source_axis, (lower, _, _) in enumerate(neighbours):
        packed = packed.index_select(source_axis, lower)
    mixed = packed < 0
    labels = (packed & ((1 << sign_bit) - 1)).to(source_labels.dtype)
    del packed, mixed_cells
    # Channels last, so each corner is one gather of C contiguous floats per voxel.
    rows = probabilities.permute(1, 2, 3, 0).contiguous().view(-1, probabilities.shape[0])
    strides = (probabilities.shape[2] * probabilities.shape[3], probabilities.shape[3], 1)
    slab = max(1, _MIXED_SLAB_VOXELS // max(1, labels[0].numel()))
    for start in range(0, labels.shape[0], slab):
        index = mixed[start : start + slab].nonzero()  # (N, 3), axis 0 from `start`
        if len(index):
            index[:, 0] += start
            values = _trilinear_at(rows, strides, index, neighbours)
            labels[index[:, 0], index[:, 1], index[:, 2]] = argmax_labels(values.T).to(labels.dtype)
    return labels.permute(*source_order(axes)).contiguous()


def _mixed_cells(labels: torch.Tensor) -> torch.Tensor:
    """Whether the 8 corners of each cell, ``labels[i:i+2, j:j+2, k:k+2]`` (edge voxels repeated past the
    far edges, as the border-clamped interpolation reads them), hold more than one label."""
    padded = labels
    for dim in range(3):
        padded = torch.cat([padded, padded.narrow(dim, padded.shape[dim] - 1, 1)], dim)
    x, y, z = labels.shape
    mixed = torch.zeros(labels.shape, dtype=torch.bool)
    for a, b, c in itertools.product((0, 1), repeat=3):
        if a or b or c:
            mixed |= padded[a : a + x, b : b + y, c : c + z] != labels
    return mixed


def _trilinear_at(
    rows: torch.Tensor, strides: tuple[int, int, int], index: torch.Tensor, neighbours: list
) -> torch.Tensor:
    """Trilinear values (N, C) at target voxels `index` (N, 3, source axis order) from the source volume
    as `rows` (X*Y*Z, C), given each axis's (lower, upper, weight) per target position."""
    ends, weights = [], []
    for axis, (lower, upper, weight) in enumerate(neighbours):
        at = index[:, axis]
        ends.append((lower.index_select(0, at) * strides[axis], upper.index_select(0, at) * strides[axis]))
        weights.append(weight.index_select(0, at)[:, None])

    def along_last(a: int, b: int) -> torch.Tensor:
        base = ends[0][a] + ends[1][b]
        low = rows.index_select(0, base + ends[2][0])
        return low.lerp_(rows.index_select(0, base + ends[2][1]), weights[2])

    planes = [along_last(a, 0).lerp_(along_last(a, 1), weights[1]) for a in (0, 1)]
    return planes[0].lerp_(planes[1], weights[0])


def to_input_grid(
    volume: torch.Tensor, preprocessed: MetaTensor, original: MetaTensor, preprocessor
) -> MetaTensor:
    """A model-grid volume (C, *model grid) on `original`'s grid: orientation and resampling undone.

    Aligned 3D grids take the separable path (`resample_aligned`); oblique ones MONAI's Invertd through
    the preprocessing chain (`preprocessor`, a `medattn.transforms.preprocess.Preprocessor`), bilinear.
    2D images are predicted on their own grid and only take the input's affine.

    Raises:
        ConfigError: the inverted volume does not have the input's shape (a preprocessing chain that
            cannot be inverted).
    """
    volume = to_host(volume)
    if original.ndim == 3:
        return MetaTensor(volume, affine=original.affine)
    fast = resample_aligned(
        volume, np.asarray(preprocessed.affine), np.asarray(original.affine), original.shape[1:]
    )
    if fast is not None:
        return MetaTensor(fast, affine=original.affine)
    meta = {k: v for k, v in preprocessed.meta.items() if k != "affine"}
    tracked = MetaTensor(volume, affine=preprocessed.affine, meta=meta)
    tracked.applied_operations = list(preprocessed.applied_operations)
    inverter = Invertd("pred", transform=preprocessor.transform, orig_keys="image", nearest_interp=False)
    with preprocessor.lock:
        inverted = inverter({"pred": tracked, "image": preprocessed})["pred"]
    if tuple(inverted.shape[1:]) != tuple(original.shape[1:]):
        raise ConfigError(
            f"internal: inverted shape {tuple(inverted.shape[1:])} != input {tuple(original.shape[1:])}"
        )
    return MetaTensor(inverted.as_tensor(), affine=original.affine)


def labels_on_input_grid(
    probs: torch.Tensor,
    preprocessed: MetaTensor,
    original: MetaTensor,
    preprocessor,
    lesions: Sequence[int] = (),
    lesion_threshold: float | None = None,
    keep_probabilities: bool = False,
) -> tuple[torch.Tensor, MetaTensor | None]:
    """Labels (*input grid) from model-grid probabilities, and the input-grid probabilities if asked.

    The argmax is taken on the input grid (interpolating probabilities, not labels, keeps thin
    structures). A label of `lesions` wins wherever its probability reaches `lesion_threshold`, whatever
    the other classes score. Without probabilities to keep, aligned 3D grids go straight to labels
    (`resample_labels_aligned`: probabilities are interpolated only along label boundaries), the threshold
    then applied on the model's grid, where the labels are decided.
    """
    if not keep_probabilities and original.ndim == 4:
        scores = to_host(probs)
        if lesions:
            scores = scores.clone()  # lift a lesion above every other class where it reaches the threshold
            for value in lesions:
                scores[value] += (scores[value] >= lesion_threshold).to(scores.dtype)
        labels = resample_labels_aligned(
            scores, np.asarray(preprocessed.affine), np.asarray(original.affine), original.shape[1:]
        )
        if labels is not None:
            return labels, None
    on_input = to_input_grid(probs, preprocessed, original, preprocessor)
    labels = labels_from_probabilities(on_input.as_tensor(), lesions, lesion_threshold)
    return labels, on_input if keep_probabilities else None


def labels_from_probabilities(
    probabilities: torch.Tensor, lesions: Sequence[int] = (), lesion_threshold: float | None = None
) -> torch.Tensor:
    """Labels (*spatial) from (C, *spatial) probabilities: the argmax, except that a label of `lesions`
    wins wherever its probability reaches `lesion_threshold`."""
    labels = argmax_labels(probabilities)
    for value in lesions:
        labels[probabilities[value] >= lesion_threshold] = value
    return labels
