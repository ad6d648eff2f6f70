"""Clinical segmentation metrics in mm and mL: overlap, surface distance, volume, lesion-wise detection.

- `overlap`: Dice, IoU, precision, recall (empty-mask rules in its docstring).
- `surface`: HD95, Hausdorff, ASSD, surface Dice at a tolerance, on DeepMind surface-distance's surfels.
- `volume`: spacing and voxel volume from an affine, mask volume in mL.
- `lesions`: connected components, lesion matching, volume strata (< 1, 1-3, 3-10, > 10 mL).
- `calibration`: expected calibration error and Brier score of probabilities, AUROC of confidences.
- `case`: all of the above for every label of one case, on cropped boxes.
- `summary`: mean/std/median per label and stratum, patient-wise detection, undefined values counted.

Names are imported lazily so `import medattn.metrics` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OverlapCounts": "medattn.metrics.overlap",
    "dice": "medattn.metrics.overlap",
    "iou": "medattn.metrics.overlap",
    "precision": "medattn.metrics.overlap",
    "recall": "medattn.metrics.overlap",
    "SurfaceDistances": "medattn.metrics.surface",
    "surface_distances": "medattn.metrics.surface",
    "hausdorff_distance": "medattn.metrics.surface",
    "average_symmetric_surface_distance": "medattn.metrics.surface",
    "surface_dice": "medattn.metrics.surface",
    "surface_metrics": "medattn.metrics.surface",
    "spacing_from_affine": "medattn.metrics.volume",
    "voxel_volume_ml": "medattn.metrics.volume",
    "volume_ml": "medattn.metrics.volume",
    "STRATA": "medattn.metrics.lesions",
    "Lesion": "medattn.metrics.lesions",
    "connected_components": "medattn.metrics.lesions",
    "match_lesions": "medattn.metrics.lesions",
    "volume_stratum": "medattn.metrics.lesions",
    "CalibrationCounts": "medattn.metrics.calibration",
    "expected_calibration_error": "medattn.metrics.calibration",
    "brier_score": "medattn.metrics.calibration",
    "auroc": "medattn.metrics.calibration",
    "LabelMetrics": "medattn.metrics.case",
    "LesionRow": "medattn.metrics.case",
    "CaseResult": "medattn.metrics.case",
    "METRIC_COLUMNS": "medattn.metrics.case",
    "LESION_COLUMNS": "medattn.metrics.case",
    "evaluate_label_maps": "medattn.metrics.case",
    "summarize": "medattn.metrics.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medattn.metrics' has no attribute {name!r}")
