"""The Predictor's fast paths (separable spacing, labels straight from the model grid, folded batch norms)
give what MONAI's Spacingd / Invertd + argmax and the unfused network give."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from grids import ALIGNED_GRIDS, grid_affine
from monai.data import MetaTensor
from tiny_package import make_package  # tests/ is on sys.path (pythonpath in pyproject.toml)
from torch.nn.modules.batchnorm import _BatchNorm

import medattn
from medattn.inference import count_windows

GRIDS = {
    **ALIGNED_GRIDS,
    "oblique (MONAI's way)": grid_affine((0, 1, 2), (1, 1, 1), (1.0, 1.0, 2.0), (0, 0, 0), rotation_deg=15),
}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return medattn.load_model(make_package(tmp_path_factory.mktemp("package")), device="cpu")


def _ct_like(affine: np.ndarray, shape=(34, 30, 18)) -> MetaTensor:
    grid = np.indices(shape).astype(np.float32)
    centre = [s / 2 for s in shape]
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    values = 40 + 150 * (distance < min(shape) / 3) + np.random.default_rng(0).normal(0, 20, shape)
    return MetaTensor(torch.as_tensor(values[None], dtype=torch.float32), affine=torch.as_tensor(affine))


@pytest.mark.parametrize("name", list(GRIDS))
def test_preprocessing_equals_the_monai_chain(predictor, name):
    image = _ct_like(GRIDS[name])
    expected = predictor.preprocessor.transform({"image": image.clone()})["image"]
    result = predictor.preprocess(image)
    assert result.shape == expected.shape
    np.testing.assert_allclose(np.asarray(result.affine), np.asarray(expected.affine), atol=1e-6)
    torch.testing.assert_close(result.as_tensor(), expected.as_tensor(), atol=1e-4, rtol=1e-4)
    assert torch.equal(image, _ct_like(GRIDS[name]))  # the caller's image is not normalised in place


@pytest.mark.parametrize("name", list(GRIDS))
def test_mr_preprocessing_equals_the_monai_chain(predictor, name):
    """The MR preset's z-score over nonzero voxels (in place, `zscore_channels_`) as MONAI's chain has it."""
    plan = dataclasses.replace(predictor.plan, preset="mr", clip_range=None)
    mr = medattn.inference.predictor.Predictor(
        predictor.network, dataclasses.replace(predictor.config, plan=plan)
    )
    image = _ct_like(GRIDS[name])
    image[:, :3] = 0  # background
    expected = mr.preprocessor.transform({"image": image.clone()})["image"]
    result = mr.preprocess(image)
    np.testing.assert_allclose(np.asarray(result.affine), np.asarray(expected.affine), atol=1e-6)
    torch.testing.assert_close(result.as_tensor(), expected.as_tensor(), atol=1e-4, rtol=1e-4)
    assert result.as_tensor().abs().max() < 10  # normalised, not raw intensities


@pytest.mark.parametrize("name", list(GRIDS))
def test_labels_equal_the_argmax_of_the_probabilities_on_the_input_grid(predictor, name):
    """The default path (no probabilities kept) against the dense one (probabilities resampled, argmax)."""
    image = _ct_like(GRIDS[name])
    fast = predictor.predict_case(image)
    dense = predictor.predict_case(image, probabilities=True)
    assert fast.mask.shape == dense.mask.shape == (1, *image.shape[1:])
    np.testing.assert_allclose(np.asarray(fast.mask.affine), np.asarray(image.affine))
    assert torch.equal(dense.mask[0], dense.probabilities.argmax(0).to(torch.uint8))
    assert (fast.mask != dense.mask).sum() <= 2  # ties to float rounding only
    assert len(dense.mask.unique()) > 1


def test_network_property_is_the_unfused_network_and_changes_reach_prediction(predictor):
    image = _ct_like(GRIDS["RAS, anisotropic"])
    before = predictor.predict(image)
    assert any(isinstance(m, _BatchNorm) for m in predictor.network.modules())
    with torch.no_grad():
        predictor.network.heads[0].bias.copy_(torch.tensor([-50.0, 50.0, -50.0]))
    after = predictor.predict(image)
    assert not torch.equal(before, after)
    assert torch.all(after == 1)  # the inference copy was rebuilt from the new weights


def test_compiled_windows_compile_once_and_give_the_same_masks(tmp_path):
    """`compile` with a backend that records the batch size each graph is compiled for and runs it as it
    is: images whose last window batch is short still compile for one batch shape only (a recompilation
    costs about a minute with inductor on CPU), and the masks equal the eager ones."""
    import torch._dynamo

    torch._dynamo.reset()
    compiled_batches = []

    def recording_backend(graph_module, example_inputs):
        compiled_batches.append(example_inputs[0].shape[0])
        return graph_module.forward

    package = make_package(tmp_path)
    compiled = medattn.load_model(package, device="cpu", compile=recording_backend, sw_batch_size=5)
    eager = medattn.load_model(package, device="cpu", sw_batch_size=5)
    for shape in [(34, 30, 18), (23, 26, 21)]:
        image = _ct_like(np.diag([1.2, 1.2, 2.5, 1.0]), shape)
        assert count_windows(compiled.preprocess(image).shape[1:], compiled.plan.patch_size, 0.5) % 5
        assert torch.equal(compiled.predict(image), eager.predict(image))
    assert compiled_batches and set(compiled_batches) == {5}


@pytest.mark.slow
def test_inductor_compiled_windows_give_the_eager_mask(tmp_path):
    """The real `--compile` (torch's inductor backend, C++ code generation on CPU; about a minute)."""
    package = make_package(tmp_path)
    image = _ct_like(np.diag([1.2, 1.2, 2.5, 1.0]))
    compiled = medattn.load_model(package, device="cpu", compile=True).predict(image)
    assert torch.equal(compiled, medattn.load_model(package, device="cpu").predict(image))


def test_auto_stitch_device_is_chosen_per_image_from_the_gpu_memory(tmp_path, monkeypatch):
    """`stitch_device='auto'` (the default) asks, per image, whether its stitched volumes fit half the GPU's
    available memory; a fixed choice is kept; a misspelt one is a clear error."""
    import medattn.inference.stitch_memory as stitch_memory
    from medattn.errors import ConfigError
    from medattn.inference import stitched_bytes

    package = make_package(tmp_path / "package")
    predictor = medattn.load_model(package, device="cpu")
    image = MetaTensor(torch.zeros(1, 40, 30, 20))
    assert predictor.stitch_device is None and predictor.stitch_device_for(image) == torch.device("cpu")
    predictor.device = torch.device("cuda")  # as on a GPU machine: only the memory query is faked
    needed = stitched_bytes((40, 30, 20), predictor.plan.num_classes, predictor.plan.in_channels)
    monkeypatch.setattr(stitch_memory, "gpu_available_bytes", lambda device: 2 * needed)
    assert predictor.stitch_device_for(image) == torch.device("cuda")
    assert predictor.stitch_device_for(image, extra_maps=1) == torch.device("cpu")  # 2 more volumes
    pinned = medattn.load_model(package, device="cpu", stitch_device="cpu")
    pinned.device = torch.device("cuda")
    assert pinned.stitch_device_for(image) == torch.device("cpu")
    with pytest.raises(ConfigError, match="stitch device"):
        medattn.load_model(package, device="cpu", stitch_device="gpu0")


@pytest.mark.parametrize("name", list(GRIDS))
def test_lesion_threshold_calls_lesion_wherever_its_probability_reaches_it(tmp_path, name):
    """The tiny package's label 2 is 'tumour': with a threshold it takes every voxel whose tumour
    probability reaches it (dense path, checked against the probabilities), and the default path decides
    the same on the model grid but for a thin shell where interpolation and the threshold disagree."""
    package = make_package(tmp_path / "package")
    image = _ct_like(GRIDS[name])
    plain = medattn.load_model(package, device="cpu").predict_case(image, probabilities=True)
    sensitive = medattn.load_model(package, device="cpu", lesion_threshold=0.2)
    dense = sensitive.predict_case(image, probabilities=True)
    tumour = dense.probabilities[2] >= 0.2
    expected = torch.where(tumour, 2, dense.probabilities.argmax(0)).to(torch.uint8)
    assert torch.equal(dense.mask[0], expected)
    assert (dense.mask == 2).sum() > (plain.mask == 2).sum()  # more lesion than the argmax alone
    fast = sensitive.predict_case(image)
    assert (fast.mask != dense.mask).float().mean() < 0.02
    with pytest.raises(medattn.errors.ConfigError, match="lesion-threshold"):
        medattn.load_model(package, device="cpu", lesion_threshold=1.5)
