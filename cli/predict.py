"""`medattn predict INPUT OUTPUT --model PKG`: segment a file, a folder, a DICOM tree or a video."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medattn.cli.options import with_options
from medattn.pipelines.predict_options import PredictOptions, check_options


@with_options
def predict(
    inputs: Path = typer.Argument(
        ..., metavar="INPUT", help="A scan, a folder of scans, a DICOM tree or a video."
    ),
    output: Path = typer.Argument(..., metavar="OUTPUT", help="Folder for masks, volumes.csv, predict.json."),
    model: list[Path] = typer.Option(
        ...,
        "--model",
        "-m",
        metavar="PKG",
        help="Model package folder (from `medattn train`), or an ensemble package (`train --folds`); repeat "
        "to ensemble several packages (their probabilities averaged).",
    ),
    options: PredictOptions = None,
) -> None:
    """Segment every case under INPUT; masks land on each input's own grid. Exit code 1 if a case failed.

    A video is segmented frame by frame by a 2D model, streamed: OUTPUT/<case>/frame_NNNNNN.png masks,
    <case>_overlay.mp4 with the contours drawn and <case>_frames.csv with each frame's mask area.

    SAM-family packages (sam, sam_adapter, ccsam, medsam_ca) segment each image whole at the model's input
    size, volumes slice by slice, with the prompts given (--box/--point, --prior-mask or --box-model); with
    none, in SAM's no-prompt mode.

    Many scans: --ray local|auto|ADDRESS predicts on a Ray cluster, each worker holding the package (pip
    install 'medattn\\[ray]'); --part K/N (K from 0) predicts one of N shares of the cases sorted by id, one
    job each of a job array, and the part that finishes last merges the reports (--merge does it by hand).
    """
    from medattn.pipelines.predict import predict as run_prediction

    options = check_options(output, options)
    console = Console(stderr=True)
    if options.compile:
        console.print("--compile: the first window batch waits for torch.compile (about a minute, once)")
    failures = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("predicting", total=None)

        def on_case(result, index: int, total: int) -> None:
            bar.update(task, total=total, completed=index + 1, description=f"{result.case}: {result.status}")
            if result.fps is not None:
                console.print(f"{result.case}: {result.frames} frames at {result.fps:.1f} frames/s")
            if result.status == "failed":
                failures.append(result)
                message = escape(f"{result.case} failed: ")  # errors hold brackets rich would read
                console.print(f"[red]{message}[/]{escape(str(result.error))}", highlight=False)

        def on_frames(case: str, done: int, total: int | None) -> None:
            bar.update(task, description=f"{case}: frame {done}" + (f"/{total}" if total else ""))

        results = run_prediction(
            inputs, output, list(model), options=options, on_case=on_case, on_frames=on_frames
        )
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    failed = sum(r.status == "failed" for r in results)  # --merge: the parts' failures
    if options.merge:
        Console().print(f"merged the parts: {len(results)} cases, {failed} failed -> {output}")
    else:
        Console().print(f"{done} predicted, {skipped} skipped (already done), {failed} failed -> {output}")
    if failed:
        raise typer.Exit(1)
