"""All metrics of one case: per label, overlap, surface, volume and lesions, each on that label's cropped box.

Speed comes from never touching the full grid more than once per map: one `find_objects` pass gives every
label's bounding box, and each label's masks, distance transforms and components live in the union of its
two boxes only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from medattn.metrics.lesions import Lesion, match_lesions
from medattn.metrics.overlap import OverlapCounts
from medattn.metrics.surface import surface_metrics
from medattn.metrics.volume import spacing_from_affine, voxel_volume_ml

if TYPE_CHECKING:
    from medattn.metrics.calibration import CalibrationCounts

#: Columns of metrics.csv, in order (a contract: scripts read them by name).
METRIC_COLUMNS = (
    "case",
    "label",
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95_mm",
    "assd_mm",
    "surface_dice",
    "vol_pred_ml",
    "vol_ref_ml",
    "vol_diff_ml",
)
#: Columns of lesions.csv, in order (centroids in world RAS+ mm; `confidence` that of predict's
#: components.csv for a predicted lesion, empty for reference lesions and without components.csv).
LESION_COLUMNS = (
    "case",
    "label",
    "source",
    "lesion",
    "status",
    "voxels",
    "volume_ml",
    "stratum",
    "overlap_ml",
    "best_dice",
    "x_mm",
    "y_mm",
    "z_mm",
    "confidence",
)


@dataclass(frozen=True)
class LabelMetrics:
    """The metrics of one label in one case; NaN marks an undefined value (see medattn.metrics docs).

    `hausdorff_mm` (the 100th percentile) is kept for the API and summary.json; metrics.csv holds
    exactly `METRIC_COLUMNS`. `vol_diff_ml` is prediction minus reference.
    """

    case: str
    label: int
    dice: float
    iou: float
    precision: float
    recall: float
    hd95_mm: float
    assd_mm: float
    surface_dice: float
    vol_pred_ml: float
    vol_ref_ml: float
    vol_diff_ml: float
    hausdorff_mm: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class LesionRow:
    """One lesion of one case and label, as written to lesions.csv (see `LESION_COLUMNS`); `confidence` is
    NaN (an empty cell) unless a predicted lesion got one from predict's components.csv."""

    case: str
    label: int
    source: str
    lesion: int
    status: str
    voxels: int
    volume_ml: float
    stratum: str
    overlap_ml: float
    best_dice: float
    x_mm: float
    y_mm: float
    z_mm: float
    confidence: float = math.nan

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class CaseResult:
    """Everything measured on one case: one `LabelMetrics` per label, every lesion of every label and,
    when its probabilities were given, each label's `CalibrationCounts` (None: not measured)."""

    case: str
    metrics: list[LabelMetrics]
    lesions: list[LesionRow]
    calibration: dict[int, CalibrationCounts] | None = None


