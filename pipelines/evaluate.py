"""`evaluate`: pair predicted and reference label maps by case id, check grids, measure, write CSV and JSON.

Outputs in the `out` folder (each written atomically):
- metrics.csv: one row per case and label, columns `METRIC_COLUMNS` exactly; an undefined value (see
  medattn.metrics.overlap / surface) is an empty cell.
- lesions.csv: one row per connected component of either side, columns `LESION_COLUMNS`: source
  (`ref`/`pred`), lesion number (largest first), status (ref: TP/FN, pred: TP/FP), voxels, volume_ml, volume
  stratum, overlap_ml (volume covered by the other side), best_dice (with the best-matching lesion) and the
  centroid in world RAS+ mm (x_mm, y_mm, z_mm), so a missed lesion can be found in a viewer, and a predicted
  lesion's confidence from predict's components.csv (see `medattn.pipelines.evaluate_confidence`).
- summary.json: settings, definitions, case lists and `medattn.metrics.summary.summarize` per label, with
  the confidence AUROC and, given probabilities, the calibration of `evaluate_confidence`.
- with `plot=True`: dice_boxplot.png and volume_bland_altman.png (needs matplotlib, extra `plot`).

Cases: a file's case id is its name without the image suffix (`.nii.gz`, `.nii`, `.seg.nrrd`, `.nrrd`,
`.mha`, `.png`, ...). A prediction without a reference is listed and ignored. A reference without a
prediction is scored as an empty prediction (Dice 0: leaving it out would flatter the method) and listed
in summary.json; `strict=True` makes it an error instead, like nnU-Net.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medattn import __version__
from medattn.errors import (
    GeometryError,
    InputNotFoundError,
    MedattnError,
    NoCasesFoundError,
    UnreadableImageError,
    failure_message,
)
from medattn.io.atomic import atomic_path, full_suffix
from medattn.metrics.case import (
    LESION_COLUMNS,
    METRIC_COLUMNS,
    CaseResult,
    LabelMetrics,
    LesionRow,
    as_label_map,
    evaluate_label_maps,
)
from medattn.metrics.summary import json_safe, summarize
from medattn.pipelines.evaluate_confidence import add_confidence_summary, confidence_inputs, score_confidence

DEFINITIONS = {
    "surface": "DeepMind surface-distance surfels (area-weighted, voxel-corner grid); HD95 = max of the two "
    "directed area-weighted 95th percentiles; ASSD = area-weighted mean over both surfaces",
    "empty": "both empty: dice=iou=precision=recall=surface_dice=1, distances 0; one empty: dice=iou=0, "
    "surface_dice=0, distances undefined (null), precision/recall undefined when their denominator is 0",
    "lesion": "connected components with full connectivity; matched when Dice > detection_threshold",
    "volume": "voxel count x |det(affine[:3,:3])| / 1000 mL; vol_diff_ml = pred - ref",
    "missing_prediction": "scored as an empty prediction (strict=True: error)",
}
# World-coordinate tolerance (mm) under which two affines describe the same grid (float32 headers round).
GRID_ATOL_MM = 1e-3


@dataclass
class EvaluateSettings:
    """Options of one evaluation, saved in summary.json; the CLI options map one-to-one onto these fields."""

    labels: list[int] | None = None
    tolerance_mm: float = 1.0
    resample: bool = False
    plot: bool = False
    detection_threshold: float = 0.0
    min_lesion_voxels: int = 1
    strict: bool = False
    workers: int = 1
    probabilities: str | None = None


@dataclass
class EvaluationResult:
    """What `evaluate` measured: rows as dataclasses (no pandas), the summary dict, and the files written."""

    metrics: list[LabelMetrics]
    lesions: list[LesionRow]
    summary: dict
    missing_predictions: list[str] = field(default_factory=list)
    unmatched_predictions: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    failed: list[CaseFailure] = field(default_factory=list)


@dataclass
class CaseFailure:
    """A case that could not be scored (unreadable file, non-integer labels, another grid): named with the
    reason, left out of metrics.csv and the summary statistics, listed in summary.json."""

    case: str
    error: str


def case_id(path: str | Path) -> str:
    """A file's case id: its name without the image suffix (`case_001.nii.gz` -> `case_001`)."""
    path = Path(path)
    suffix = full_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _label_files(folder: Path) -> dict[str, Path]:
    from medattn.io.formats import supported_suffix

    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not supported_suffix(path):
            continue
        key = case_id(path)
        if key in files:
            raise MedattnError(
                f"two files for case {key!r}: {files[key].name} and {path.name}; keep one", folder
            )
        files[key] = path
    return files


