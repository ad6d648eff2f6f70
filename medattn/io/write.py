"""`save_mask`: write a label mask on its source image's grid, in the format the file suffix names.

Like nnU-Net's writers chosen by file ending: the suffix picks a row of medattn.io.formats, whose writer
places the mask on the loaded reference's grid with `medattn.io.placement.place_mask` (DICOM SEG places
it on its source series itself). Every format goes through medattn.io.atomic, so a crash leaves the
previous file or the new one, never half a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from medattn.errors import WriteError
from medattn.io.formats import mask_format
from medattn.io.label_table import LabelSpec


def save_mask(
    mask: np.ndarray | torch.Tensor,
    path: str | Path,
    reference: MetaTensor | str | Path | None = None,
    labels: LabelSpec | None = None,
    overlay: bool = False,
) -> Path:
    """Write a label mask so that viewers show it exactly on the scan it was made for.

    Args:
        mask: (*spatial) or (1, *spatial) integer labels, 0 = background (numpy, torch or MetaTensor).
            A plain array is taken to lie on the reference grid. A MetaTensor whose grid is the reference
            grid with axes permuted or reversed (e.g. after MONAI `Orientation`) is put back exactly.
        path: output file; the suffix picks the format: .nii.gz/.nii, .seg.nrrd (3D Slicer segmentation),
            .nrrd/.mha (label maps), .dcm (DICOM SEG), .png (2D only).
        reference: the source image, as a MetaTensor from `medattn.io.load_image` or its path. DICOM SEG
            needs the DICOM series (its folder, or an image loaded from it). Without a reference the
            mask's own affine (MetaTensor) or the identity is used.
        labels: value -> name, or value -> (name, (r, g, b)) with 0-255 ints; labels present in the mask
            but not named get `label_<value>` and a Slicer palette colour.
        overlay: PNG only: draw each label's contour in its colour on the reference image (RGB PNG)
            instead of writing the label values.

    Returns:
        The written path.

    Raises:
        WriteError: unknown suffix, missing reference for DICOM SEG or an overlay, non-integer labels.
        GeometryError: the mask does not lie on the reference grid (different shape, spacing, rotation
            or shift: resample it first), or a 3D mask for PNG.

    Example:
        >>> image = load_image("case_001.nii.gz")
        >>> save_mask(prediction, "case_001.seg.nrrd", reference=image, labels={1: ("lesion", (255, 0, 0))})
    """
    path = Path(path)
    target = mask_format(path)
    if overlay and target.overlay_writer is None:
        raise WriteError("overlay=True draws contours on a 2D image and needs a .png output", path)
    if overlay and reference is None:
        raise WriteError("overlay=True needs reference= the image to draw the contours on", path)
    if target.kind != "dicom":  # DICOM SEG references the source files as given; the rest need the image
        reference = _reference_image(reference, path)
    write = (target.overlay_writer if overlay else target.writer)()
    write(mask, path, reference, labels)
    return path


def _reference_image(reference: MetaTensor | str | Path | None, path: Path) -> MetaTensor | None:
    """The reference as a MetaTensor: loaded when given as a path (any format load_image reads)."""
    if reference is None or isinstance(reference, MetaTensor):
        return reference
    if isinstance(reference, (str, Path)) or (
        isinstance(reference, (list, tuple)) and all(isinstance(p, (str, Path)) for p in reference)
    ):
        from medattn.io.load import load_image

        return load_image(reference)
    raise WriteError(
        "reference must be an image loaded with medattn.io.load_image or its path, "
        f"got {type(reference).__name__}",
        path,
    )
