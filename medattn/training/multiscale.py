"""Multi-scale training (PraNet): every batch is trained at several rescalings of its patch, one step each.

PraNet's train script [DengPingFan/PraNet, MyTrain.py] takes each batch at rates 0.75, 1 and 1.25 of the
training size, rounded to a multiple of 32 (its network's size divisor) with Python's round (half to
even): round(352 * rate / 32) * 32 = 256, 352, 448 pixels, with one optimiser step per rate. Images are
resized bilinearly with ``align_corners=True`` as there. Their masks are binary and resized bilinearly
too, giving soft labels; medattn's labels are class indices, so they are resized by nearest neighbour at
voxel centres (`medattn.losses.resize_labels`, the deep-supervision resize).

Example:
    >>> image, label = rescale_batch(image, label, 0.75, size_divisor=32)  # 352 x 352 -> 256 x 256
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medattn.errors import ConfigError
from medattn.losses.deep_supervision import resize_labels

#: PraNet's rates of the training patch size.
MULTI_SCALE_RATES = (0.75, 1.0, 1.25)


def scaled_size(size: Sequence[int], rate: float, size_divisor: int = 1) -> tuple[int, ...]:
    """`size` (voxels per axis) times `rate`, rounded to a multiple of `size_divisor` (at least one)."""
    if rate <= 0 or size_divisor < 1:
        raise ConfigError(
            f"a scale rate must be > 0 and the size divisor >= 1, got {rate} and {size_divisor}"
        )
    return tuple(max(1, round(s * rate / size_divisor)) * size_divisor for s in size)


def rescale_batch(
    image: torch.Tensor, label: torch.Tensor, rate: float, size_divisor: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch resized by `rate` (see the module docstring); unchanged at rate 1 (as PraNet's, even
    where the size is not a multiple of the divisor) and where the size stays.

    Args:
        image: (B, C, *spatial) intensities, resized (bi/tri)linearly.
        label: (B, 1, *spatial) class indices, resized by nearest neighbour.
        rate: scale factor of the spatial size.
        size_divisor: the network's size divisor; the new size is a multiple of it.

    Returns:
        The image and label at the new size.
    """
    size = scaled_size(image.shape[2:], rate, size_divisor)
    if rate == 1 or size == tuple(image.shape[2:]):
        return image, label
    mode = "bilinear" if image.ndim == 4 else "trilinear"
    resized = F.interpolate(image, size=size, mode=mode, align_corners=True)
    return resized, resize_labels(label, size)
