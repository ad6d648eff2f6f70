"""medattn.export: exported ONNX/TorchScript networks give PyTorch's logits at other sizes, with the JSON."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from tiny_package import COLORS, LABELS, PATCH, make_package

from medattn.errors import ConfigError, ExportError, InputNotFoundError, MissingDependencyError
from medattn.export import export_onnx, export_package, sha256
from medattn.package import load_package, read_config

# Two batch sizes and two spatial sizes other than the patch (multiples of the size divisor 4).
SHAPES = [(1, 1, 16, 16, 16), (2, 1, 24, 20, 12)]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="module")
def torch_logits(package):
    """Reference logits of the package's network in PyTorch (eval mode, deep supervision off)."""
    network, _ = load_package(package)
    generator = torch.Generator().manual_seed(1)
    images = [torch.randn(shape, generator=generator) for shape in SHAPES]
    with torch.no_grad():
        return [(image, network(image)) for image in images]


@pytest.fixture(scope="module")
def onnx_export(package, tmp_path_factory):
    return export_package(package, tmp_path_factory.mktemp("onnx") / "net", format="onnx")


def test_onnx_logits_equal_torch_at_two_sizes(onnx_export, torch_logits):
    assert onnx_export.network.name == "net.onnx" and onnx_export.dynamic_spatial
    session = onnxruntime.InferenceSession(str(onnx_export.network), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for image, reference in torch_logits:
        (logits,) = session.run(None, {"image": image.numpy()})
        assert logits.shape == tuple(reference.shape) == (image.shape[0], 3, *image.shape[2:])
        np.testing.assert_allclose(logits, reference.numpy(), atol=1e-4, rtol=0)


def test_onnx_graph_declares_batch_and_spatial_axes_dynamic(onnx_export):
    model = onnx.load(str(onnx_export.network))
    onnx.checker.check_model(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "spatial_0", "spatial_1", "spatial_2"]


def test_torchscript_logits_equal_torch_at_two_sizes(package, torch_logits, tmp_path):
    result = export_package(package, tmp_path / "net", format="torchscript")
    assert result.network == tmp_path / "net.pt" and result.metadata == tmp_path / "net.pt.json"
    scripted = torch.jit.load(str(result.network))
    for image, reference in torch_logits:
        with torch.no_grad():
            torch.testing.assert_close(scripted(image), reference, atol=1e-4, rtol=0)


def test_json_beside_the_network_holds_the_preprocessing(onnx_export, package):
    assert onnx_export.metadata == onnx_export.network.with_name("net.onnx.json")
    data = json.loads(onnx_export.metadata.read_text())
    plan = read_config(package).plan
    assert data["format"] == "onnx" and data["network_file"] == "net.onnx"
    assert data["preprocessing"]["orientation"] == "RAS"
    assert data["preprocessing"]["spacing_mm"] == [1.5, 1.5, 2.0]
    intensity = data["preprocessing"]["intensity"]
    assert intensity["preset"] == "ct" and intensity["clip_range"] == [-100.0, 240.0]
    assert (intensity["mean"], intensity["std"]) == (60.0, 45.0)
    assert data["inference"]["patch_size"] == PATCH and data["inference"]["size_divisor"] == 4
    assert {int(k): v["name"] for k, v in data["labels"].items()} == LABELS
    assert {int(k): v["color"] for k, v in data["labels"].items() if v["color"]} == COLORS
    assert data["input"]["shape"] == ["batch", 1, "spatial_0", "spatial_1", "spatial_2"]
    assert data["output"]["shape"][:2] == ["batch", 3]
    assert data["plan"] == plan.to_dict() and data["model"] == "agunet"
    assert data["source"]["weights_sha256"] == sha256(package / "model.pt")


class _FixedShape(torch.nn.Module):
    """Runs at any size in PyTorch, but tracing turns the Python int into a constant: the graph fixes it."""

    size_divisor = 4

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)

    def forward(self, x):
        return self.conv(x) + torch.arange(int(x.shape[-1]), dtype=x.dtype)


def test_a_shape_fixed_in_the_graph_is_caught_and_fixed_size_exports_it(package, tmp_path):
    config = read_config(package)
    with pytest.raises(ExportError, match=r"--fixed-size"):
        export_onnx(_FixedShape(), config, tmp_path / "fixed.onnx")
    assert not (tmp_path / "fixed.onnx").exists()  # nothing half-checked is left behind
    result = export_onnx(_FixedShape(), config, tmp_path / "fixed.onnx", dynamic_spatial=False)
    assert not result.dynamic_spatial and result.checked_shapes[1] == [2, 1, *PATCH]


class _Spectral(torch.nn.Module):
    """A network with an FFT, which the ONNX exporter cannot express."""

    def forward(self, x):
        return torch.fft.fftn(x, dim=(2, 3, 4)).abs().repeat(1, 3, 1, 1, 1)


def test_an_operator_onnx_lacks_is_named(package, tmp_path):
    with pytest.raises(ExportError, match=r"cannot be exported to ONNX: .*fft"):
        export_onnx(_Spectral(), read_config(package), tmp_path / "fft.onnx")


def test_bad_inputs_are_medattn_errors(package, tmp_path, monkeypatch):
    with pytest.raises(InputNotFoundError, match="no such model package"):
        export_package(tmp_path / "missing", tmp_path / "out.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="medattn.json is missing"):
        export_package(tmp_path / "empty", tmp_path / "out.onnx")
    with pytest.raises(ConfigError, match="unknown export format 'tflite'; choose onnx or torchscript"):
        export_package(package, tmp_path / "out", format="tflite")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'medattn\[onnx\]'"):
        export_package(package, tmp_path / "out.onnx")
    assert not list(tmp_path.glob("out*"))
