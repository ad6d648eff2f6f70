"""`evaluate`'s confidence side: lesions' confidence from components.csv, calibration from probabilities.

- components.csv (written by `medattn predict --uncertainty` beside the masks, one row per connected
  component of each label): a predicted lesion of lesions.csv gets the `confidence` of the component of
  the same case and label whose centroid (world RAS mm) lies within half a voxel of its own, on every axis
  of the reference grid. Matching by position, not by component number, keeps it right when evaluate
  drops small lesions (`min_lesion_voxels`) or re-indexes the prediction onto the reference grid. Where
  two components qualify (a ring around a dot shares its centroid), the one closest in volume wins.
  summary.json then gets, per label, the AUROC of confidence for telling true-positive from
  false-positive predicted lesions (`medattn.metrics.calibration.auroc`), with the count of each.
- `--probabilities DIR` (predict's `--save-probabilities`: `<case>_probabilities.nii.gz`, float32
  channels last, one channel per class, on the prediction's grid): each foreground label's expected
  calibration error and Brier score over every voxel of every case (`CalibrationCounts`), in summary.json.
  Memory: a worker holds one case's probability volume (C float32 channels) beside its label maps.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from medattn.errors import GeometryError, InputNotFoundError, MedattnError
from medattn.inference.uncertainty import COMPONENT_COLUMNS
from medattn.metrics.calibration import CalibrationCounts, auroc
from medattn.metrics.case import CaseResult, LesionRow
from medattn.pipelines.evaluate_inputs import GRID_ATOL_MM, case_id

COMPONENTS_FILE = "components.csv"
#: Columns of components.csv, in order (the file predict writes; evaluate reads those it needs by name).
_NEEDED = ("case", "label", "component", "volume_ml", "centroid_x", "centroid_y", "centroid_z", "confidence")
DEFINITIONS = {
    "confidence": "a predicted lesion's confidence is that of the components.csv row of its case and label "
    "whose centroid is within half a voxel of its own on every axis; lesions.confidence.auroc = P(a true "
    "positive's confidence > a false positive's), ties 1/2, over lesions with a confidence",
    "calibration": "one label against the rest over every voxel of every case with probabilities: ECE over "
    "15 equal-width bins of p (sum of bin share x |mean p - fraction labelled|), Brier = mean (p - y)^2",
}
PROBABILITY_SUFFIXES = ("_probabilities.nii.gz", "_probabilities.nii")


@dataclass(frozen=True)
class Component:
    """One row of components.csv: a connected component of one label of one predicted mask."""

    case: str
    label: int
    component: int
    volume_ml: float
    centroid: tuple[float, float, float]
    confidence: float


def components_file(pred: Path) -> Path | None:
    """components.csv in the prediction folder (or beside a single prediction file), None when absent."""
    path = (pred if pred.is_dir() else pred.parent) / COMPONENTS_FILE
    return path if path.is_file() else None


def confidence_inputs(pred: Path, probabilities: str | None) -> Path | None:
    """The components.csv beside the predictions (None without one), checked before any case runs.

    Raises:
        MedattnError: components.csv is malformed (see `read_components`).
        InputNotFoundError: `probabilities` is given but is not a folder.
    """
    if probabilities is not None and not Path(probabilities).is_dir():
        raise InputNotFoundError(
            "no such folder of probability volumes (predict --save-probabilities writes them)", probabilities
        )
    path = components_file(pred)
    if path is not None:
        _read_once(path)
    return path


def read_components(path: Path) -> dict[tuple[str, int], list[Component]]:
    """components.csv's rows by (case, label).

    Raises:
        MedattnError: a needed column is missing or a value is not a number; names the file and line.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in _NEEDED if name not in (reader.fieldnames or [])]
        if missing:
            raise MedattnError(
                f"components.csv lacks column(s) {', '.join(missing)}; it needs "
                f"{', '.join(COMPONENT_COLUMNS)} (medattn predict --uncertainty writes it), or move it out "
                "of the prediction folder",
                path,
            )
        rows: dict[tuple[str, int], list[Component]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                component = Component(
                    case=row["case"],
                    label=int(row["label"]),
                    component=int(row["component"]),
                    volume_ml=float(row["volume_ml"]),
                    centroid=(float(row["centroid_x"]), float(row["centroid_y"]), float(row["centroid_z"])),
                    confidence=float(row["confidence"]) if row["confidence"].strip() else math.nan,
                )
            except (TypeError, ValueError) as error:
                raise MedattnError(f"components.csv line {line}: {error}", path) from error
            rows.setdefault((component.case, component.label), []).append(component)
    return rows


@lru_cache(maxsize=2)
def _cached_components(path: str, modified_ns: int, size: int) -> dict[tuple[str, int], list[Component]]:
    return read_components(Path(path))


def _read_once(path: Path) -> dict[tuple[str, int], list[Component]]:
    """`read_components` once per process and file version (each worker reads it once, not per case)."""
    stat = path.stat()
    return _cached_components(str(path), stat.st_mtime_ns, stat.st_size)


def case_components(pred_path: Path | None) -> dict[tuple[str, int], list[Component]] | None:
    """The components.csv beside a prediction file (or in a prediction folder), by (case, label); None
    without one."""
    path = None if pred_path is None else components_file(pred_path)
    return None if path is None else _read_once(path)


def _within_half_voxel(offsets_mm: np.ndarray, affine: np.ndarray, spatial_dims: int) -> np.ndarray:
    """Which world offsets (N, 3) in mm are at most half a voxel along every axis of the grid (in 2D also
    within half the smallest spacing of the image's plane)."""
    axes = affine[:3, :spatial_dims]
    spacing = float(np.linalg.norm(axes, axis=0).min())
    steps = offsets_mm @ np.linalg.pinv(axes).T  # (N, spatial_dims) in voxels
    off_plane = np.linalg.norm(steps @ axes.T - offsets_mm, axis=1)
    return np.all(np.abs(steps) <= 0.5 + GRID_ATOL_MM / spacing, axis=1) & (off_plane <= 0.5 * spacing)


def with_confidence(
    lesions: list[LesionRow],
    components: dict[tuple[str, int], list[Component]],
    case: str,
    affine: np.ndarray,
    spatial_dims: int,
) -> list[LesionRow]:
    """The lesions with each predicted lesion's confidence from its component (module docstring); a
    predicted lesion no component matches keeps NaN. Among components equally close in volume, the one
    with the lesion's own number wins."""
    rows = []
    for lesion in lesions:
        candidates = components.get((case, lesion.label), []) if lesion.source == "pred" else []
        if candidates:
            centroid = [lesion.x_mm, lesion.y_mm, lesion.z_mm]
            offsets = np.array([item.centroid for item in candidates]) - centroid
            inside = _within_half_voxel(offsets, affine, spatial_dims)
            near = [item for item, ok in zip(candidates, inside, strict=True) if ok]
            if near:
                best = min(
                    near,
                    key=lambda item: (
                        abs(item.volume_ml - lesion.volume_ml),
                        item.component != lesion.lesion,
                    ),
                )
                lesion = replace(lesion, confidence=best.confidence)
        rows.append(lesion)
    return rows


def probability_file(folder: Path, case: str) -> Path | None:
    """`<case>_probabilities.nii.gz` (or .nii) in `folder`, None when absent."""
    for suffix in PROBABILITY_SUFFIXES:
        if (folder / f"{case}{suffix}").is_file():
            return folder / f"{case}{suffix}"
    return None


def load_probabilities(path: Path, ref_shape: tuple[int, ...], ref_affine: np.ndarray) -> np.ndarray:
    """A probability volume as (C, *ref_shape) on the reference grid.

    The file holds (X, Y, Z, C) (2D cases: (X, Y, C)) on the prediction's grid; a grid that holds the
    reference's voxels in another axis order or direction is re-indexed exactly.

    Raises:
        GeometryError: the volume is on another grid; names both.
    """
    from medattn.io.geometry import onto_grid
    from medattn.io.nifti import read_nifti

    image = read_nifti(path)  # (C, X, Y, Z); a 2D case's (X, Y, C) file reads as (1, X, Y, C)
    array, affine = np.asarray(image.array), np.asarray(image.affine, dtype=np.float64)
    dims = len(ref_shape)
    if dims == 2 and array.shape[0] == 1:  # a 2D file (X, Y, C)
        array = np.moveaxis(array[0], -1, 0)
    elif dims == 2 and array.shape[-1] == 1:  # a one-slice volume (X, Y, 1, C)
        array = array[..., 0]
    columns = [*range(dims), 3]
    if array.shape[1:] == tuple(ref_shape) and np.allclose(
        affine[:3, columns], ref_affine[:3, columns], rtol=0, atol=GRID_ATOL_MM
    ):
        return array
    if dims == 3 and array.ndim == 4:
        try:
            return np.stack([onto_grid(channel, affine, tuple(ref_shape), ref_affine) for channel in array])
        except GeometryError:
            pass
    raise GeometryError(
        f"probabilities of shape {array.shape[1:]} on another grid than the reference (shape "
        f"{tuple(ref_shape)}); give predict's --save-probabilities files of these predictions",
        path,
    )


def calibration_counts(path: Path, ref: np.ndarray, ref_affine: np.ndarray) -> dict[int, CalibrationCounts]:
    """Each foreground label's (channels 1 .. C - 1) calibration counts of one case's probability file."""
    probabilities = load_probabilities(path, ref.shape, ref_affine)
    if probabilities.shape[0] < 2:
        raise GeometryError("a probability volume needs one channel per class, background included", path)
    try:
        return {
            label: CalibrationCounts.from_arrays(probabilities[label], ref == label)
            for label in range(1, probabilities.shape[0])
        }
    except ValueError as error:
        raise GeometryError(str(error), path) from error


def score_confidence(
    result: CaseResult,
    ref: np.ndarray,
    ref_affine: np.ndarray,
    pred_path: Path | None,
    probabilities: str | None,
) -> CaseResult:
    """One case's result with its predicted lesions' confidence (when components.csv is beside the
    prediction) and its calibration counts (when `probabilities` names the folder of probability files)."""
    name = result.case if pred_path is None else case_id(pred_path)
    components = case_components(pred_path)
    lesions = result.lesions
    if components is not None:
        lesions = with_confidence(lesions, components, name, ref_affine, ref.ndim)
    calibration = None
    if probabilities is not None and (path := probability_file(Path(probabilities), name)) is not None:
        calibration = calibration_counts(path, ref, ref_affine)
    return replace(result, lesions=lesions, calibration=calibration)


def _confidence_block(lesions: list[LesionRow]) -> dict:
    """AUROC of confidence for true- vs false-positive predicted lesions of one label, with the counts."""
    predicted = [lesion for lesion in lesions if lesion.source == "pred"]
    scored = [lesion for lesion in predicted if math.isfinite(lesion.confidence)]
    true = [lesion.confidence for lesion in scored if lesion.status == "TP"]
    false = [lesion.confidence for lesion in scored if lesion.status == "FP"]
    value = auroc(true, false)
    return {
        "auroc": value if math.isfinite(value) else None,
        "n_tp": len(true),
        "n_fp": len(false),
        "n_without_confidence": len(predicted) - len(scored),
    }


def _calibration_block(results: list[CaseResult], label: int) -> dict | None:
    """Pooled ECE and Brier score of one label over the cases with probabilities; None without any."""
    counts, n_cases = CalibrationCounts.empty(), 0
    for result in results:
        if result.calibration is not None and label in result.calibration:
            counts += result.calibration[label]
            n_cases += 1
    if not n_cases:
        return None
    return {
        "ece": counts.expected_calibration_error(),
        "brier": counts.brier_score(),
        "n_bins": counts.voxels.size,
        "n_cases": n_cases,
        "n_voxels": counts.n_voxels,
    }


def add_confidence_summary(
    summary: dict,
    results: list[CaseResult],
    lesions: list[LesionRow],
    components: Path | None,
    probabilities: str | None,
) -> dict:
    """summary.json's confidence entries, added to `summary` in place (and returned).

    Top level: `definitions` of both, `components` (the components.csv read, or null) and, with
    probabilities, `probabilities` (the folder) and `cases_without_probabilities`. Per label:
    `lesions.confidence` (auroc, n_tp, n_fp, n_without_confidence; null without components.csv) and
    `calibration` (ece, brier, n_bins, n_cases, n_voxels; null without probabilities for that label).
    """
    summary["definitions"] = {**summary["definitions"], **DEFINITIONS}
    summary["components"] = None if components is None else str(components)
    if probabilities is not None:
        summary["probabilities"] = str(probabilities)
        summary["cases_without_probabilities"] = [
            result.case for result in results if result.calibration is None
        ]
    for label, block in summary["labels"].items():
        mine = [lesion for lesion in lesions if lesion.label == int(label)]
        block["lesions"]["confidence"] = None if components is None else _confidence_block(mine)
        block["calibration"] = _calibration_block(results, int(label))
    return summary
