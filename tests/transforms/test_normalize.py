"""`zscore_channels_` gives MONAI's NormalizeIntensity (channel-wise, nonzero or not), edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensityd, ScaleIntensityRanged

from medattn.transforms.normalize import zscore_channels_, zscore_parameters


def _image() -> torch.Tensor:
    """Three channels: MR-like (background zeros, large mean), all zeros, and constant."""
    generator = torch.Generator().manual_seed(0)
    head = 700 + 250 * torch.randn(17, 15, 11, generator=generator)
    head[:4] = 0  # background outside the head
    return torch.stack([head, torch.zeros(17, 15, 11), torch.full((17, 15, 11), 3.0)])


@pytest.mark.parametrize("nonzero", [True, False])
def test_equals_monai_normalize_intensity(nonzero):
    image = _image()
    expected = NormalizeIntensityd("image", nonzero=nonzero, channel_wise=True)({"image": image.clone()})[
        "image"
    ]
    result = zscore_channels_(image.clone(), nonzero)
    torch.testing.assert_close(result, torch.as_tensor(expected), atol=2e-6, rtol=1e-5)
    statistics_over = result[0][4:] if nonzero else result[0]
    assert abs(float(statistics_over.mean())) < 1e-4
    assert float(statistics_over.std(unbiased=False)) == pytest.approx(1, abs=1e-4)
    if nonzero:
        assert torch.all(result[0][:4] == 0)  # zeros stay zero


def test_only_transforms_it_reproduces_are_taken_over():
    assert zscore_parameters(NormalizeIntensityd("image", nonzero=True, channel_wise=True)) is True
    assert zscore_parameters(NormalizeIntensityd("image", channel_wise=True)) is False
    assert zscore_parameters(NormalizeIntensityd("image", nonzero=True)) is None  # one mean over channels
    assert (
        zscore_parameters(NormalizeIntensityd("image", subtrahend=[1.0], divisor=[2.0], channel_wise=True))
        is None
    )
    assert zscore_parameters(NormalizeIntensityd("image", channel_wise=True, dtype=np.float64)) is None
    assert zscore_parameters(ScaleIntensityRanged("image", 0, 1, 0, 1)) is None


@pytest.mark.parametrize("nonzero", [True, False])
def test_huge_values_normalise_as_their_scaled_copy(nonzero):
    """A scan stored with a huge scale factor (values ~1e32, whose squares overflow float32) normalises to
    the same z-scores as the same scan at ordinary magnitude, instead of all zeros."""
    image = _image()[:1]
    huge = zscore_channels_(image.clone() * 1e30, nonzero)
    ordinary = zscore_channels_(image.clone(), nonzero)
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge, ordinary, atol=1e-4, rtol=1e-4)
