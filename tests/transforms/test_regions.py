"""SuperpixelRegionsd: integer SLIC regions on the image grid that follow its edges, cached once."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose, RandFlipd

from medattn.transforms.regions import SuperpixelRegionsd, superpixels


def _two_halves(shape=(12, 12, 12), channels=1, seed=0) -> np.ndarray:
    """Dark left half, bright right half, mild noise: a clear edge down the last axis."""
    rng = np.random.default_rng(seed)
    image = np.zeros((channels, *shape))
    image[..., shape[-1] // 2 :] = 1.0
    return image + 0.05 * rng.standard_normal(image.shape)


def test_regions_are_integer_ids_on_the_image_grid_with_its_affine():
    affine = torch.diag(torch.tensor([0.8, 0.8, 2.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.from_numpy(_two_halves()).float(), affine=affine)
    out = SuperpixelRegionsd("image", region_size=64)({"image": image, "id": "case"})
    regions = out["regions"]
    assert isinstance(regions, MetaTensor) and regions.shape == (1, 12, 12, 12)
    assert not regions.is_floating_point()
    assert torch.equal(regions.affine, affine)
    ids = regions.unique()
    assert ids.min() == 0 and 5 <= ids.numel() <= 60  # 1728 voxels / 64 = 27 seeds
    assert out["id"] == "case" and out["image"] is image


def test_superpixels_do_not_cross_an_edge_in_2d_colour_images():
    image = _two_halves((24, 24), channels=3)
    regions = superpixels(image, region_size=36)
    left, right = set(np.unique(regions[:, :12])), set(np.unique(regions[:, 12:]))
    assert regions.shape == (24, 24) and regions.dtype == np.int32
    assert not left & right


def test_cache_dataset_computes_regions_once_and_random_transforms_move_them_with_the_image():
    calls = []

    class Counting(SuperpixelRegionsd):
        def __call__(self, data):
            calls.append(1)
            return super().__call__(data)

    image = MetaTensor(torch.from_numpy(_two_halves((8, 8, 8))).float())
    chain = Compose(
        [Counting("image", region_size=32), RandFlipd(["image", "regions"], prob=1.0, spatial_axis=2)]
    )
    dataset = CacheDataset([{"image": image}], chain, progress=False)
    first, second = dataset[0], dataset[0]
    assert len(calls) == 1
    # Flipped together: the bright half is now on the left, and so are the regions that were on the right.
    flipped = superpixels(image.numpy(), region_size=32)[:, :, ::-1]
    assert np.array_equal(first["regions"][0].numpy().astype(np.int32), flipped)
    assert torch.equal(first["regions"], second["regions"])
