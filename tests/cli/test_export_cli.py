"""`medattn export`: writes the network and its JSON; bad input is one line on stderr, exit code 1."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from tiny_package import make_package

from medattn.cli.main import main
from medattn.package import load_package


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("package"))


def test_export_writes_network_and_json(package, tmp_path, capsys):
    assert main(["export", str(package), str(tmp_path / "liver"), "--format", "torchscript"]) == 0
    network, _ = load_package(package)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(tmp_path / "liver.pt")(x), network(x), atol=1e-5, rtol=1e-4)
    data = json.loads((tmp_path / "liver.pt.json").read_text())
    assert data["format"] == "torchscript" and data["dynamic_spatial"] is True
    assert str(tmp_path / "liver.pt") in capsys.readouterr().out


def _one_line_error(args: list[str], capsys) -> str:
    assert main(args) == 1
    error = capsys.readouterr().err
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1, error
    return error


def test_bad_package_and_format_are_one_line_errors(package, tmp_path, capsys):
    missing = ["export", str(tmp_path / "missing"), str(tmp_path / "a.onnx")]
    assert "missing: no such model package" in _one_line_error(missing, capsys)
    tflite = ["export", str(package), str(tmp_path / "a"), "--format", "tflite"]
    assert "unknown export format 'tflite'; choose onnx or torchscript" in _one_line_error(tflite, capsys)
    assert not list(tmp_path.iterdir())


def test_missing_onnxruntime_names_the_extra(package, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    error = _one_line_error(["export", str(package), str(tmp_path / "a.onnx")], capsys)
    assert "pip install 'medattn[onnx]'" in error  # brackets printed, not read as markup