def pair_cases(pred: Path, ref: Path) -> tuple[list[tuple[str, Path | None, Path]], list[str]]:
    """Match predictions to references by case id: ([(id, pred or None, ref)], prediction ids without ref)."""
    for path in (pred, ref):
        if not path.exists():
            raise InputNotFoundError("no such file or folder", path)
    if pred.is_file() and ref.is_file():
        return [(case_id(ref), pred, ref)], []
    if pred.is_file() or ref.is_file():
        raise MedattnError("give two folders (one file per case, matched by name) or two files", pred)
    preds, refs = _label_files(pred), _label_files(ref)
    if not refs:
        raise NoCasesFoundError(
            "no label files (.nii.gz, .nrrd, .mha, .png, ...) in the reference folder", ref
        )
    if not set(preds) & set(refs):
        raise NoCasesFoundError(
            f"no prediction file name matches a reference case id (references: {', '.join(sorted(refs)[:5])}"
            f"{', ...' if len(refs) > 5 else ''}); name predictions <case_id>.nii.gz like the references",
            pred,
        )
    pairs = [(key, preds.get(key), path) for key, path in sorted(refs.items())]
    return pairs, sorted(set(preds) - set(refs))


def load_label_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A label file as (integer array of spatial axes, 4x4 voxel -> RAS mm affine)."""
    from medattn.io import load_image
    from medattn.io.dicom.seg import read_dicom_seg
    from medattn.io.geometry import affine_4x4

    image = read_dicom_seg(path) if _is_dicom_seg(path) else load_image(path, dtype=None)
    array = np.asarray(image.array)
    if image.meta.get("time_axis"):
        raise GeometryError("a video or image stack is not a label map", path)
    if array.shape[0] > 1 and not all(np.array_equal(array[0], channel) for channel in array[1:]):
        raise GeometryError(f"has {array.shape[0]} different channels; evaluate needs one label map", path)
    from medattn.io.mask_images import binarized, is_binary_mask_file

    if is_binary_mask_file(path, array[0]):  # a 0/255 mask image (Kvasir, ISIC)
        return binarized(array[0]), affine_4x4(image.affine, array.ndim - 1)
    try:
        labels = as_label_map(array[0])
    except ValueError as error:
        raise UnreadableImageError(str(error), path) from error
    return labels, affine_4x4(image.affine, labels.ndim)


def _is_dicom_seg(path: Path) -> bool:
    """A DICOM Segmentation object (medattn predict --format dicom-seg writes them), by its header."""
    if not path.is_file() or full_suffix(path) not in ("", ".dcm", ".dicom"):
        return False
    from medattn.io.dicom.headers import dcmread

    try:
        header = dcmread(path, pixels=False, specific_tags=["Modality"])
    except UnreadableImageError:  # not DICOM at all, or damaged: load_image names the problem
        return False
    return str(header.get("Modality", "")) == "SEG"


def _describe_grid(shape: Sequence[int], affine: np.ndarray) -> str:
    spacing = np.round(np.linalg.norm(affine[:3, : len(shape)], axis=0), 4).tolist()
    origin = np.round(affine[:3, 3], 3).tolist()
    return f"shape {tuple(int(n) for n in shape)}, spacing {spacing} mm, origin {origin} mm"


def onto_reference_grid(
    pred: np.ndarray,
    pred_affine: np.ndarray,
    ref: np.ndarray,
    ref_affine: np.ndarray,
    resample: bool,
    path: Path,
) -> np.ndarray:
    """The prediction on the reference grid: unchanged when the grids match, re-indexed exactly when it
    holds the same voxels in another axis order (or, for a DICOM SEG, a block of them), else GeometryError
    or, with `resample`, nearest-neighbour resampling with MONAI's SpatialResample (labels never blend)."""
    if pred.shape == ref.shape and np.allclose(pred_affine, ref_affine, rtol=0, atol=GRID_ATOL_MM):
        return pred
    placed = _within_reference_grid(pred, pred_affine, ref.shape, ref_affine, allow_block=_is_dicom_seg(path))
    if placed is not None:
        return placed
    if not resample:
        raise GeometryError(
            f"prediction grid ({_describe_grid(pred.shape, pred_affine)}) differs from the reference grid "
            f"({_describe_grid(ref.shape, ref_affine)}); pass --resample (resample=True) to resample the "
            "prediction onto the reference grid with nearest neighbour",
            path,
        )
    if pred.ndim != ref.ndim:
        raise GeometryError(f"prediction is {pred.ndim}D, reference {ref.ndim}D: cannot resample", path)
    import torch
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    dims = ref.ndim
    source = MetaTensor(torch.from_numpy(pred[None].astype(np.float32)), affine=torch.as_tensor(pred_affine))
    resampler = SpatialResample(mode="nearest", padding_mode="zeros", dtype=np.float32)
    if dims == 2:  # MONAI's 2D affines are 3x3
        keep = [0, 1, 3]
        source.affine = torch.as_tensor(pred_affine[np.ix_(keep, keep)])
        target = torch.as_tensor(ref_affine[np.ix_(keep, keep)])
    else:
        target = torch.as_tensor(ref_affine)
    moved = resampler(source, dst_affine=target, spatial_size=ref.shape)
    return as_label_map(np.asarray(moved.detach().cpu().numpy())[0], "resampled prediction")


