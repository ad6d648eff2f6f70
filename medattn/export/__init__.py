"""Deployment export: a package's network as a standalone ONNX or TorchScript file, preprocessing in JSON.

`export_package(PKG, OUT)` writes two files: the network (``OUT``; ``.onnx`` or ``.pt`` is added when OUT
has no suffix) and ``OUT.json`` beside it (e.g. ``brain.onnx`` and ``brain.onnx.json``), holding everything
a deployment needs to feed the network and read its output: orientation, target spacing (mm), intensity
preset and its statistics, patch size, size divisor, label names and colours, the tensor names and shapes.

The network is exported in eval mode without deep supervision: input ``image`` (batch, channels, *spatial)
float32, output ``logits`` (batch, classes, *spatial); softmax over axis 1 gives probabilities. Batch and
spatial axes are dynamic (spatial sizes must be multiples of ``size_divisor``) unless the network only
accepts one size (UNETR) or `fixed_size` is asked for. Every export is checked before it is kept: the file
is run at the traced shape and at a second batch and spatial size, and its logits must match PyTorch's.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``, asked for explicitly: torch 2.9 and later
default to the other one). It exports most registered families with dynamic sizes; UNETR, sam and medsam_ca
take one input size by design (exported fixed); Swin UNETR, ccsam and sam_adapter fix their window shapes in
the graph (--fixed-size exports them); hbformer (a size read as a tensor, hbformer.py) and ratunet (sort
with an out= argument) do not export. The torch.export-based exporter (``dynamo=True``, needs onnxscript)
is much slower and fails on more families (BENCHMARKS.md, export formats), so it is only the fallback,
tried when the first fails and onnxscript is installed (later torch versions may drop the TorchScript-based
exporter). TorchScript files come from ``torch.jit.trace`` (scripting fails on the models' Python checks).
"""

from __future__ import annotations

import json
from pathlib import Path

from medattn.errors import ConfigError
from medattn.export.metadata import deployment_metadata
from medattn.export.network import (
    DEFAULT_OPSET,
    PACKAGE_ONNX_NAME,
    ExportResult,
    LogitsOnly,
    export_onnx,
    export_torchscript,
    require_onnx,
    sha256,
)
from medattn.io.atomic import atomic_path
from medattn.package import WEIGHTS_NAME, load_package

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}

__all__ = [
    "FORMATS",
    "PACKAGE_ONNX_NAME",
    "ExportResult",
    "LogitsOnly",
    "deployment_metadata",
    "export_onnx",
    "export_package",
    "export_torchscript",
    "output_paths",
    "require_onnx",
    "sha256",
]


def output_paths(output: str | Path, format: str) -> tuple[Path, Path]:
    """The network file (the format's suffix added when `output` has none) and its JSON beside it."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose {' or '.join(FORMATS)}")
    network = Path(output)
    if not network.suffix:
        network = network.with_name(network.name + FORMATS[format])
    return network, Path(f"{network}.json")


def export_package(
    package: str | Path,
    output: str | Path,
    *,
    format: str = "onnx",
    opset: int = DEFAULT_OPSET,
    fixed_size: bool = False,
) -> ExportResult:
    """Export a model package's network to `output` and its preprocessing to `output`.json beside it.

    Args:
        package: a model package folder (from `medattn train`).
        output: the network file; ``.onnx`` or ``.pt`` is added when it has no suffix. Written as
            ``PKG/model.onnx``, `medattn predict --engine onnx` uses it instead of exporting each run.
        format: "onnx" or "torchscript".
        opset: ONNX opset version.
        fixed_size: fix the spatial size to the package's patch (batch stays dynamic), for networks
            whose graph holds a fixed shape; sliding-window prediction only ever feeds the patch size.

    Returns:
        Where the two files went, the exporter used and the check's largest |exported - torch| logit.

    Raises:
        InputNotFoundError, ConfigError: `package` is missing or not a model package; unknown format.
        MissingDependencyError: onnx/onnxruntime missing for format "onnx".
        ExportError: the network cannot be exported (the message names the operator or failing node).
    """
    network_path, metadata_path = output_paths(output, format)
    if format == "onnx":
        require_onnx()
    network, config = load_package(package)
    exporter = export_onnx if format == "onnx" else export_torchscript
    options = {"opset": opset} if format == "onnx" else {}
    result = exporter(network, config, network_path, dynamic_spatial=not fixed_size, **options)
    metadata = deployment_metadata(config, result, sha256(Path(package) / WEIGHTS_NAME))
    with atomic_path(metadata_path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2))
    result.metadata = metadata_path
    return result
