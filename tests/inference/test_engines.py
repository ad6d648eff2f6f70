"""The onnx engine: the torch engine's probabilities and masks; a package's model.onnx reused if it fits."""

from __future__ import annotations

import json
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_package import make_ct_case, make_package

import medattn
from medattn.cli.main import main
from medattn.errors import ConfigError, MissingDependencyError
from medattn.export import export_package
from medattn.inference.engines import OnnxEngine, package_engine
from medattn.package import load_package, save_package


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return make_ct_case(tmp_path_factory.mktemp("inputs"))


def test_onnx_engine_gives_the_torch_engines_probabilities(package, case):
    by_torch = medattn.load_model(package, device="cpu").predict_case(case, probabilities=True)
    onnx_predictor = medattn.load_model(package, device="cpu", engine="onnx")
    assert isinstance(onnx_predictor.network, OnnxEngine)
    by_onnx = onnx_predictor.predict_case(case, probabilities=True)
    np.testing.assert_allclose(by_onnx.probabilities, by_torch.probabilities, atol=1e-5)
    assert torch.equal(by_onnx.mask, by_torch.mask)
    assert len(torch.unique(by_torch.mask)) > 1  # the comparison is not between two empty masks


def test_predict_engine_onnx_writes_the_same_mask(package, case, tmp_path):
    masks = {}
    for engine in ("torch", "onnx"):
        out = tmp_path / engine
        args = ["predict", str(case), str(out), "--model", str(package), "--device", "cpu"]
        assert main([*args, "--engine", engine]) == 0
        masks[engine] = nib.load(out / "case.nii.gz")
        assert json.loads((out / "predict.json").read_text())["options"]["engine"] == engine
    np.testing.assert_array_equal(np.asarray(masks["onnx"].dataobj), np.asarray(masks["torch"].dataobj))
    np.testing.assert_allclose(masks["onnx"].affine, nib.load(case).affine, atol=1e-5)


def test_the_packages_model_onnx_is_used_only_while_it_fits_the_weights(package, tmp_path):
    folder = tmp_path / "package"
    shutil.copytree(package, folder)
    export_package(folder, folder / "model.onnx")
    network, config = load_package(folder)
    engine = package_engine("onnx", network, config, folder, torch.device("cpu"))
    assert engine.source == str(folder / "model.onnx")
    retrained = {k: v + 0.01 if v.is_floating_point() else v for k, v in network.state_dict().items()}
    save_package(folder, retrained, config)
    network, config = load_package(folder)
    engine = package_engine("onnx", network, config, folder, torch.device("cpu"))
    assert engine.source == "exported for this run"
    image = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(engine(image), network(image), atol=1e-4, rtol=0)


def test_unknown_engine_and_missing_onnxruntime_are_clear_errors(package, monkeypatch):
    with pytest.raises(ConfigError, match="unknown --engine 'tensorrt'; choose torch or onnx"):
        medattn.load_model(package, engine="tensorrt")
    network, config = load_package(package)
    network.accepts_prompts = True  # as the SAM family: not run by sliding windows
    with pytest.raises(ConfigError, match="takes box/point prompts: use --engine torch"):
        package_engine("onnx", network, config, package, torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'medattn\[onnx\]'"):
        medattn.load_model(package, engine="onnx")


def test_compile_with_the_onnx_engine_is_a_config_error(package):
    with pytest.raises(ConfigError, match="--compile is for the torch engine"):
        medattn.load_model(package, engine="onnx", device="cpu", compile=True)
