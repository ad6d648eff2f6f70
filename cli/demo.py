"""`medattn demo`: segment the bundled samples and show the result (the README's first command)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def demo(
    out: Path = typer.Option(
        Path("demo_output"), "--out", "-o", help="Where masks, tables and the montage go."
    ),
    samples: Path = typer.Option(None, help="The sample_data folder (default: the repository's)."),
    device: str = typer.Option("auto", help="auto|cpu|cuda[:N]."),
) -> None:
    """Segment the bundled brain MRI and endoscopy samples with the bundled model packages.

    Writes NIfTI and Slicer .seg.nrrd masks, volumes.csv, a Dice check against the reference labels, label
    PNGs with contour overlays, and montage.png.
    """
    import csv

    from medattn.pipelines.demo import run_demo

    console = Console()
    with console.status("segmenting the sample data..."):
        result = run_demo(out, samples, device)
    table = Table(title="brain MRI test cases: Dice against the reference labels", title_justify="left")
    for column in ("case", "label", "Dice"):
        table.add_column(column)
    for key, value in result.brain_dice.items():
        case, label = key.split("/", 1)
        table.add_row(case, label, f"{value:.3f}")
    console.print(table)
    volumes = Table(title="volumes (mL)", title_justify="left")
    for column in ("case", "label", "volume_ml"):
        volumes.add_column(column)
    with open(result.volumes_csv[0]) as handle:
        for row in csv.DictReader(handle):
            volumes.add_row(row["case"], row["name"], f"{float(row['volume_ml']):.2f}")
    console.print(volumes)
    console.print(
        f"{result.cases} cases segmented -> {result.out}  (montage: {result.montage}; open "
        f"{result.out / 'brain_mri' / 'slicer'} in 3D Slicer)"
    )
