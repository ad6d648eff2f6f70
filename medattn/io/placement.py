"""A mask placed on its reference image's grid, as every mask writer but DICOM SEG takes it.

`save_mask` loads the reference; `place_mask` puts the mask exactly on its grid (`onto_grid`: the same
grid with axes permuted or reversed is put back, anything else is a GeometryError) and names its labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from medattn.io.geometry import NiftiForms, affine_4x4, onto_grid, split_channel
from medattn.io.label_table import Label, LabelSpec, as_label_array, label_table, present_values


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
        """A NIfTI reference whose readers disagree on its placement (`NiftiForms`)."""
        return self.reference.meta.get("nifti_forms") if self.reference is not None else None

    @property
    def exif_orientation(self) -> int | None:
        """The source photo's EXIF orientation (medattn.io.image2d), for PNGs viewers must turn alike."""
        value = self.reference.meta.get("exif_orientation") if self.reference is not None else None
        return int(value) if value is not None else None


def place_mask(
    mask: np.ndarray | torch.Tensor,
    path: Path,
    reference: MetaTensor | None,
    labels: LabelSpec | None,
    spatial_dims: int | None = None,
) -> PlacedMask:
    """`save_mask`'s arguments as a mask on the reference grid (see `save_mask`; the reference loaded).

    Args:
        spatial_dims: the mask's spatial axes when there is no reference (None: inferred).

    Raises:
        GeometryError: the mask does not lie on the reference grid.
        WriteError: non-integer labels.
    """
    image = reference
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
