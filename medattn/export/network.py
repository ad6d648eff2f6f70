"""Export a network to ONNX or TorchScript, checked against PyTorch at more than one shape.

See `medattn.export` for which exporter is used and which model families export."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medattn.errors import ExportError, MissingDependencyError
from medattn.io.atomic import atomic_path
from medattn.package import PackageConfig

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
#: An ONNX file inside a package folder that `medattn predict --engine onnx` uses when it fits the weights.
PACKAGE_ONNX_NAME = "model.onnx"
#: Largest |exported - torch| accepted by the check, relative to the largest |logit| (at least 1).
CHECK_TOLERANCE = 1e-3
_INSTALL_ONNX = "pip install 'medattn[onnx]'"


@dataclass
class ExportResult:
    """What an export wrote and how it was checked."""

    network: Path
    metadata: Path
    format: str
    exporter: str
    dynamic_spatial: bool
    size_divisor: int = 1
    checked_shapes: list[list[int]] = field(default_factory=list)
    max_abs_diff: float = 0.0


class LogitsOnly(nn.Module):
    """The network's eval-mode logits as one tensor (a deep-supervision list gives its finest output)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        # The wrapper too: exporters put a module back in its own mode afterwards, and a wrapper left in
        # train mode would switch the network to train mode (batch norm then updates its statistics).
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        output = self.network(image)
        return output[0] if isinstance(output, (list, tuple)) else output


def require_onnx() -> tuple[Any, Any]:
    """The `onnx` and `onnxruntime` modules, or MissingDependencyError naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise MissingDependencyError(
            f"ONNX export and the onnx engine need onnx and onnxruntime ({error.name} is missing): "
            f"{_INSTALL_ONNX}"
        ) from error
    return onnx, onnxruntime


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file: ties an exported network to the package weights it was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_shapes(
    config: PackageConfig, network: nn.Module, dynamic_spatial: bool
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The traced input shape (batch 1 at the patch size) and a second shape (batch 2, other spatial size).

    The second spatial size is the patch minus `size_divisor` per axis (plus, where the patch is that
    small), so a shape fixed inside the exported graph shows up as an error or wrong logits.
    """
    plan = config.plan
    patch = tuple(int(p) for p in plan.patch_size)
    traced = (1, plan.in_channels, *patch)
    if not dynamic_spatial:
        return traced, (2, plan.in_channels, *patch)
    divisor = _divisor(network)
    other = tuple(p - divisor if p > divisor else p + divisor for p in patch)
    return traced, (2, plan.in_channels, *other)


