"""Lesion-wise detection: connected components, matching of predicted to reference lesions, volume strata.

Definitions (those of Bouget et al.'s object-wise validation for the meningioma papers, made explicit):

- a lesion is a connected component of a binary mask with full connectivity (26 neighbours in 3D, 8 in
  2D); components smaller than `min_voxels` are ignored on both sides (annotation or prediction specks);
- a reference lesion and a predicted lesion match when their Dice exceeds `threshold` (default 0: any
  shared voxel). A reference lesion with a match is detected (TP), otherwise missed (FN); a predicted
  lesion with a match is a TP, otherwise a false positive (FP);
- lesion-wise recall = detected reference lesions / reference lesions; lesion-wise precision = matched
  predicted lesions / predicted lesions (one predicted blob covering two lesions detects both);
- reference lesions fall into volume strata < 1, 1-3, 3-10 and > 10 mL (lower bound included), the
  sizes under which the meningioma papers report their misses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

STRATA: tuple[tuple[str, float, float], ...] = (
    ("<1", 0.0, 1.0),
    ("1-3", 1.0, 3.0),
    ("3-10", 3.0, 10.0),
    (">10", 10.0, math.inf),
)


def volume_stratum(volume_ml: float) -> str:
    """Name of the volume stratum (`<1`, `1-3`, `3-10`, `>10` mL) a lesion of this volume falls in."""
    for name, low, high in STRATA:
        if low <= volume_ml < high:
            return name
    raise ValueError(f"a volume must be >= 0 mL, got {volume_ml}")


def connected_components(mask: np.ndarray, min_voxels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Label the lesions of a binary mask with full connectivity, largest first.

    Args:
        mask: boolean 2D or 3D mask.
        min_voxels: components with fewer voxels are dropped (set to 0).

    Returns:
        (labels, sizes): an int32 array where lesion k (1-based, by decreasing size) has value k, and the
        voxel count of each lesion (`sizes[k - 1]`).
    """
    raw, rank, sizes = _components(np.asarray(mask, dtype=bool), min_voxels)
    return rank.astype(np.int32)[raw], sizes


def _components(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw, rank, sizes): scipy's component ids, the lesion number of each id (1 = largest, 0 = dropped)
    and the kept lesions' voxel counts; ranking the ids, not relabelling the volume, saves a pass."""
    raw, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    sizes = np.bincount(raw.ravel(), minlength=count + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    kept = order[sizes[order] >= min_voxels]
    rank = np.zeros(count + 1, dtype=np.int64)
    rank[kept + 1] = np.arange(1, kept.size + 1)
    return raw, rank, sizes[kept]


def _centroids(
    mask: np.ndarray, raw: np.ndarray, rank: np.ndarray, sizes: np.ndarray
) -> list[tuple[float, ...]]:
    """Centre of mass (voxel indices) of each kept lesion, from one pass over the mask's voxels."""
    if sizes.size == 0:
        return []
    where = np.nonzero(mask)
    lesion = rank[raw[where]]
    sums = [np.bincount(lesion, weights=axis, minlength=sizes.size + 1)[1:] for axis in where]
    return [tuple(float(total[k]) / sizes[k] for total in sums) for k in range(sizes.size)]


@dataclass(frozen=True)
class Lesion:
    """One connected component of the reference (`source='ref'`) or the prediction (`source='pred'`).

    Attributes:
        source: 'ref' or 'pred'.
        index: 1-based number among the source's lesions of this case and label, largest first.
        status: 'TP' or 'FN' for reference lesions, 'TP' or 'FP' for predicted ones.
        voxels: size in voxels.
        volume_ml: size in mL.
        overlap_ml: volume of this lesion covered by the other side's lesions, in mL.
        best_dice: Dice with the best-matching lesion of the other side (0 when it touches none).
        centroid: centre of mass in voxel indices of the full grid.
    """

    source: str
    index: int
    status: str
    voxels: int
    volume_ml: float
    overlap_ml: float
    best_dice: float
    centroid: tuple[float, ...]

    @property
    def stratum(self) -> str:
        return volume_stratum(self.volume_ml)


def match_lesions(
    pred: np.ndarray,
    ref: np.ndarray,
    voxel_ml: float,
    threshold: float = 0.0,
    min_voxels: int = 1,
    offset: tuple[int, ...] | None = None,
) -> list[Lesion]:
    """Find the lesions of both masks and match them (see the module docstring).

    Args:
        pred: boolean prediction mask (may be a crop of the full grid).
        ref: boolean reference mask of the same shape.
        voxel_ml: volume of one voxel in mL.
        threshold: Dice above which two lesions match (0: any overlap).
        min_voxels: smallest lesion counted, in voxels.
        offset: index of the crop's first voxel in the full grid, added to centroids.

    Returns:
        Reference lesions (largest first), then predicted lesions (largest first).
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    offset = offset or (0,) * ref.ndim
    ref_raw, ref_rank, ref_sizes = _components(ref, min_voxels)
    pred_raw, pred_rank, pred_sizes = _components(pred, min_voxels)
    n_pred = pred_sizes.size
    # Sparse pair counts: only voxels inside a kept lesion on both sides contribute.
    both = ref & pred
    ref_of_voxel, pred_of_voxel = ref_rank[ref_raw[both]], pred_rank[pred_raw[both]]
    kept = (ref_of_voxel > 0) & (pred_of_voxel > 0)
    pairs = ref_of_voxel[kept] * (n_pred + 1) + pred_of_voxel[kept]
    keys, shared = np.unique(pairs, return_counts=True)
    ref_of, pred_of = keys // (n_pred + 1) - 1, keys % (n_pred + 1) - 1
    pair_dice = 2.0 * shared / (ref_sizes[ref_of] + pred_sizes[pred_of]) if keys.size else np.zeros(0)

    def side(source, mask, raw, rank, sizes, mine, hit, miss):
        best = np.zeros(sizes.size)
        np.maximum.at(best, mine, pair_dice)
        overlap = np.bincount(mine, weights=shared, minlength=sizes.size) if sizes.size else best
        centroids = _centroids(mask, raw, rank, sizes)
        return [
            Lesion(
                source=source,
                index=k + 1,
                status=hit if best[k] > threshold else miss,
                voxels=int(sizes[k]),
                volume_ml=float(sizes[k]) * voxel_ml,
                overlap_ml=float(overlap[k]) * voxel_ml,
                best_dice=float(best[k]),
                centroid=tuple(float(c) + o for c, o in zip(centroids[k], offset, strict=True)),
            )
            for k in range(sizes.size)
        ]

    return side("ref", ref, ref_raw, ref_rank, ref_sizes, ref_of, "TP", "FN") + side(
        "pred", pred, pred_raw, pred_rank, pred_sizes, pred_of, "TP", "FP"
    )


def lesion_counts(lesions: list[Lesion]) -> dict[str, int]:
    """TP/FN counts of reference lesions and TP/FP counts of predicted lesions."""
    ref = [lesion.status for lesion in lesions if lesion.source == "ref"]
    pred = [lesion.status for lesion in lesions if lesion.source == "pred"]
    return {
        "n_ref": len(ref),
        "n_pred": len(pred),
        "ref_tp": ref.count("TP"),
        "fn": ref.count("FN"),
        "pred_tp": pred.count("TP"),
        "fp": pred.count("FP"),
    }
