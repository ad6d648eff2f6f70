"""`medattn train DATA --model NAME --out RUN`: train on a folder of labelled scans, end with a package."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from medattn.cli.options import with_options
from medattn.pipelines.train_options import TrainOptions


@with_options
def train(
    data: Path = typer.Argument(
        ..., metavar="DATA", help="Labelled scans: nnU-Net layout, images/ + labels/, ..."
    ),
    out: Path = typer.Option(
        Path("runs/medattn"), "--out", "-o", help="Run folder; ends as a model package."
    ),
    options: TrainOptions = None,
) -> None:
    """Train a segmentation model; the run folder becomes a model package for `medattn predict`."""
    from medattn.pipelines.train import train as run_training

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("epochs", total=options.epochs, status="preparing")

        def on_epoch_end(stats: dict) -> None:
            shown = ", ".join(
                f"{k} {v:.3f}"
                for k, v in stats.items()
                if isinstance(v, float) and (k.startswith("val") or k.endswith("loss"))
            )
            bar.update(task, completed=stats.get("epoch", 0), status=shown)

        def on_step(stats: dict) -> None:
            if "loss" in stats:
                bar.update(task, status=f"step {stats.get('step', '')} loss {stats['loss']:.3f}")

        result = run_training(data, out=out, options=options, on_step=on_step, on_epoch_end=on_epoch_end)
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    Console().print(
        f"model package: [bold]{result.package}[/] (best val Dice {best}, {result.epochs} epochs, "
        f"stopped by {result.stopped_by})"
    )
    if result.frozen_parameters:
        Console().print(
            f"trainable {result.trainable_parameters:,} / frozen {result.frozen_parameters:,} parameters"
        )