def _first_line(error: BaseException) -> str:
    """An error's first line; for the TorchScript interpreter's also its last, which names the failing op."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if "TorchScript interpreter" in lines[0] and len(lines) > 1:
        return f"{lines[0]} {lines[-1]}"
    return lines[0]


class _ShapeFixedError(ExportError):
    """The export runs at the traced shape but not at another: the graph holds a fixed shape."""


def _compare(
    module: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], shapes: Sequence[tuple[int, ...]]
) -> float:
    """Largest |exported - torch| over seeded N(0, 1) inputs (normalised images) of each shape.

    The first shape is the traced one; a failure at a later one raises `_ShapeFixedError`.
    """
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for index, shape in enumerate(shapes):
        failure = _ShapeFixedError if index else ExportError
        image = torch.randn(shape, generator=generator)
        with torch.no_grad():
            reference = module(image)
        try:
            exported = run(image)
        except Exception as error:  # noqa: BLE001 - the runtime's own error type; reported with the shape
            message = f"the exported network fails at input shape {list(shape)}: {_first_line(error)}"
            raise failure(message) from error
        if tuple(exported.shape) != tuple(reference.shape):
            raise failure(
                f"the exported network gives logits of shape {list(exported.shape)} for input shape "
                f"{list(shape)}; PyTorch gives {list(reference.shape)}"
            )
        difference = float((exported - reference).abs().max())
        if difference > CHECK_TOLERANCE * max(1.0, float(reference.abs().max())):
            raise failure(
                f"the exported network's logits differ from PyTorch's by up to {difference:.3g} at input "
                f"shape {list(shape)}"
            )
        worst = max(worst, difference)
    return worst


def _dynamic_axes(spatial_dims: int, dynamic_spatial: bool) -> dict[str, dict[int, str]]:
    axes = {0: "batch"}
    if dynamic_spatial:
        axes.update({2 + axis: f"spatial_{axis}" for axis in range(spatial_dims)})
    return {INPUT_NAME: axes, OUTPUT_NAME: dict(axes)}


def _torch_onnx_export(
    module: nn.Module, example: torch.Tensor, path: Path, opset: int, axes: dict, dynamo: bool
) -> None:
    """torch.onnx.export with the keywords this torch version takes (`dynamo` exists from torch 2.5)."""
    accepted = inspect.signature(torch.onnx.export).parameters
    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": opset,
        "dynamic_axes": axes,
    }
    if "dynamo" in accepted:
        kwargs["dynamo"] = dynamo
    if dynamo:
        if "external_data" in accepted:
            kwargs["external_data"] = False  # one self-contained file
        kwargs["verbose"] = False
    else:
        kwargs["do_constant_folding"] = True
    # Tracer and deprecation warnings are noise here: the numeric check after export is the real test.
    with warnings.catch_warnings(), _quiet_stdout():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), **kwargs)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence stdout down to file descriptor 1: on failure the exporter's C++ side prints the whole graph
    there, and the torch.export-based exporter prints its progress; the error message says what matters."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _onnx_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    _, onnxruntime = require_onnx()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # the check reports failures itself, in one line
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda image: torch.from_numpy(session.run(None, {INPUT_NAME: image.numpy()})[0])


def export_onnx(
    network: nn.Module,
    config: PackageConfig,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_spatial: bool = True,
) -> ExportResult:
    """Write `network` as ONNX to `path` (atomically) and check it with onnxruntime on CPU.

    Args:
        network: the package's network (its eval-mode logits are exported).
        config: the package's configuration (patch size and channels give the example input).
        path: the .onnx file to write.
        opset: ONNX opset version (17 runs on onnxruntime >= 1.14).
        dynamic_spatial: spatial axes dynamic (else fixed to the patch size; batch is always dynamic).

    Returns:
        The result; its `metadata` is not written here (see `export_package`).

    Raises:
        MissingDependencyError: onnx or onnxruntime is not installed.
        ExportError: an operator ONNX cannot express, or the exported graph fails its check.
    """
    require_onnx()
    module = LogitsOnly(network).cpu()
    dynamic_spatial = dynamic_spatial and getattr(network, "fixed_input_size", None) is None
    traced, other = check_shapes(config, network, dynamic_spatial)
    axes = _dynamic_axes(config.plan.spatial_dims, dynamic_spatial)
    example = torch.zeros(traced)
    exporters = [(False, "torch.onnx TorchScript-based exporter")]
    if importlib.util.find_spec("onnxscript") is not None:
        exporters.append((True, "torch.onnx torch.export-based exporter"))
    failures: list[Exception] = []
    for dynamo, exporter in exporters:
        try:
            with atomic_path(path) as tmp:
                _torch_onnx_export(module, example, tmp, opset, axes, dynamo)
                worst = _compare(module, _onnx_runner(tmp), [traced, other])
        except Exception as error:  # noqa: BLE001 - torch.onnx raises many types; the first line names the op
            failures.append(error)
        else:
            return ExportResult(
                Path(path),
                Path(f"{path}.json"),
                "onnx",
                f"{exporter}, opset {opset}",
                dynamic_spatial,
                _divisor(network),
                [list(traced), list(other)],
                worst,
            )
    raise ExportError(_failure_message(config, "ONNX", failures, dynamic_spatial)) from failures[0]


def export_torchscript(
    network: nn.Module, config: PackageConfig, path: str | Path, *, dynamic_spatial: bool = True
) -> ExportResult:
    """Write `network` as TorchScript (`torch.jit.trace`) to `path` (atomically), checked at two shapes.

    Load it with ``torch.jit.load(path)``; no medattn is needed to run it.

    Raises:
        ExportError: tracing fails, or the traced graph fails at the second shape.
    """
    module = LogitsOnly(network).cpu()
    dynamic_spatial = dynamic_spatial and getattr(network, "fixed_input_size", None) is None
    traced, other = check_shapes(config, network, dynamic_spatial)
    try:
        with atomic_path(path) as tmp:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                scripted = torch.jit.trace(module, torch.zeros(traced), check_trace=False)
                scripted.save(str(tmp))
            loaded = torch.jit.load(str(tmp), map_location="cpu")
            with torch.no_grad():
                worst = _compare(module, loaded, [traced, other])
    except Exception as error:  # noqa: BLE001 - tracing raises many types; the first line names the op
        raise ExportError(_failure_message(config, "TorchScript", [error], dynamic_spatial)) from error
    return ExportResult(
        Path(path),
        Path(f"{path}.json"),
        "torchscript",
        f"torch.jit.trace (torch {torch.__version__})",
        dynamic_spatial,
        _divisor(network),
        [list(traced), list(other)],
        worst,
    )


def _failure_message(
    config: PackageConfig, kind: str, failures: Sequence[Exception], dynamic_spatial: bool
) -> str:
    """One line: every exporter's reason (the operator or failing node), and the fix for a fixed shape."""
    reasons = "; ".join(
        dict.fromkeys(e.message if isinstance(e, ExportError) else _first_line(e) for e in failures)
    )
    advice = ""
    if any(isinstance(e, _ShapeFixedError) for e in failures):
        advice = (
            " The graph holds a fixed shape: export with --fixed-size (spatial size fixed to the patch "
            f"{config.plan.patch_size}, all that sliding-window prediction feeds it)."
            if dynamic_spatial
            else " The graph holds a fixed batch size, so it cannot take batches of windows: use PyTorch."
        )
    return f"{config.model} cannot be exported to {kind}: {reasons.rstrip('.')}.{advice}"


def _divisor(network: nn.Module) -> int:
    """Spatial sizes the network takes are multiples of this (1 for networks that do not say)."""
    return int(getattr(network, "size_divisor", 1) or 1)