def _within_reference_grid(
    pred: np.ndarray,
    pred_affine: np.ndarray,
    ref_shape: Sequence[int],
    ref_affine: np.ndarray,
    allow_block: bool = False,
) -> np.ndarray | None:
    """A prediction on the reference grid's own voxels in another axis order or direction (an LPS writer
    against a RAS one), re-indexed exactly by `medattn.io.geometry.onto_grid`; with `allow_block` also one
    on a block of them, placed into an empty map of the reference's shape. None for any other grid.

    `allow_block` is for DICOM SEG predictions: a SEG omits its empty frames, so it covers only the slices
    with a segment, in highdicom's slice order. Other files of another shape stay an error (--resample),
    as they more likely come from a cropped or wrong input.
    """
    from medattn.io.geometry import onto_grid

    if pred.ndim != len(ref_shape) or pred.ndim not in (2, 3):
        return None
    try:
        return onto_grid(pred, pred_affine, tuple(ref_shape), ref_affine, allow_block=allow_block)
    except GeometryError:
        return None


def _seg_reference_on_prediction_grid(
    ref: np.ndarray, ref_affine: np.ndarray, pred: np.ndarray, pred_affine: np.ndarray, ref_path: Path
) -> np.ndarray | None:
    """A DICOM SEG reference (annotation tools omit its empty frames, so it spans only the painted slices)
    placed into the prediction's larger grid, when it is a block of that grid's voxels; None otherwise.
    Scoring then covers the whole scan: a false positive outside the painted slices still counts, which
    cropping the prediction to the SEG's slices (--resample) would hide."""
    if not _is_dicom_seg(ref_path) or ref.shape == pred.shape:
        return None
    return _within_reference_grid(ref, ref_affine, pred.shape, pred_affine, allow_block=True)


def _evaluate_case(
    key: str, pred_path: Path | None, ref_path: Path, labels: list[int] | None, settings: EvaluateSettings
) -> CaseResult:
    ref, ref_affine = load_label_map(ref_path)
    if pred_path is None:
        pred = np.zeros_like(ref)
    else:
        pred, pred_affine = load_label_map(pred_path)
        widened = _seg_reference_on_prediction_grid(ref, ref_affine, pred, pred_affine, ref_path)
        if widened is not None:  # a DICOM SEG reference covering only its painted slices
            ref, ref_affine = widened, pred_affine
        pred = onto_reference_grid(pred, pred_affine, ref, ref_affine, settings.resample, pred_path)
    if ref.ndim == 3 and ref.shape[-1] == 1:  # a single-slice volume is a 2D image: measure in-plane
        ref, pred = ref[..., 0], pred[..., 0]
    result = evaluate_label_maps(
        pred,
        ref,
        ref_affine,
        labels,
        case=key,
        tolerance_mm=settings.tolerance_mm,
        detection_threshold=settings.detection_threshold,
        min_lesion_voxels=settings.min_lesion_voxels,
    )
    return score_confidence(result, ref, ref_affine, pred_path, settings.probabilities)


