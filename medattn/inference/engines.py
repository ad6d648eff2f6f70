"""Inference engines: what runs the network on each window batch, PyTorch itself or onnxruntime.

An engine is a callable that takes a float32 batch (B, C, *spatial) as a torch tensor and returns the logits
(B, classes, *spatial) as a torch tensor on the batch's device. The torch engine is the network itself.
The onnx engine is `OnnxEngine`, a parameterless `nn.Module`, so `sliding_window_predict` and `Predictor`
take either unchanged (eval mode, no_grad and device moves are no-ops for it).

`package_engine("onnx", ...)` uses the package's own ``model.onnx`` when its JSON says it was exported from
the package's current weights and plan (write it with ``medattn export PKG PKG/model.onnx``); otherwise it
exports the network into a temporary folder, with the spatial size fixed to the patch (all that sliding
windows feed it), loads it into onnxruntime and deletes the folder: a few seconds per run, no cache to
go stale.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from medattn.errors import ConfigError
from medattn.export import PACKAGE_ONNX_NAME, export_onnx, require_onnx, sha256
from medattn.package import WEIGHTS_NAME, PackageConfig

ENGINES = ("torch", "onnx")
_log = logging.getLogger(__name__)


def onnx_providers(device: torch.device) -> list[str]:
    """onnxruntime execution providers for `device`: CUDA first when asked and installed, CPU always."""
    _, onnxruntime = require_onnx()
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    _log.warning(
        "onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu): the onnx engine runs on CPU"
    )
    return ["CPUExecutionProvider"]


class OnnxEngine(nn.Module):
    """An exported ONNX network run by onnxruntime, called like the PyTorch network it came from.

    Args:
        model: path of the .onnx file (or its bytes).
        device: torch device the windows come from; CUDA selects onnxruntime's CUDA provider where installed.
        threads: onnxruntime intra-op threads; default torch's own thread count, so both engines use the
            same share of the CPU.
        source: where the network came from, for reports.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        device: torch.device | str = "cpu",
        threads: int | None = None,
        source: str = "",
    ):
        super().__init__()
        _, onnxruntime = require_onnx()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.providers = onnx_providers(torch.device(device))
        self.session = onnxruntime.InferenceSession(
            model if isinstance(model, bytes) else str(model), options, providers=self.providers
        )
        self.input_name = self.session.get_inputs()[0].name
        self.source = source or (str(model) if not isinstance(model, bytes) else "bytes")
        self.eval()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes, *spatial) float32 for `batch` (B, C, *spatial), on the batch's device."""
        array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: array})[:1]
        return torch.from_numpy(logits).to(batch.device)


def _package_onnx(folder: Path, config: PackageConfig) -> Path | None:
    """The package's model.onnx when its JSON ties it to these weights and this plan, else None."""
    path = folder / PACKAGE_ONNX_NAME
    metadata = folder / f"{PACKAGE_ONNX_NAME}.json"
    if not (path.is_file() and metadata.is_file()):
        return None
    try:
        saved = json.loads(metadata.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    fits = saved.get("source", {}).get("weights_sha256") == sha256(folder / WEIGHTS_NAME)
    if fits and saved.get("plan") == config.plan.to_dict():
        return path
    _log.warning("%s was exported from other weights or another plan; exporting afresh for this run", path)
    return None


def package_engine(
    engine: str, network: nn.Module, config: PackageConfig, folder: str | Path, device: torch.device
) -> nn.Module:
    """The engine `engine` ('torch' or 'onnx') for a loaded package's network (see the module docstring).

    Raises:
        ConfigError: an unknown engine name; onnx for a prompted (SAM family) network.
        MissingDependencyError: 'onnx' without onnx/onnxruntime installed.
        ExportError: the network cannot be exported to ONNX.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown --engine {engine!r}; choose {' or '.join(ENGINES)}")
    if engine == "torch":
        return network
    if getattr(network, "accepts_prompts", False):
        raise ConfigError(
            f"--engine onnx runs sliding-window networks; {config.model} takes box/point prompts: "
            "use --engine torch"
        )
    require_onnx()
    stored = _package_onnx(Path(folder), config)
    if stored is not None:
        return OnnxEngine(stored, device, source=str(stored))
    with tempfile.TemporaryDirectory(prefix="medattn-onnx-") as tmp:
        path = Path(tmp) / PACKAGE_ONNX_NAME
        export_onnx(network.cpu(), config, path, dynamic_spatial=False)
        return OnnxEngine(path.read_bytes(), device, source="exported for this run")
