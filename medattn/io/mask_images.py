"""Binary masks saved as images: 0 and 255 (white lesion on black), often as JPEG with compression noise.

Public 2D datasets (Kvasir-SEG, ISIC, CVC-ClinicDB, many ultrasound sets) store a binary mask that way. Read
as label values, 255 (and every JPEG noise level between) would become a class of its own; medattn reads
such a mask as 0/1 instead: foreground where the pixel is at least half white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medattn.io.atomic import full_suffix
from medattn.io.formats import IMAGE2D_SUFFIXES

#: Pixels darker than this or brighter than 255 minus this count as black or white.
EXTREME_MARGIN = 40
#: Share of pixels that may lie between black and white (anti-aliased or JPEG-blurred edges).
MAX_GREY_SHARE = 0.05


def is_mask_image_file(path: str | Path) -> bool:
    """A label in a 2D image format (PNG, JPEG, TIFF, BMP), where 0/255 binary masks occur."""
    return full_suffix(Path(path)) in IMAGE2D_SUFFIXES


#: Lossless files (PNG, TIFF, BMP) may hold this share of anti-aliased edge pixels between 0 and 255.
MAX_LOSSLESS_GREY_SHARE = 0.01


def looks_like_binary_mask(labels: np.ndarray, lossy: bool = True) -> bool:
    """Whether 8-bit label values are a black/white mask rather than class values: some white, and nearly
    every pixel black or white. `lossy` (JPEG) counts values within `EXTREME_MARGIN` of 0 or 255 as black
    or white; a lossless file must hold 0 and 255 only, up to a few anti-aliased edge pixels, so class
    values with a 255 "void" border (PASCAL VOC style) are not mistaken for a mask."""
    values = np.asarray(labels)
    if values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return False
    high = float(values.max())
    if high <= 1 or high > 255 or float(values.min()) < 0:
        return False
    margin = EXTREME_MARGIN if lossy else 0
    white = values >= 255 - margin
    grey = (values > margin) & ~white
    limit = MAX_GREY_SHARE if lossy else MAX_LOSSLESS_GREY_SHARE
    return bool(white.any()) and float(grey.mean()) <= limit


def is_lossy_image_file(path: str | Path) -> bool:
    """JPEG: compression spreads a mask's 0 and 255 into nearby values."""
    return full_suffix(Path(path)) in (".jpg", ".jpeg")


def is_binary_mask_file(path: str | Path, labels: np.ndarray) -> bool:
    """A label file that is a black/white mask image (see `looks_like_binary_mask`)."""
    return is_mask_image_file(path) and looks_like_binary_mask(labels, lossy=is_lossy_image_file(path))


def binarized(labels: np.ndarray) -> np.ndarray:
    """A black/white mask as 0/1 labels (uint8): foreground where the pixel is at least half white."""
    return (np.asarray(labels) >= 128).astype(np.uint8)
