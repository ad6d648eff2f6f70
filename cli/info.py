"""`medattn info PATH`: list the cases medattn finds and how each reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

if TYPE_CHECKING:  # the pipeline pulls in torch and MONAI: import it when the command runs, not for --help
    from medattn.pipelines.info import CaseInfo


def _format_range(info: CaseInfo) -> str:
    if info.intensity_min is None:
        return "-"
    return f"{info.intensity_min:.4g} .. {info.intensity_max:.4g}"


def _table(rows: list[CaseInfo], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "case",
        "kind",
        "channels",
        "shape",
        "spacing (mm)",
        "orient.",
        "modality",
        "range",
        "label",
    ):
        table.add_column(column, overflow="fold")
    for info in rows:
        if info.error:
            table.add_row(info.id, info.kind, "", "[red]unreadable (see below)[/]", "", "", "", "", "")
            continue
        shape = " x ".join(map(str, info.shape)) + (f" x {info.frames} fr" if info.frames else "")
        spacing = " x ".join(f"{s:.3g}" for s in info.spacing)
        label = "yes" if info.label else "-"
        table.add_row(
            info.id,
            info.kind,
            str(info.channels),
            shape,
            spacing,
            info.orientation or "-",
            info.modality or "-",
            _format_range(info),
            label,
        )
    return table


def info(
    path: Path = typer.Argument(
        ..., metavar="PATH", help="A scan file, a DICOM series folder, or a folder of cases in any layout."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print a machine-readable JSON list (shape, spacing, affine per case) instead."
    ),
) -> None:
    """Show the cases found under PATH: shape, spacing, orientation, modality and intensity range.

    Layouts: nnU-Net (imagesTr/labelsTr, dataset.json), images/ + labels/, a flat folder, a DICOM tree
    (one case per series), videos. Exit code 1 if any case cannot be read.
    """
    from medattn.pipelines.info import describe

    dataset, infos = describe(path)
    rows = (
        list(infos)
        if as_json
        else list(
            track(
                infos, total=len(dataset), description="reading", transient=True, console=Console(stderr=True)
            )
        )
    )
    if as_json:
        typer.echo(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        title = f"{path}: {len(rows)} case(s), layout {dataset.layout}"
        if dataset.labels:
            title += " | labels " + ", ".join(f"{v}={n}" for v, n in sorted(dataset.labels.items()))
        Console().print(_table(rows, title))
    failed = [row for row in rows if row.error]
    if failed:
        errors = Console(stderr=True, soft_wrap=True)
        if not as_json:
            for row in failed:
                errors.print(f"[red]{row.id}:[/] {row.error}", highlight=False)
        errors.print(f"[red]{len(failed)} of {len(rows)} case(s) could not be read[/]")
        raise typer.Exit(1)
