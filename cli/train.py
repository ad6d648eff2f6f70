"""`medattn train DATA --model NAME --out RUN`: train on a folder of labelled scans, end with a package."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace("x", ",").split(",")]
    except ValueError as error:
        raise typer.BadParameter(f"{option} takes comma-separated numbers, e.g. 1.0,1.0,3.0") from error


def train(
    data: Path = typer.Argument(
        ..., metavar="DATA", help="Labelled scans: nnU-Net layout, images/ + labels/, ..."
    ),
    model: str = typer.Option("agunet", "--model", "-m", help="Registry name; see `medattn models`."),
    out: Path = typer.Option(
        Path("runs/medattn"), "--out", "-o", help="Run folder; ends as a model package."
    ),
    spacing: str = typer.Option(None, help="Target spacing in mm, e.g. 1,1,3 (default: from the data)."),
    patch: str = typer.Option(None, help="Patch size in voxels, e.g. 128,128,64 (default: from the data)."),
    batch: int = typer.Option(None, help="Batch size (default: 2 in 3D, 8-12 in 2D)."),
    preset: str = typer.Option(
        None, help="Intensity preset: ct, mr or rgb (default: from the modality and intensities)."
    ),
    device: str = typer.Option("auto", help="auto|cpu|cuda[:N]."),
    amp: str = typer.Option("auto", help="bf16|fp16|off; auto = bf16 on CUDA where supported, off on CPU."),
    epochs: int = typer.Option(50, help="Epochs."),
    steps_per_epoch: int = typer.Option(
        None, help="Iterations per epoch (default: one pass over the data, at least 50 on CPU, 250 on CUDA)."
    ),
    max_time: float = typer.Option(None, help="Stop after this many seconds (still saves a package)."),
    val_fraction: float = typer.Option(0.2, help="Fraction of cases held out for validation."),
    fold: str = typer.Option(None, help="K/N: validate on fold K of N instead (splits saved in plan.json)."),
    seed: int = typer.Option(0, help="Seed for split, sampling and augmentation."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    optimizer: str = typer.Option("adamw", help="adamw|sgd."),
    schedule: str = typer.Option("poly", help="poly|cosine learning-rate schedule."),
    loss: str = typer.Option(
        None,
        help="dice_ce, dice_ce_blob (plus a Dice per lesion, so small lesions count as much as large "
        "ones), dice_paper, focal_region or structure (default: the model's; dice_ce_blob where that is "
        "dice_ce).",
    ),
    deep_supervision: bool = typer.Option(True, help="Deep-supervision losses where the model has heads."),
    model_kwargs: str = typer.Option("{}", help="Model options as JSON, e.g. '{\"base_channels\": 8}'."),
    num_workers: int = typer.Option(
        None, help="Data loader processes (default: CPU cores - 1, at most 4 on CPU, 8 with CUDA)."
    ),
    cache: str = typer.Option(
        "memory", help="memory, disk or none: keep preprocessed cases so epochs re-read nothing."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from RUN/checkpoint_last.pt after an interruption."
    ),
    lesion_patches: float = typer.Option(
        None,
        help="Share of training patches centred on a lesion (the label named lesion, tumour, nodule...; "
        "else the label of smallest volume); the other classes share the rest evenly. [default: 0.5]",
    ),
    weights: str = typer.Option(
        "best",
        help="The package's weights: best (the epoch of the best validation Dice) or final (the end of the "
        "learning-rate schedule, as nnU-Net's). Both checkpoints are kept in the run folder.",
    ),
    compile: bool = typer.Option(
        False,
        "--compile",
        help="Run the training steps through torch.compile: faster steps after a one-off compilation (a "
        "minute or more); pays on long runs, mostly on CUDA.",
    ),
) -> None:
    """Train a segmentation model; the run folder becomes a model package for `medattn predict`."""
    from medattn.pipelines.train import train as run_training

    try:
        kwargs = json.loads(model_kwargs)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"--model-kwargs is not JSON: {error}") from error
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("epochs", total=epochs, status="preparing")

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

        result = run_training(
            data,
            model,
            out,
            on_step=on_step,
            on_epoch_end=on_epoch_end,
            spacing=_floats(spacing, "--spacing"),
            patch=[int(v) for v in _floats(patch, "--patch")] if patch else None,
            batch=batch,
            preset=preset,
            device=device,
            amp=amp,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            max_time=max_time,
            val_fraction=val_fraction,
            fold=fold,
            seed=seed,
            lr=lr,
            optimizer=optimizer,
            schedule=schedule,
            loss=loss,
            deep_supervision=deep_supervision,
            model_kwargs=kwargs,
            num_workers=num_workers,
            cache=cache,
            resume=resume,
            weights=weights,
            # unset: the pipeline's default share
            **({} if lesion_patches is None else {"lesion_patches": lesion_patches}),
            compile=compile,
        )
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    Console().print(
        f"model package: [bold]{result.package}[/] (best val Dice {best}, {result.epochs} epochs, "
        f"stopped by {result.stopped_by})"
    )
    if result.frozen_parameters:
        Console().print(
            f"trainable {result.trainable_parameters:,} / frozen {result.frozen_parameters:,} parameters"
        )
