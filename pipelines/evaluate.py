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
    InputNotFoundError,
    MedattnError,
    failure_message,
)
from medattn.io.atomic import atomic_path
from medattn.metrics.case import (
    LESION_COLUMNS,
    METRIC_COLUMNS,
    CaseResult,
    LabelMetrics,
    LesionRow,
    evaluate_label_maps,
)
from medattn.metrics.summary import json_safe, summarize
from medattn.pipelines.evaluate_confidence import add_confidence_summary, confidence_inputs, score_confidence
from medattn.pipelines.evaluate_inputs import (
    load_label_map,
    onto_reference_grid,
    pair_cases,
    seg_reference_on_prediction_grid,
)

DEFINITIONS = {
    "surface": "DeepMind surface-distance surfels (area-weighted, voxel-corner grid); HD95 = max of the two "
    "directed area-weighted 95th percentiles; ASSD = area-weighted mean over both surfaces",
    "empty": "both empty: dice=iou=precision=recall=surface_dice=1, distances 0; one empty: dice=iou=0, "
    "surface_dice=0, distances undefined (null), precision/recall undefined when their denominator is 0",
    "lesion": "connected components with full connectivity; matched when Dice > detection_threshold",
    "volume": "voxel count x |det(affine[:3,:3])| / 1000 mL; vol_diff_ml = pred - ref",
    "missing_prediction": "scored as an empty prediction (strict=True: error)",
}


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


def _evaluate_case(
    key: str, pred_path: Path | None, ref_path: Path, labels: list[int] | None, settings: EvaluateSettings
) -> CaseResult:
    ref, ref_affine = load_label_map(ref_path)
    if pred_path is None:
        pred = np.zeros_like(ref)
    else:
        pred, pred_affine = load_label_map(pred_path)
        widened = seg_reference_on_prediction_grid(ref, ref_affine, pred, pred_affine, ref_path)
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


def output_files(out: Path) -> dict[str, Path]:
    """The tables `write_outputs` writes into `out`, by name: metrics.csv, lesions.csv, summary.json."""
    return {"metrics": out / "metrics.csv", "lesions": out / "lesions.csv", "summary": out / "summary.json"}


def write_outputs(result: EvaluationResult, out: Path, plot: bool) -> dict[str, Path]:
    """Write metrics.csv, lesions.csv, summary.json (and the plots) into `out`; returns them by name."""
    files = output_files(out)
    write_csv(files["metrics"], METRIC_COLUMNS, result.metrics)
    write_csv(files["lesions"], LESION_COLUMNS, result.lesions)
    with atomic_path(files["summary"]) as tmp:
        tmp.write_text(json.dumps(json_safe(result.summary), indent=2, allow_nan=False) + "\n")
    if plot:
        from medattn.pipelines.evaluate_plots import plot_dice, plot_volumes

        files["dice_plot"] = plot_dice(result.metrics, out / "dice_boxplot.png")
        files["volume_plot"] = plot_volumes(result.metrics, out / "volume_bland_altman.png")
    return files
