"""`medattn track INPUT... --out OUT (--model PKG | --masks DIR)`: one patient's lesions over visits."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from medattn.cli.options import with_options
from medattn.pipelines.track_options import TrackOptions, check_track_options


@with_options
def track(
    inputs: list[Path] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="One patient's scans at two or more dates: files, DICOM series folders, or one folder holding "
        "them (found as `predict` finds cases).",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        metavar="OUT",
        help="Folder for lesions.csv, growth.csv, masks/, report.html/json.",
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", metavar="PKG", help="Model package that segments every visit."
    ),
    masks: Path | None = typer.Option(
        None,
        "--masks",
        metavar="DIR",
        help="Use existing label maps instead of a model: DIR/<case_id>.nii.gz (or .seg.nrrd, .nrrd, .mha, "
        ".dcm), with the case id `medattn predict` gives each scan.",
    ),
    options: TrackOptions = None,
) -> None:
    """Follow one patient's lesions over time: segment every visit (or read its mask), register every visit
    rigidly to the first, match the lesions (26-connected components of the label) across visits, and
    report their volume, diameters, growth and doubling time.

    Dates come from DICOM (StudyDate, SeriesDate, AcquisitionDate), else from a YYYY-MM-DD or YYYYMMDD in
    the file or folder name, else --dates. Writes OUT/lesions.csv (a row per lesion and visit), OUT/growth.csv
    (a row per lesion), OUT/masks/<case_id>.seg.nrrd (a segment per lesion, one colour per lesion at every
    visit), OUT/report.json and OUT/report.html (opens offline).
    """
    from medattn.pipelines.track import track as run_track

    options = check_track_options(options)
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        task = bar.add_task("tracking", total=None)

        def on_step(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = run_track(list(inputs), out, model=model, masks=masks, options=options, on_step=on_step)
        bar.update(task, description="done", completed=bar.tasks[0].total)
    counts: dict[str, int] = {}
    for row in result.growth:
        counts[row.category] = counts.get(row.category, 0) + 1
    summary = ", ".join(f"{n} {category}" for category, n in sorted(counts.items())) or "no lesion"
    Console().print(
        f"{len(result.visits)} visits, {len(result.growth)} lesions ({summary}) -> "
        f"{result.out / 'report.html'}",
        highlight=False,
    )
