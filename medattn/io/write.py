"""`save_mask`: write a label mask on its source image's grid, in the format the file suffix names.

Like nnU-Net's writers chosen by file ending. Every format goes through medattn.io.atomic, so a crash
leaves the previous file or the new one, never half a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from medattn.errors import WriteError
from medattn.io.atomic import full_suffix
from medattn.io.geometry import affine_4x4, onto_grid, split_channel
from medattn.io.label_table import LabelSpec, as_label_array, label_table, present_values

FORMATS = {
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".seg.nrrd": "3D Slicer segmentation",
    ".nrrd": "NRRD label map",
    ".mha": "MetaImage label map",
    ".dcm": "DICOM SEG",
    ".png": "PNG (2D)",
}


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
    suffix = full_suffix(path)
    if suffix not in FORMATS:
        supported = ", ".join(FORMATS)
        raise WriteError(f"unknown mask format {suffix or '(no suffix)'!r}; medattn writes {supported}", path)
    if overlay and suffix != ".png":
        raise WriteError("overlay=True draws contours on a 2D image and needs a .png output", path)
    if overlay and reference is None:
        raise WriteError("overlay=True needs reference= the image to draw the contours on", path)
    if suffix == ".dcm":
        from medattn.io.dicom_seg import save_dicom_seg

        save_dicom_seg(mask, path, reference, labels)
        return path

    image = _reference_image(reference, path)
    if image is not None:
        spatial_shape = tuple(int(n) for n in image.shape[1:])
        target_affine = affine_4x4(image.affine, len(spatial_shape))
        array, own_affine = split_channel(mask, len(spatial_shape), path)
        array = onto_grid(array, own_affine, spatial_shape, target_affine, path)
        affine = target_affine
    else:
        shape = tuple(np.shape(mask))
        # PNG: a leading axis of size 1 is the channel; anything else 3D is a volume, refused by the writer.
        png_dims = len(shape) - 1 if len(shape) >= 3 and shape[0] == 1 else len(shape)
        array, own_affine = split_channel(mask, png_dims if suffix == ".png" else None, path)
        affine = own_affine if own_affine is not None else np.eye(4)
    labels_array = as_label_array(array, path)
    table = label_table(labels, present_values(labels_array), path)
    # A NIfTI reference whose readers disagree on its placement (medattn.io.volume.NiftiForms).
    forms = image.meta.get("nifti_forms") if image is not None else None

    if suffix in (".nii.gz", ".nii"):
        from medattn.io.labelmap import write_nifti

        from_2d_nifti = image is not None and bool(image.meta.get("nifti_2d"))
        keep_2d = from_2d_nifti and labels_array.shape[2:] in ((), (1,))
        if keep_2d:  # the mask of a 2D NIfTI is a 2D NIfTI of the same shape
            labels_array = labels_array.reshape(labels_array.shape[:2])
        write_nifti(labels_array, affine, path, forms, keep_2d=keep_2d)
    elif suffix in (".nrrd", ".mha"):
        from medattn.io.labelmap import itk_affine, write_itk

        write_itk(labels_array, itk_affine(affine, forms), path)
    elif suffix == ".seg.nrrd":
        from medattn.io.labelmap import itk_affine
        from medattn.io.seg_nrrd import write_seg_nrrd

        write_seg_nrrd(labels_array, itk_affine(affine, forms), table, path)
    elif overlay:
        from medattn.io.png import write_overlay_png

        write_overlay_png(labels_array, image.detach().cpu().numpy(), table, path, _exif_orientation(image))
    else:
        from medattn.io.png import write_label_png

        write_label_png(labels_array, path, _exif_orientation(image))
    return path


def _exif_orientation(image: MetaTensor | None) -> int | None:
    """The source photo's EXIF orientation (medattn.io.image2d), for PNGs viewers must turn alike."""
    value = image.meta.get("exif_orientation") if image is not None else None
    return int(value) if value is not None else None


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
