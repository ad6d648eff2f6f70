"""MedSAM's input conventions: intensity window, [0, 1] scaling, 3 channels, resize to the encoder's size.

As in bowang-lab/MedSAM (pre_CT_MR.py and the inference scripts): CT is clipped to window level 40 /
width 400 HU, other grey-scale modalities to the 0.5-99.5 percentiles of their non-zero pixels (zeros stay
zero); the result is scaled to [0, 1], repeated to 3 channels, resized to 1024 x 1024 (cubic, antialiased)
and min-max scaled again. MedSAM does not apply SAM's ImageNet pixel mean/std; `sam_normalise` does, for
the original SAM checkpoints.

Tensors are (C, H, W) / (B, C, H, W) with x along the last axis, SAM's layout; boxes are (x0, y0, x1, y1)
pixels in that layout.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medattn.errors import GeometryError

CT_WINDOW_LEVEL = 40.0  # HU
CT_WINDOW_WIDTH = 400.0  # HU
PERCENTILES = (0.5, 99.5)
# SAM's pixel statistics (ImageNet, on the 0-255 scale), from segment-anything's build_sam.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def _min_max(image: torch.Tensor) -> torch.Tensor:
    low, high = image.min(), image.max()
    return (image - low) / (high - low).clamp_min(1e-8)


def scale_intensities(image: torch.Tensor, modality: str) -> torch.Tensor:
    """Clip and scale to [0, 1] the MedSAM way.

    Args:
        image: pixel values of one image or volume, any shape (HU for CT).
        modality: ``"ct"`` for the 40/400 HU window; ``"rgb"`` for colour images (endoscopy, photos),
            which are only min-max scaled; anything else (MR, ultrasound, X-ray) for the 0.5-99.5
            percentile clip of non-zero pixels.

    Returns:
        A float32 tensor of the same shape in [0, 1].
    """
    image = torch.as_tensor(image, dtype=torch.float32)
    kind = modality.lower()
    if kind == "ct":
        low, high = CT_WINDOW_LEVEL - CT_WINDOW_WIDTH / 2, CT_WINDOW_LEVEL + CT_WINDOW_WIDTH / 2
        return _min_max(image.clamp(low, high))
    if kind == "rgb":
        return _min_max(image)
    foreground = image[image != 0]
    if foreground.numel() == 0:
        return torch.zeros_like(image)
    low, high = np.percentile(foreground.numpy(), PERCENTILES)
    scaled = _min_max(image.clamp(float(low), float(high)))
    return torch.where(image == 0, torch.zeros_like(scaled), scaled)


def medsam_preprocess(image: torch.Tensor | np.ndarray, modality: str, img_size: int = 1024) -> torch.Tensor:
    """An image ready for SAM/MedSAM's encoder: (3, img_size, img_size) in [0, 1].

    Args:
        image: (H, W) grey, or (C, H, W) with 1 or 3 channels.
        modality: see `scale_intensities` (``"ct"``, ``"rgb"``, or any other name for percentiles).
        img_size: the encoder's input edge in pixels (1024 for SAM/MedSAM).

    Raises:
        GeometryError: the image is not (H, W) or (C, H, W) with 1 or 3 channels.

    Example:
        >>> x = medsam_preprocess(ct_slice_hu, "ct")  # (3, 1024, 1024)
        >>> box_1024 = resize_coordinates(box, ct_slice_hu.shape, 1024)
    """
    image = torch.as_tensor(image, dtype=torch.float32)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise GeometryError(
            f"MedSAM preprocessing takes an (H, W) or (C, H, W) image with 1 or 3 channels, got shape "
            f"{tuple(image.shape)}"
        )
    image = scale_intensities(image, modality).expand(3, -1, -1)
    antialias = max(image.shape[1:]) > img_size
    resized = F.interpolate(image[None], size=(img_size, img_size), mode="bicubic", antialias=antialias)
    return _min_max(resized[0])


def sam_normalise(image: torch.Tensor) -> torch.Tensor:
    """SAM's own pixel normalisation for [0, 1] RGB (B, 3, H, W) or (3, H, W): the original SAM weights
    expect it; MedSAM's do not."""
    shape = (3, 1, 1)
    mean = image.new_tensor(SAM_PIXEL_MEAN).view(shape)
    std = image.new_tensor(SAM_PIXEL_STD).view(shape)
    return (image * 255.0 - mean) / std


def resize_coordinates(
    coords: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int] | int
) -> torch.Tensor:
    """Map pixel coordinates of a (H, W) image to those of a resized one.

    Args:
        coords: boxes (..., 4) as (x0, y0, x1, y1) or points (..., 2) as (x, y), in pixels.
        from_size: (H, W) of the image the coordinates refer to.
        to_size: (H, W), or one edge, of the resized image.

    MedSAM gives its box prompt in 1024 x 1024 coordinates: ``resize_coordinates(box, (H, W), 1024)``.
    """
    to_h, to_w = (to_size, to_size) if isinstance(to_size, int) else to_size
    from_h, from_w = from_size
    scale = coords.new_tensor([to_w / from_w, to_h / from_h] * (coords.shape[-1] // 2))
    return coords * scale