def _evaluate_case_guarded(
    key: str, pred_path: Path | None, ref_path: Path, labels: list[int] | None, settings: EvaluateSettings
) -> CaseResult | CaseFailure:
    """`_evaluate_case`, or the case's failure: one bad file must not stop the others."""
    try:
        return _evaluate_case(key, pred_path, ref_path, labels, settings)
    except Exception as error:  # noqa: BLE001 - a bug on one case's data must not lose the others
        return CaseFailure(key, failure_message(error))


def _run_cases(
    pairs: list[tuple[str, Path | None, Path]],
    settings: EvaluateSettings,
    progress: Callable[[str], None] | None,
    guarded: bool = True,
) -> list[CaseResult | CaseFailure]:
    """Evaluate every pair, here or in `settings.workers` spawned processes; results in `pairs` order.
    `guarded`: a case's error becomes its CaseFailure (folders); else it is raised (two files)."""
    workers = settings.workers
    if workers <= 1 or len(pairs) <= 1:
        run = _evaluate_case_guarded if guarded else _evaluate_case
        results = []
        for key, pred_path, ref_path in pairs:
            results.append(run(key, pred_path, ref_path, settings.labels, settings))
            if progress is not None:
                progress(key)
        return results
    # forkserver, not fork: the parent may already run torch threads, which a fork would copy mid-flight.
    # The server imports the readers once (torch, MONAI: seconds), and every worker forks from it.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["medattn.pipelines.evaluate", "medattn.io.load"])
    done: dict[str, CaseResult | CaseFailure] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(pairs)), mp_context=context) as pool:
        futures = {
            pool.submit(_evaluate_case_guarded, key, pred_path, ref_path, settings.labels, settings): key
            for key, pred_path, ref_path in pairs
        }
        try:
            for future in as_completed(futures):
                done[futures[future]] = future.result()
                if progress is not None:
                    progress(futures[future])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [done[key] for key, _, _ in pairs]


def _fill_absent_labels(results: list[CaseResult], labels: list[int]) -> list[LabelMetrics]:
    """Rows for labels found in other cases but in neither map of this one: the both-empty values."""
    empty = np.zeros((1, 1, 1), dtype=np.uint8)
    rows = []
    for result in results:
        have = {row.label: row for row in result.metrics}
        for label in labels:
            if label not in have:
                filler = evaluate_label_maps(empty, empty, np.eye(4), [label], case=result.case)
                have[label] = filler.metrics[0]
            rows.append(have[label])
    return rows


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(round(value, 6))
    return str(value)


