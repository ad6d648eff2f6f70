"""Separable resampling back to the input grid equals MONAI's Invertd (grid_sample) on aligned grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from grids import ALIGNED_GRIDS  # tests/ is on sys.path (pythonpath in pyproject.toml)
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd, Spacingd

from medattn.inference.postprocess import argmax_labels
from medattn.inference.resample import _MIXED_LIMIT, _mixed_cells, resample_labels_aligned
from medattn.transforms.aligned_resample import aligned_axis_map, resample_aligned

GRIDS = ALIGNED_GRIDS


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("target_spacing", [(1.5, 1.5, 1.5), (0.6, 1.0, 2.0)])
def test_equals_monai_invertd_on_aligned_grids(name, target_spacing):
    affine = torch.as_tensor(GRIDS[name])
    image = MetaTensor(torch.rand(1, 23, 19, 14), affine=affine)
    chain = Compose([Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=target_spacing)])
    preprocessed = chain({"image": image})["image"]
    probabilities = torch.rand(3, *preprocessed.shape[1:])
    meta = {k: v for k, v in preprocessed.meta.items() if k != "affine"}
    tracked = MetaTensor(probabilities, affine=preprocessed.affine, meta=meta)
    tracked.applied_operations = list(preprocessed.applied_operations)
    expected = Invertd("pred", chain, orig_keys="image", nearest_interp=False)(
        {"pred": tracked, "image": preprocessed}
    )["pred"]
    result = resample_aligned(probabilities, np.asarray(preprocessed.affine), GRIDS[name], image.shape[1:])
    assert result is not None and result.shape == (3, 23, 19, 14)
    torch.testing.assert_close(result, expected.as_tensor(), atol=2e-5, rtol=1e-5)


def test_oblique_grids_are_left_to_the_general_resampler():
    angle = np.radians(20)
    oblique = np.eye(4)
    oblique[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert aligned_axis_map(np.eye(4), oblique) is None
    assert resample_aligned(torch.rand(2, 4, 4, 4), np.eye(4), oblique, (4, 4, 4)) is None
    # Aligned grids: (source axis, scale, offset) per target axis, read off the target's affine here.
    assert aligned_axis_map(np.eye(4), GRIDS["LPS (DICOM)"]) == [(0, -1.1, 40), (1, -1.1, 30), (2, 1.7, -20)]
    assert aligned_axis_map(np.eye(4), GRIDS["axes permuted and flipped"]) == [
        (2, 1.3, -8),
        (0, -0.7, 0),
        (1, -0.9, 12),
    ]


def _smooth_probabilities(classes: int, shape, seed: int = 0, feature_size: int = 6) -> torch.Tensor:
    """Softmax of smooth random fields: label regions with boundaries, as a network's output has."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, classes, *(max(2, s // feature_size) for s in shape), generator=generator) * 4
    fields = torch.nn.functional.interpolate(coarse, size=tuple(shape), mode="trilinear")[0]
    return fields.softmax(0)


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("target_spacing", [(1.5, 1.5, 1.5), (0.6, 1.0, 2.0)])
def test_labels_equal_the_argmax_of_the_resampled_probabilities(name, target_spacing):
    """Taking the label of cells whose 8 corners agree, and interpolating only the others, gives the dense
    path's labels."""
    image = MetaTensor(torch.rand(1, 41, 37, 29), affine=torch.as_tensor(GRIDS[name]))
    chain = Compose([Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=target_spacing)])
    preprocessed = chain({"image": image})["image"]
    probabilities = _smooth_probabilities(4, preprocessed.shape[1:])
    source = np.asarray(preprocessed.affine)
    mixed = _mixed_cells(argmax_labels(probabilities)).float().mean()
    assert 0.05 < mixed < _MIXED_LIMIT  # the sparse path runs, on a real share of boundary cells
    dense = resample_aligned(probabilities, source, GRIDS[name], image.shape[1:])
    expected = argmax_labels(dense)
    labels = resample_labels_aligned(probabilities, source, GRIDS[name], image.shape[1:])
    assert labels is not None and labels.dtype == torch.uint8 and labels.shape == (41, 37, 29)
    assert len(expected.unique()) == 4  # boundaries between every class are exercised
    differ = labels != expected
    # Only exact ties (to float rounding) may go the other way.
    top2 = dense.topk(2, dim=0).values
    assert torch.all((top2[0] - top2[1])[differ] < 1e-6)
    assert differ.sum() <= 2


def test_labels_of_oblique_grids_are_left_to_the_general_resampler():
    angle = np.radians(20)
    oblique = np.eye(4)
    oblique[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert resample_labels_aligned(torch.rand(2, 4, 4, 4), np.eye(4), oblique, (4, 4, 4)) is None


def test_mixed_cells_are_those_whose_corners_disagree():
    """A cell spans voxels i..i+1 on each axis, the far edge repeating its last voxel (border clamping)."""
    labels = torch.zeros(4, 3, 2, dtype=torch.uint8)
    labels[2, 1, 1] = 1
    mixed = _mixed_cells(labels)
    expected = torch.zeros(4, 3, 2, dtype=torch.bool)
    expected[1:3, 0:2, 0:2] = True  # every cell with (2, 1, 1) among its corners
    assert torch.equal(mixed, expected)


def test_labels_beyond_256_classes_keep_their_values():
    """More classes than uint8 holds: labels come back as int32, through the sparse path."""
    classes, block = 300, 6
    generator = torch.Generator().manual_seed(3)
    blocks = torch.randint(0, classes, (3, 3, 3), generator=generator)
    truth = blocks.repeat_interleave(block, 0).repeat_interleave(block, 1).repeat_interleave(block, 2)
    scores = torch.nn.functional.one_hot(truth, classes).permute(3, 0, 1, 2).float() * 5
    scores += 0.1 * torch.rand(scores.shape, generator=generator)
    source, target = np.diag([2.0, 2.0, 2.0, 1.0]), np.diag([0.7, 0.7, 0.7, 1.0])
    shape = (50, 50, 50)
    assert _mixed_cells(argmax_labels(scores)).float().mean() < _MIXED_LIMIT
    expected = argmax_labels(resample_aligned(scores, source, target, shape))
    labels = resample_labels_aligned(scores, source, target, shape)
    assert labels is not None and labels.dtype == torch.int32 and labels.max() > 255
    assert torch.equal(labels, expected)


def test_labels_of_speckled_probabilities_take_the_dense_path():
    """Boundaries everywhere (an untrained network's speckle): the dense fallback gives the same labels."""
    probabilities = torch.rand(3, 12, 11, 9, generator=torch.Generator().manual_seed(1)).softmax(0)
    source, target = np.diag([1.5, 1.5, 1.5, 1.0]), GRIDS["axes permuted and flipped"]
    shape = (14, 21, 17)
    expected = argmax_labels(resample_aligned(probabilities, source, target, shape))
    labels = resample_labels_aligned(probabilities, source, target, shape)
    assert labels is not None and labels.shape == shape
    assert (labels != expected).sum() <= 2