def as_label_map(array: ArrayLike, name: str = "label map") -> np.ndarray:
    """An integer label map from an array; fractional or negative values raise ValueError."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.view(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and array.min() < 0:
            raise ValueError(f"{name} holds negative labels (minimum {array.min()})")
        return array
    rounded = np.rint(array)
    if not np.allclose(rounded, array, atol=1e-3, rtol=0):
        raise ValueError(f"{name} holds non-integer values (probabilities?); a label map is needed")
    if rounded.size and rounded.min() < 0:
        raise ValueError(f"{name} holds negative labels (minimum {rounded.min()})")
    return rounded.astype(np.int32)


def _union_box(first: tuple[slice, ...] | None, second: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if first is None or second is None:
        return first or second
    pairs = zip(first, second, strict=True)
    return tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in pairs)


def _boxes(label_map: np.ndarray, max_label: int) -> list[tuple[slice, ...] | None]:
    """Bounding box of each label 1..max_label (None where absent), from one pass over the map."""
    boxes = ndimage.find_objects(label_map, max_label=max_label) if max_label else []
    return boxes + [None] * (max_label - len(boxes))


def _to_world(affine: np.ndarray, index: Sequence[float]) -> tuple[float, float, float]:
    spatial_dims = len(index)
    point = affine[:-1, :spatial_dims] @ np.asarray(index, dtype=np.float64) + affine[:-1, -1]
    point = np.concatenate([point, np.zeros(3 - point.size)])
    return float(point[0]), float(point[1]), float(point[2])


def evaluate_label_maps(
    pred: ArrayLike,
    ref: ArrayLike,
    affine: ArrayLike,
    labels: Iterable[int] | None = None,
    *,
    case: str = "",
    tolerance_mm: float = 1.0,
    detection_threshold: float = 0.0,
    min_lesion_voxels: int = 1,
) -> CaseResult:
    """Compute every metric of a prediction against a reference on the same grid.

    Args:
        pred: predicted label map (2D or 3D spatial array of non-negative integers).
        ref: reference label map of the same shape.
        affine: the grid's voxel -> world (mm) affine; spacing and voxel volume come from it.
        labels: labels to evaluate; None takes those present in either map. A label absent from both
            maps gets a row with both masks empty (Dice 1, distances 0).
        case: case id put on every row.
        tolerance_mm: surface Dice tolerance in mm.
        detection_threshold: lesion match threshold on Dice (0: any overlap), see medattn.metrics.lesions.
        min_lesion_voxels: smallest connected component counted as a lesion.

    Returns:
        CaseResult with one LabelMetrics per label and the lesions of every label.
    """
    pred, ref = as_label_map(pred, "prediction"), as_label_map(ref, "reference")
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    spatial_dims = ref.ndim
    spacing = spacing_from_affine(affine, spatial_dims)
    voxel_ml = voxel_volume_ml(affine, spatial_dims)
    if labels is None:
        pred_boxes, ref_boxes = ndimage.find_objects(pred), ndimage.find_objects(ref)
        max_label = max(len(pred_boxes), len(ref_boxes))
        pred_boxes += [None] * (max_label - len(pred_boxes))
        ref_boxes += [None] * (max_label - len(ref_boxes))
        labels = [k + 1 for k in range(max_label) if pred_boxes[k] is not None or ref_boxes[k] is not None]
    else:
        labels = [int(label) for label in labels]
        if labels and min(labels) < 1:
            raise ValueError(f"labels are positive integers (0 is background), got {labels}")
        max_label = max(labels, default=0)
        pred_boxes, ref_boxes = _boxes(pred, max_label), _boxes(ref, max_label)
    rows, lesion_rows = [], []
    for label in labels:
        box = _union_box(pred_boxes[label - 1], ref_boxes[label - 1])
        if box is None:  # the label is in neither map: a one-voxel empty crop gives the both-empty values
            box = (slice(0, 1),) * spatial_dims
            pred_mask = ref_mask = np.zeros((1,) * spatial_dims, dtype=bool)
        else:
            pred_mask, ref_mask = pred[box] == label, ref[box] == label
        counts = OverlapCounts.from_masks(pred_mask, ref_mask)
        surface = surface_metrics(pred_mask, ref_mask, spacing, tolerance_mm)
        lesions = match_lesions(
            pred_mask,
            ref_mask,
            voxel_ml,
            threshold=detection_threshold,
            min_voxels=min_lesion_voxels,
            offset=tuple(s.start for s in box),
        )
        vol_pred, vol_ref = (counts.tp + counts.fp) * voxel_ml, (counts.tp + counts.fn) * voxel_ml
        rows.append(
            LabelMetrics(
                case=case,
                label=int(label),
                **counts.as_dict(),
                hd95_mm=surface["hd95_mm"],
                assd_mm=surface["assd_mm"],
                surface_dice=surface["surface_dice"],
                vol_pred_ml=vol_pred,
                vol_ref_ml=vol_ref,
                vol_diff_ml=vol_pred - vol_ref,
                hausdorff_mm=surface["hausdorff_mm"],
            )
        )
        lesion_rows.extend(_lesion_row(case, int(label), lesion, affine) for lesion in lesions)
    return CaseResult(case=case, metrics=rows, lesions=lesion_rows)


def _lesion_row(case: str, label: int, lesion: Lesion, affine: np.ndarray) -> LesionRow:
    x, y, z = _to_world(affine, lesion.centroid)
    return LesionRow(
        case=case,
        label=label,
        source=lesion.source,
        lesion=lesion.index,
        status=lesion.status,
        voxels=lesion.voxels,
        volume_ml=lesion.volume_ml,
        stratum=lesion.stratum,
        overlap_ml=lesion.overlap_ml,
        best_dice=lesion.best_dice,
        x_mm=x,
        y_mm=y,
        z_mm=z,
    )
