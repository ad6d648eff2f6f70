"""Draw label contours on an image for display: the PNG overlays and the frames of the overlay video.

2D arrays follow MONAI's PILReader: spatial shape (W, H), axis 0 along image columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from medattn.errors import GeometryError
from medattn.io.label_table import Label


def display_rgb(image: np.ndarray, shape: tuple[int, ...], path: Path | None = None) -> np.ndarray:
    """An image as (W, H, 3) uint8 for drawing on.

    Values already in 0-255 (8-bit photos, endoscopy frames) are kept; anything else (CT numbers, MR
    intensities, normalised floats) is stretched from its minimum to its maximum.
    """
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]  # a 2D image stored as a one-slice volume
    if array.ndim != 3 or array.shape[0] not in (1, 3, 4):
        raise GeometryError(f"an overlay needs a 2D grayscale or RGB image, got shape {array.shape}", path)
    if tuple(array.shape[1:]) != tuple(shape):
        raise GeometryError(
            f"the mask shape {tuple(shape)} differs from the reference image shape {tuple(array.shape[1:])}",
            path,
        )
    array = array[:3] if array.shape[0] >= 3 else np.repeat(array, 3, axis=0)
    low, high = float(array.min()), float(array.max())
    if not (low >= 0 and high <= 255 and high > 1):
        array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return np.clip(np.round(array), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def draw_contours(rgb: np.ndarray, labels: np.ndarray, table: list[Label]) -> np.ndarray:
    """Each label's one-pixel inner contour in its colour on a (W, H, 3) uint8 image; returns (H, W, 3),
    rows first, as image files and video frames store pixels."""
    canvas = rgb.copy()
    for label in table:
        region = labels == label.value
        if region.any():
            canvas[find_boundaries(region, mode="inner")] = label.color
    return canvas.transpose(1, 0, 2)
