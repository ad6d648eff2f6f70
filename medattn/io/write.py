"""`save_mask`: write a label mask on its source image's grid, in the format the file suffix names.

Like nnU-Net's writers chosen by file ending: the suffix picks a row of medattn.io.formats, whose writer
places the mask on the reference grid with `place_mask` (DICOM SEG places it on its source series
itself). Every format goes through medattn.io.atomic, so a crash leaves the previous file or the new one,
never half a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.data import MetaTensor

from medattn.errors import WriteError
from medattn.io.formats import mask_format
from medattn.io.geometry import affine_4x4, onto_grid, split_channel
from medattn.io.label_table import Label, LabelSpec, as_label_array, label_table, present_values

if TYPE_CHECKING:
    from medattn.io.nifti import NiftiForms


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
    write = (target.overlay_writer if overlay else target.writer)()
    write(mask, path, reference, labels)
    return path


@dataclass(frozen=True)
class PlacedMask:
    """A mask on its reference grid, as the writers of every format but DICOM SEG take it.

    Attributes:
        labels: (i, j[, k]) integer label values (uint8/16/32).
        affine: voxel -> RAS mm affine of the grid (4x4).
        table: the labels to name in the file, with names and colours.
        reference: the source image when one was given; its meta tells the writers how to match it.
    """

    labels: np.ndarray
    affine: np.ndarray
    table: list[Label]
    reference: MetaTensor | None

    @property
    def nifti_forms(self) -> NiftiForms | None:
        """A NIfTI reference whose readers disagree on its placement (medattn.io.nifti.NiftiForms)."""
        return self.reference.meta.get("nifti_forms") if self.reference is not None else None

    @property
    def exif_orientation(self) -> int | None:
        """The source photo's EXIF orientation (medattn.io.image2d), for PNGs viewers must turn alike."""
        value = self.reference.meta.get("exif_orientation") if self.reference is not None else None
        return int(value) if value is not None else None


def place_mask(
    mask: np.ndarray | torch.Tensor,
    path: Path,
    reference: MetaTensor | str | Path | None,
    labels: LabelSpec | None,
    spatial_dims: int | None = None,
) -> PlacedMask:
    """`save_mask`'s arguments as a mask on the reference grid (see `save_mask`).

    Args:
        spatial_dims: the mask's spatial axes when there is no reference (None: inferred).

    Raises:
        GeometryError: the mask does not lie on the reference grid.
        WriteError: non-integer labels, or a reference that is no image.
    """
    image = _reference_image(reference, path)
    if image is not None:
        spatial_shape = tuple(int(n) for n in image.shape[1:])
        target_affine = affine_4x4(image.affine, len(spatial_shape))
        array, own_affine = split_channel(mask, len(spatial_shape), path)
        array = onto_grid(array, own_affine, spatial_shape, target_affine, path)
        affine = target_affine
    else:
        array, own_affine = split_channel(mask, spatial_dims, path)
        affine = own_affine if own_affine is not None else np.eye(4)
    labels_array = as_label_array(array, path)
    table = label_table(labels, present_values(labels_array), path)
    return PlacedMask(labels_array, affine, table, image)


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
