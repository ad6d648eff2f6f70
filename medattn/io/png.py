"""Write 2D masks as PNG: the label values in one channel, or each label's contour drawn on the image.

PNG files are read with the other 2D image formats by medattn.io.image2d (one Pillow path for all).

2D arrays follow MONAI's PILReader: spatial shape (W, H), axis 0 along image columns. A PNG stores rows
first, so arrays are transposed to (H, W) here and the written file has the source image's pixel layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medattn.errors import GeometryError, WriteError
from medattn.io.atomic import atomic_path
from medattn.io.label_table import Label
from medattn.io.overlay import display_rgb, draw_contours
from medattn.io.placement import place_mask


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
    rows_first = draw_contours(display_rgb(image, labels.shape, path), labels, table)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rows_first)).save(tmp, format="PNG", **_exif(exif_orientation))


def _exif(orientation: int | None) -> dict:
    """Pillow's `exif=` save argument holding only the orientation tag, or nothing."""
    if not orientation or orientation == 1:
        return {}
    exif = Image.Exif()
    exif[0x0112] = int(orientation)
    return {"exif": exif}


def _check_2d(labels: np.ndarray, path: Path) -> None:
    if labels.ndim != 2:
        raise GeometryError(
            f"PNG holds 2D masks; this mask has shape {tuple(labels.shape)}. "
            "Write .nii.gz or .seg.nrrd for volumes",
            path,
        )


def write_mask(mask: object, path: Path, reference: object, labels: object) -> None:
    """`save_mask` for .png: the label values of a 2D mask on the reference grid."""
    placed = place_mask(mask, path, reference, labels, spatial_dims=_png_dims(mask))
    write_label_png(placed.labels, path, placed.exif_orientation)


def write_overlay_mask(mask: object, path: Path, reference: object, labels: object) -> None:
    """`save_mask(overlay=True)`: each label's contour drawn on the reference image, as an RGB PNG."""
    placed = place_mask(mask, path, reference, labels, spatial_dims=_png_dims(mask))
    image = placed.reference.detach().cpu().numpy()
    write_overlay_png(placed.labels, image, placed.table, path, placed.exif_orientation)


def _png_dims(mask: object) -> int:
    """Spatial axes of a mask given without a reference: a leading axis of size 1 is the channel; anything
    else 3D is a volume, which the writer refuses."""
    shape = tuple(np.shape(mask))
    return len(shape) - 1 if len(shape) >= 3 and shape[0] == 1 else len(shape)
