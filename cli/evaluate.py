"""`medattn evaluate PRED REF --out DIR`: score predicted label maps against references, print a summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _parse_labels(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        labels = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as error:
        raise typer.BadParameter(f"expected comma-separated integers such as 1,2; got {text!r}") from error
    if not labels or min(labels) < 1:
        raise typer.BadParameter(f"labels are positive integers (0 is background); got {text!r}")
    return labels


def _stat(block: dict, digits: int = 3) -> str:
    """'mean ± std' of a summary statistic block, with the undefined count when there is one."""
    mean, std = block["mean"], block["std"]
    text = "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return text + (f" [dim]({block['n_undefined']} undef.)[/]" if block["n_undefined"] else "")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _tables(summary: dict) -> tuple[Table, Table]:
    metrics = Table(title=f"{summary['n_cases']} cases, mean ± SD", title_justify="left")
    for column in (
        "label",
        "Dice",
        "HD95 mm",
        "ASSD mm",
        "surface Dice",
        "vol. diff mL",
        "lesion recall",
        "patient F1",
    ):
        metrics.add_column(column, justify="right" if column != "label" else "left")
    strata = Table(title="lesion-wise recall by reference lesion volume", title_justify="left")
    strata.add_column("label")
    for name in ("<1", "1-3", "3-10", ">10"):
        strata.add_column(f"{name} mL", justify="right")
    for label, block in summary["labels"].items():
        stats, lesions = block["metrics"], block["lesions"]
        metrics.add_row(
            label,
            _stat(stats["dice"]),
            _stat(stats["hd95_mm"], 2),
            _stat(stats["assd_mm"], 2),
            _stat(stats["surface_dice"]),
            _stat(stats["vol_diff_ml"], 2),
            f"{_ratio(lesions['recall'])} ({lesions['ref_tp']}/{lesions['n_ref']})",
            _ratio(block["patients"]["f1"]),
        )
        strata.add_row(
            label,
            *(
                f"{_ratio(cell['recall'])} ({cell['detected']}/{cell['n_ref']})" if cell["n_ref"] else "-"
                for cell in lesions["strata"].values()
            ),
        )
    return metrics, strata


def evaluate(
    pred: Path = typer.Argument(
        ...,
        metavar="PRED",
        help="Predicted label maps: a folder of <case_id>.nii.gz (.nrrd, .mha, .png, .dcm DICOM SEG) files, "
        "or one file.",
    ),
    ref: Path = typer.Argument(
        ..., metavar="REF", help="Reference label maps with the same case ids (a folder), or one file."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for metrics.csv, lesions.csv and summary.json."
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Comma-separated labels to evaluate, e.g. 1,2 (default: every label found)."
    ),
    tolerance: float = typer.Option(1.0, "--tolerance", help="Surface Dice tolerance in mm."),
    resample: bool = typer.Option(
        False,
        "--resample",
        help="Resample a prediction on another grid onto the reference grid (nearest neighbour); else fail.",
    ),
    plot: bool = typer.Option(
        False, "--plot", help="Also save dice_boxplot.png and volume_bland_altman.png (needs matplotlib)."
    ),
    detection_threshold: float = typer.Option(
        0.0,
        "--detection-threshold",
        help="Dice above which a predicted lesion detects a reference lesion (0: any overlap).",
    ),
    min_lesion_voxels: int = typer.Option(
        1, "--min-lesion-voxels", help="Smallest connected component counted as a lesion, in voxels."
    ),
    workers: int = typer.Option(
        1, "--workers", "-j", min=1, help="Cases evaluated in parallel, one process each (more memory)."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Fail when a reference case has no prediction, instead of scoring it as empty.",
    ),
    probabilities: Path | None = typer.Option(
        None,
        "--probabilities",
        help="Folder of predict's <case>_probabilities.nii.gz (--save-probabilities): adds each label's "
        "expected calibration error and Brier score to summary.json.",
    ),
) -> None:
    """Score predictions against references: Dice, IoU, precision, recall, HD95 and ASSD (mm), surface Dice,
    volumes (mL) and lesion-wise detection, per case and label.

    With predict's components.csv in PRED (predict --uncertainty), lesions.csv gets each predicted lesion's
    confidence and summary.json the AUROC of confidence for true- against false-positive lesions.

    Grids must match: a mismatch is an error unless --resample.

    A reference case without a prediction is scored as an empty prediction and reported (--strict: error).

    A case that cannot be scored (unreadable, non-integer labels, another grid) is reported and the others
    are scored; exit code 1 when any case failed or on any error.
    """
    from medattn.pipelines.evaluate import evaluate as run_evaluation

    console, errors = Console(), Console(stderr=True)
    with errors.status("evaluating") as status:
        result = run_evaluation(
            pred,
            ref,
            out,
            labels=_parse_labels(labels),
            tolerance_mm=tolerance,
            resample=resample,
            plot=plot,
            detection_threshold=detection_threshold,
            min_lesion_voxels=min_lesion_voxels,
            strict=strict,
            workers=workers,
            probabilities=probabilities,
            progress=lambda case: status.update(f"evaluating: {case} done"),
        )
    metrics, strata = _tables(result.summary)
    console.print(metrics)
    console.print(strata)
    if result.missing_predictions:
        names = ", ".join(result.missing_predictions)
        errors.print(
            f"[yellow]warning:[/] no prediction for {names}: scored as empty predictions", highlight=False
        )
    if result.unmatched_predictions:
        names = ", ".join(result.unmatched_predictions)
        errors.print(
            f"[yellow]warning:[/] predictions without a reference, ignored: {names}", highlight=False
        )
    for failure in result.failed:
        errors.print(f"[red]{escape(failure.case)} failed:[/] {escape(failure.error)}", highlight=False)
    console.print(f"wrote {', '.join(path.name for path in result.files.values())} to {out}", highlight=False)
    if result.failed:
        errors.print(f"[red]{len(result.failed)} case(s) could not be scored[/] (listed in summary.json)")
        raise typer.Exit(1)
