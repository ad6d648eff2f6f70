"""`onto_grid`: a mask on a permuted, flipped or (allow_block) partial grid lands voxel by voxel."""

from __future__ import annotations

import numpy as np
import pytest
from grids import ALIGNED_GRIDS, grid_affine

from medattn.errors import GeometryError
from medattn.io.geometry import onto_grid

SHAPE = (5, 4, 3)


def _world_indexed(shape: tuple[int, ...]) -> np.ndarray:
    """Labels that differ in every voxel, so any misplaced voxel shows."""
    return np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)


def _reoriented(array: np.ndarray, affine: np.ndarray, order, flips) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels with axes permuted and reversed, and the affine that keeps their world positions."""
    moved = np.transpose(array, order)
    index_map = np.zeros((4, 4))  # new index -> old index
    index_map[3, 3] = 1
    for new_axis, old_axis in enumerate(order):
        if new_axis in flips:
            moved = np.flip(moved, new_axis)
            index_map[old_axis, new_axis] = -1
            index_map[old_axis, 3] = array.shape[old_axis] - 1
        else:
            index_map[old_axis, new_axis] = 1
    return np.ascontiguousarray(moved), affine @ index_map


@pytest.mark.parametrize("name", sorted(ALIGNED_GRIDS))
@pytest.mark.parametrize(("order", "flips"), [((0, 1, 2), ()), ((2, 0, 1), (0,)), ((1, 2, 0), (1, 2))])
def test_a_reoriented_mask_goes_back_exactly(name, order, flips):
    affine = ALIGNED_GRIDS[name]
    labels = _world_indexed(SHAPE)
    moved, moved_affine = _reoriented(labels, affine, order, flips)
    np.testing.assert_array_equal(onto_grid(moved, moved_affine, SHAPE, affine), labels)


def test_a_block_of_the_grid_is_placed_into_zeros_only_when_allowed():
    affine = ALIGNED_GRIDS["LPS (DICOM)"]
    block = np.ones((5, 4, 1), dtype=np.uint8)  # the third slice only, as a SEG without empty frames
    block_affine = affine.copy()
    block_affine[:3, 3] += 2 * affine[:3, 2]
    placed = onto_grid(block, block_affine, SHAPE, affine, allow_block=True)
    assert placed.dtype == np.uint8 and placed.shape == SHAPE
    assert placed[..., 2].all() and not placed[..., :2].any()
    with pytest.raises(GeometryError, match="does not cover"):
        onto_grid(block, block_affine, SHAPE, affine)


@pytest.mark.parametrize(
    ("affine", "words"),
    [
        (grid_affine((0, 1, 2), (1, 1, 1), (0.8, 0.9, 2.5), (-10.4, 5, 3)), "shifted by"),
        (grid_affine((0, 1, 2), (1, 1, 1), (0.8, 0.9, 2.5), (-10, 5, 3), rotation_deg=10), "rotated"),
        (grid_affine((0, 1, 2), (1, 1, 1), (1.6, 0.9, 2.5), (-10, 5, 3)), "rotated or scaled"),
    ],
)
def test_grids_that_need_resampling_are_refused(affine, words):
    with pytest.raises(GeometryError, match=words):
        onto_grid(_world_indexed(SHAPE), affine, SHAPE, ALIGNED_GRIDS["RAS, anisotropic"], allow_block=True)


def test_a_block_reaching_outside_the_grid_is_refused():
    affine = ALIGNED_GRIDS["RAS, anisotropic"]
    shifted = affine.copy()
    shifted[:3, 3] += 2 * affine[:3, 2]
    with pytest.raises(GeometryError, match="outside"):
        onto_grid(_world_indexed(SHAPE), shifted, SHAPE, affine, allow_block=True)