def write_csv(path: Path, columns: Sequence[str], rows: Sequence) -> None:
    """Rows (dataclasses) as CSV with exactly `columns`; NaN becomes an empty cell."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            values = row.as_dict()
            writer.writerow([_cell(values[name]) for name in columns])


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path | None = None,
    *,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
    resample: bool = False,
    plot: bool = False,
    detection_threshold: float = 0.0,
    min_lesion_voxels: int = 1,
    strict: bool = False,
    workers: int = 1,
    probabilities: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate predicted label maps against references: overlap, surface distances (mm), volumes, lesions.

    Args:
        pred: folder of predicted label maps (one file per case, named `<case_id>.<suffix>`) or one file.
        ref: folder of reference label maps with the same case ids, or one file.
        out: folder for metrics.csv, lesions.csv, summary.json (and plots); None writes nothing.
        labels: labels to evaluate; None takes every non-zero label found in any reference or prediction.
        tolerance_mm: surface Dice tolerance in mm.
        resample: resample a prediction on another grid onto its reference's (nearest neighbour);
            otherwise a grid mismatch raises GeometryError.
        plot: also save a Dice boxplot and a Bland-Altman plot of volumes (needs matplotlib).
        detection_threshold: Dice above which a predicted and a reference lesion match (0: any overlap).
        min_lesion_voxels: smallest connected component counted as a lesion, in voxels.
        strict: a reference case without prediction raises InputNotFoundError instead of scoring as empty.
        workers: cases evaluated at once, each in its own process (memory: about 3 label maps per worker).
        probabilities: folder of predict's `<case>_probabilities.nii.gz`: adds each label's ECE and Brier.
        progress: called with each case id once it is done.

    Returns:
        EvaluationResult with per-case/label rows, lesion rows, the summary dict and the written files.
        A case that cannot be scored (unreadable, non-integer labels, another grid without `resample`) is
        listed in `.failed` and summary.json's failed_cases with the reason; the others are scored.
    """
    settings = EvaluateSettings(
        labels=None if labels is None else sorted({int(label) for label in labels}),
        tolerance_mm=float(tolerance_mm),
        resample=resample,
        plot=plot,
        detection_threshold=float(detection_threshold),
        min_lesion_voxels=int(min_lesion_voxels),
        strict=strict,
        workers=int(workers),
        probabilities=None if probabilities is None else str(probabilities),
    )
    if workers < 1:
        raise MedattnError(f"workers must be at least 1, got {workers}")
    if settings.labels is not None and (not settings.labels or min(settings.labels) < 1):
        raise MedattnError(f"labels must be positive integers, got {labels}")
    started = time.perf_counter()
    pairs, unmatched = pair_cases(Path(pred), Path(ref))
    components = confidence_inputs(Path(pred), settings.probabilities)  # malformed or missing: fail now
    missing = [key for key, pred_path, _ in pairs if pred_path is None]
    if missing and strict:
        raise InputNotFoundError(f"no prediction for reference case(s) {', '.join(missing)}", pred)
    two_files = Path(pred).is_file() and Path(ref).is_file()  # one case: its error is the run's error
    outcomes = _run_cases(pairs, settings, progress, guarded=not two_files)
    failed = [outcome for outcome in outcomes if isinstance(outcome, CaseFailure)]
    results = [outcome for outcome in outcomes if not isinstance(outcome, CaseFailure)]
    all_labels = settings.labels or sorted({row.label for result in results for row in result.metrics})
    metrics = _fill_absent_labels(results, all_labels)
    lesions = [lesion for result in results for lesion in result.lesions]
    summary = {
        "medattn_version": __version__,
        "settings": asdict(settings),
        "definitions": DEFINITIONS,
        "n_cases": len(pairs),
        "n_scored": len(results),
        "failed_cases": [asdict(failure) for failure in failed],
        "missing_predictions": missing,
        "unmatched_predictions": unmatched,
        "labels": summarize(metrics, lesions),
        "seconds": round(time.perf_counter() - started, 3),
    }
    add_confidence_summary(summary, results, lesions, components, settings.probabilities)
    result = EvaluationResult(metrics, lesions, summary, missing, unmatched, failed=failed)
    if out is not None:
        result.files = write_outputs(result, Path(out), plot)
    return result


def write_outputs(result: EvaluationResult, out: Path, plot: bool) -> dict[str, Path]:
    """Write metrics.csv, lesions.csv, summary.json (and the plots) into `out`; returns them by name."""
    files = {"metrics": out / "metrics.csv", "lesions": out / "lesions.csv", "summary": out / "summary.json"}
    write_csv(files["metrics"], METRIC_COLUMNS, result.metrics)
    write_csv(files["lesions"], LESION_COLUMNS, result.lesions)
    with atomic_path(files["summary"]) as tmp:
        tmp.write_text(json.dumps(json_safe(result.summary), indent=2, allow_nan=False) + "\n")
    if plot:
        from medattn.pipelines.evaluate_plots import plot_dice, plot_volumes

        files["dice_plot"] = plot_dice(result.metrics, out / "dice_boxplot.png")
        files["volume_plot"] = plot_volumes(result.metrics, out / "volume_bland_altman.png")
    return files
