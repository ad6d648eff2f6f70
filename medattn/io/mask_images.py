"""Binary masks saved as images: 0 and 255 (white lesion on black), often as JPEG with compression noise.

Public 2D datasets (Kvasir-SEG, ISIC, CVC-ClinicDB, many ultrasound sets) store a binary mask that way. Read
as label values, 255 (and every JPEG noise level between) would become a class of its own; medattn reads
such a mask as 0/1 instead: foreground where the pixel is at least half white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medattn.io.atomic import full_suffix
from medattn.io.load import IMAGE2D_SUFFIXES

#: Pixels darker than this or brighter than 255 minus this count as black or white.
EXTREME_MARGIN = 40
#: Share of pixels that may lie between black and white (anti-aliased or JPEG-blurred edges).
MAX_GREY_SHARE = 0.05


def is_mask_image_file(path: str | Path) -> bool:
    """A label in a 2D image format (PNG, JPEG, TIFF, BMP), where 0/255 binary masks occur."""
    return full_suffix(Path(path)) in IMAGE2D_SUFFIXES


def looks_like_binary_mask(labels: np.ndarray) -> bool:
    """Whether 8-bit label values are a black/white mask (0/255, with JPEG or anti-aliasing noise) rather
    than class values: some white, and nearly every pixel black or white."""
    values = np.asarray(labels)
    if values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return False
    high = float(values.max())
    if high <= 1 or high > 255 or float(values.min()) < 0:
        return False
    white = values >= 255 - EXTREME_MARGIN
    grey = (values > EXTREME_MARGIN) & ~white
    return bool(white.any()) and float(grey.mean()) <= MAX_GREY_SHARE


def binarized(labels: np.ndarray) -> np.ndarray:
    """A black/white mask as 0/1 labels (uint8): foreground where the pixel is at least half white."""
    return (np.asarray(labels) >= 128).astype(np.uint8)
