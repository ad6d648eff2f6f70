"""Write 2D masks as PNG: the label values in one channel, or each label's contour drawn on the image.

2D arrays follow MONAI's PILReader: spatial shape (W, H), axis 0 along image columns. A PNG stores rows
first, so arrays are transposed to (H, W) here and the written file has the source image's pixel layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from medattn.errors import GeometryError, WriteError
from medattn.io.atomic import atomic_path
from medattn.io.label_table import Label


def write_label_png(labels: np.ndarray, path: Path, exif_orientation: int | None = None) -> None:
    """Label values as an 8-bit grayscale PNG, 16-bit when a value exceeds 255.

    Args:
        labels: (W, H) integer label values (uint8 or uint16).
        path: the .png file.
        exif_orientation: the source photo's EXIF orientation (2-8), stored in the PNG so that viewers
            turn the mask as they turn the photo.
    """
    _check_2d(labels, path)
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        raise WriteError(f"label value {int(labels.max())} does not fit a 16-bit PNG", path)
    rows_first = np.ascontiguousarray(labels.T)
    # PIL picks mode L for uint8 and I;16 for uint16 arrays.
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    image = Image.fromarray(rows_first.astype(dtype))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", **_exif(exif_orientation))


def write_overlay_png(
    labels: np.ndarray, image: np.ndarray, table: list[Label], path: Path, exif_orientation: int | None = None
) -> None:
    """Each label's one-pixel inner contour drawn in its colour on the image, saved as an RGB PNG.

    Args:
        labels: (W, H) integer label values.
        image: the source image, (C, W, H) with 1 or 3 channels (4: alpha is dropped), or (W, H).
        table: colours of the labels to draw.
        path: the .png file.
        exif_orientation: as for `write_label_png`.
    """
    _check_2d(labels, path)
    canvas = display_rgb(image, labels.shape, path)
    for label in table:
        region = labels == label.value
        if region.any():
            canvas[find_boundaries(region, mode="inner")] = label.color
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(canvas.transpose(1, 0, 2))).save(
            tmp, format="PNG", **_exif(exif_orientation)
        )


def _exif(orientation: int | None) -> dict:
    """Pillow's `exif=` save argument holding only the orientation tag, or nothing."""
    if not orientation or orientation == 1:
        return {}
    exif = Image.Exif()
    exif[0x0112] = int(orientation)
    return {"exif": exif}


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


def _check_2d(labels: np.ndarray, path: Path) -> None:
    if labels.ndim != 2:
        raise GeometryError(
            f"PNG holds 2D masks; this mask has shape {tuple(labels.shape)}. "
            "Write .nii.gz or .seg.nrrd for volumes",
            path,
        )
