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
        Path("runs/medattn"),
        "--out",
        "-o",
        help="Run folder; ends as a model package (with --folds or --fold, an ensemble package of its "
        "fold_K folders).",
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
            bar.update(task, completed=stats.get("epoch", 0), status=shown, description=_epochs(stats))

        def on_step(stats: dict) -> None:
            if "loss" in stats:
                status = f"step {stats.get('step', '')} loss {stats['loss']:.3f}"
                bar.update(task, status=status, description=_epochs(stats))

        result = run_training(data, out=out, options=options, on_step=on_step, on_epoch_end=on_epoch_end)
    for fold in result.folds:
        _print_package("fold package", fold)
    _print_package("ensemble package" if result.folds else "model package", result)
    if result.frozen_parameters:
        Console().print(
            f"trainable {result.trainable_parameters:,} / frozen {result.frozen_parameters:,} parameters"
        )


def _epochs(stats: dict) -> str:
    """The progress bar's label: which fold's epochs, in k-fold training."""
    return f"fold {stats['fold']} epochs" if "fold" in stats else "epochs"


def _print_package(kind: str, result) -> None:
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    score = "mean of the folds' best val Dice" if result.folds else "best val Dice"
    Console().print(
        f"{kind}: [bold]{result.package}[/] ({score} {best}, {result.epochs} epochs, "
        f"stopped by {result.stopped_by})"
    )
