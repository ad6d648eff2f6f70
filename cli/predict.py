"""`medattn predict INPUT OUTPUT --model PKG`: segment a file, a folder, a DICOM tree or a video."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def predict(
    inputs: Path = typer.Argument(
        ..., metavar="INPUT", help="A scan, a folder of scans, a DICOM tree or a video."
    ),
    output: Path = typer.Argument(..., metavar="OUTPUT", help="Folder for masks, volumes.csv, predict.json."),
    model: Path = typer.Option(..., "--model", "-m", help="Model package folder (from `medattn train`)."),
    format: str = typer.Option(
        "nii.gz",
        "--format",
        help="nii.gz, seg.nrrd (3D Slicer), dicom-seg (alias dcm), png (2D), or nii, nrrd, mha label maps.",
    ),
    overlap: float = typer.Option(
        0.5, help="Sliding-window overlap (0-1); lower is faster, slightly less smooth."
    ),
    sw_batch: int = typer.Option(4, "--sw-batch", help="Windows per forward pass."),
    tta: bool = typer.Option(False, "--tta", help="Mirror test-time augmentation (2^dims passes, slower)."),
    device: str = typer.Option("auto", help="auto|cpu|cuda[:N]."),
    amp: str = typer.Option("auto", help="bf16|fp16|off; auto = bf16 on CUDA where supported, off on CPU."),
    stitch_device: str = typer.Option(
        "auto",
        help="auto|cpu|cuda[:N]: where the stitched logits live. auto: on the GPU while they fit in half "
        "its free memory, else on the CPU (a big CT with many classes on a small GPU).",
    ),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write the class probabilities, <case>_probabilities.nii.gz."
    ),
    save_attention: bool = typer.Option(
        False, "--save-attention", help="Also write <case>_attention.nii.gz (where the model looked)."
    ),
    keep_largest: bool = typer.Option(
        False, "--keep-largest", help="Keep the largest connected component per label."
    ),
    fill_holes: bool = typer.Option(False, "--fill-holes", help="Fill enclosed holes per label."),
    min_lesion_ml: float = typer.Option(None, help="Remove components smaller than this volume (mL)."),
    lesion_threshold: float = typer.Option(
        None,
        help="Call a voxel lesion wherever the lesion label's probability reaches this (e.g. 0.3), not only "
        "where it wins the argmax: more small lesions found, at the price of false positives. Lesion "
        "labels: those named lesion, tumour, nodule, polyp... (default: the argmax alone).",
    ),
    overlay: bool = typer.Option(
        False,
        "--overlay",
        help="2D images: also write <case>_overlay.png with each label's contour on the image.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Predict cases whose output already exists (default: skip)."
    ),
    pipelined: bool = typer.Option(
        None,
        "--pipelined/--no-pipelined",
        help="Preprocess the next case and write the last one on background threads while the model runs "
        "(more memory: up to three cases in flight). Default: on with CUDA, off on CPU.",
        show_default=False,
    ),
    compile: bool = typer.Option(
        False,
        "--compile",
        help="Run the network through torch.compile: faster windows after a one-off compilation (about a "
        "minute); pays on long runs, mostly on CUDA.",
    ),
    engine: str = typer.Option(
        "torch",
        help="torch|onnx. onnx runs the network in onnxruntime (pip install 'medattn\\[onnx]'), float32; "
        "it uses PKG/model.onnx if exported from these weights (medattn export PKG PKG/model.onnx), "
        "else exports to a temporary file for this run.",
    ),
    box: list[str] = typer.Option(
        None,
        "--box",
        help="SAM family: box prompt x0,y0,x1,y1 in pixels of the input image (x = first image axis); "
        "repeat for several objects.",
    ),
    point: list[str] = typer.Option(
        None,
        "--point",
        help="SAM family: point prompt x,y[,label] in pixels (label 1 foreground, default; 0 background); "
        "repeatable.",
    ),
    slice_index: int = typer.Option(
        None,
        "--slice",
        help="3D volumes: the slice (index along the last axis) --box/--point are drawn on; the box is "
        "carried to the slices above and below while the mask lasts.",
    ),
    prior_mask: Path = typer.Option(
        None,
        help="SAM family: a mask on the input grid (or a folder of <case>.* masks); the box of each "
        "connected component of each label becomes a prompt (per slice in 3D).",
    ),
    box_model: Path = typer.Option(
        None,
        help="SAM family: a coarse model package; the box of each component of its mask becomes a prompt.",
    ),
) -> None:
    """Segment every case under INPUT; masks land on each input's own grid. Exit code 1 if a case failed.

    A video is segmented frame by frame by a 2D model, streamed: OUTPUT/<case>/frame_NNNNNN.png masks,
    <case>_overlay.mp4 with the contours drawn and <case>_frames.csv with each frame's mask area.

    SAM-family packages (sam, sam_adapter, ccsam, medsam_ca) segment each image whole at the model's input
    size, volumes slice by slice, with the prompts given (--box/--point, --prior-mask or --box-model); with
    none, in SAM's no-prompt mode.
    """
    from medattn.pipelines.predict import check_options
    from medattn.pipelines.predict import predict as run_prediction

    options = dict(
        overlay=overlay,
        format=format,
        overwrite=overwrite,
        pipelined=pipelined,
        overlap=overlap,
        sw_batch_size=sw_batch,
        tta=tta,
        device=device,
        amp=amp,
        stitch_device=stitch_device,
        save_probabilities=save_probabilities,
        save_attention=save_attention,
        keep_largest=keep_largest,
        fill_holes=fill_holes,
        min_lesion_ml=min_lesion_ml,
        lesion_threshold=lesion_threshold,
        engine=engine,
        compile=compile,
        box=box or None,
        points=point or None,
        slice_index=slice_index,
        prior_mask=None if prior_mask is None else str(prior_mask),
        box_model=None if box_model is None else str(box_model),
    )
    check_options(output, **options)
    console = Console(stderr=True)
    if compile:
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

        results = run_prediction(inputs, output, model, on_case=on_case, on_frames=on_frames, **options)
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    Console().print(f"{done} predicted, {skipped} skipped (already done), {len(failures)} failed -> {output}")
    if failures:
        raise typer.Exit(1)
