"""`medattn export PKG OUT --format onnx|torchscript`: a standalone network file plus preprocessing JSON."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def export(
    package: Path = typer.Argument(..., metavar="PKG", help="Model package folder (from `medattn train`)."),
    output: Path = typer.Argument(
        ...,
        metavar="OUT",
        help="Network file to write (.onnx or .pt added when OUT has no suffix); the preprocessing, labels "
        "and tensor shapes go to OUT.json beside it. PKG/model.onnx is what `predict --engine onnx` reuses.",
    ),
    format: str = typer.Option(
        "onnx", "--format", help="onnx (needs pip install 'medattn\\[onnx]') | torchscript."
    ),
    opset: int = typer.Option(17, help="ONNX opset version (17 runs on onnxruntime >= 1.14)."),
    fixed_size: bool = typer.Option(
        False,
        "--fixed-size",
        help="Fix the spatial size to the package's patch (batch stays dynamic), for networks whose graph "
        "cannot take other sizes; default: batch and spatial axes dynamic.",
    ),
) -> None:
    """Export a package's network (eval mode, no deep supervision) to ONNX or TorchScript, checked vs torch.

    Batch and spatial axes are dynamic (spatial sizes multiples of the network's size divisor); the file is
    run at the patch size and at a second size and must give PyTorch's logits before it is kept.
    """
    from medattn.export import export_package

    with Console(stderr=True).status(f"exporting {package} to {format}"):
        result = export_package(package, output, format=format, opset=opset, fixed_size=fixed_size)
    spatial = "batch and spatial axes dynamic" if result.dynamic_spatial else "batch dynamic, spatial fixed"
    Console().print(
        f"{result.network} ({result.exporter}; {spatial}; max |logit - torch| {result.max_abs_diff:.1e} "
        f"at shapes {result.checked_shapes}) + {result.metadata}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
