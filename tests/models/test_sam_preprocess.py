"""MedSAM's input conventions: CT window 40/400, percentile clip elsewhere, [0, 1], 3 channels, resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medattn.errors import GeometryError
from medattn.models.sam.preprocess import (
    medsam_preprocess,
    resize_coordinates,
    sam_normalise,
    scale_intensities,
)


def test_ct_is_windowed_at_level_40_width_400():
    hu = torch.tensor([[-1000.0, -160.0, 40.0], [140.0, 240.0, 3000.0]])
    scaled = scale_intensities(hu, "CT")
    # -160 HU and below -> 0, +240 HU and above -> 1, linear between: 40 HU (the level) -> 0.5.
    expected = torch.tensor([[0.0, 0.0, 0.5], [0.75, 1.0, 1.0]])
    torch.testing.assert_close(scaled, expected)


def test_other_modalities_clip_to_the_percentiles_of_non_zero_pixels_and_keep_zeros():
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40), dtype=np.float32)
    image[5:35, 5:35] = rng.uniform(100, 200, size=(30, 30))
    image[10, 10] = 5000.0  # one hot pixel, above the 99.5th percentile
    scaled = scale_intensities(torch.from_numpy(image), "mr").numpy()
    assert scaled[0, 0] == 0.0 and scaled[10, 10] == 1.0
    low, high = np.percentile(image[image > 0], [0.5, 99.5])
    inside = image[5:35, 5:35]
    expected = (np.clip(inside, low, high) - low) / (high - low)
    np.testing.assert_allclose(scaled[5:35, 5:35], expected, atol=1e-6)
    # Without clipping the hot pixel would squeeze the tissue into [0, 0.02].
    assert np.ptp(scaled[5:35, 5:35]) > 0.99


def test_preprocess_gives_three_channels_in_the_unit_range_at_img_size():
    rng = np.random.default_rng(1)
    grey = rng.normal(40, 300, size=(50, 70)).astype(np.float32)
    image = medsam_preprocess(grey, "ct", img_size=64)
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() == 0 and image.max() == 1
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    rgb = torch.rand(3, 30, 30) * 255
    assert medsam_preprocess(rgb, "rgb", img_size=64).shape == (3, 64, 64)
    with pytest.raises(GeometryError, match="1 or 3 channels"):
        medsam_preprocess(torch.zeros(2, 8, 8), "mr")


def test_boxes_and_points_map_to_the_resized_frame():
    box = torch.tensor([10.0, 20.0, 30.0, 40.0])  # x0, y0, x1, y1 on a 100 (H) x 200 (W) image
    expected = torch.tensor([10 * 1024 / 200, 20 * 1024 / 100, 30 * 1024 / 200, 40 * 1024 / 100])
    torch.testing.assert_close(resize_coordinates(box, (100, 200), 1024), expected)
    point = torch.tensor([[[50.0, 50.0]]])
    resized = resize_coordinates(point, (100, 200), (50, 50))
    torch.testing.assert_close(resized, torch.tensor([[[12.5, 25.0]]]))


def test_sam_normalisation_uses_sams_pixel_statistics():
    white = torch.ones(1, 3, 2, 2)
    normalised = sam_normalise(white)
    expected = torch.tensor([2.2489, 2.4286, 2.6400])  # (255 - mean) / std per channel
    torch.testing.assert_close(normalised[0, :, 0, 0], expected, atol=1e-4, rtol=0)
