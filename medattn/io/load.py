"""`load_image`: any scan path -> MetaTensor (C, *spatial) with a RAS affine, the reader chosen by suffix.

Like nnU-Net's reader/writer classes chosen by file ending (the table in medattn.io.formats), with one
addition clinical data needs: a folder (or a file without a suffix) is DICOM.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import MetaTensor
from numpy.typing import DTypeLike

from medattn.errors import GeometryError, InputNotFoundError, InputWarning
from medattn.io.formats import reader_for


def load_image(
    path: str | Path | Sequence[str | Path],
    *,
    dtype: DTypeLike | None = np.float32,
    spatial_dims: int | None = None,
    channels: int | None = None,
    series_uid: str | None = None,
) -> MetaTensor:
    """Read a scan with its geometry.

    Args:
        path: a NIfTI, NRRD (.seg.nrrd too), MHA/MHD, PNG/JPG/TIFF/BMP, video or DICOM file; a DICOM series
            folder; or the list of one DICOM series' files (as `discover` gives them).
        dtype: array dtype of the result; None keeps the file's (use it for label maps).
        spatial_dims: 2 or 3 to insist on that many spatial axes. A volume with one slice is accepted as
            2D; anything else that does not fit raises GeometryError.
        channels: the number of channels the caller needs (a model's input channels); a 4D series or an
            RGB image where one channel is expected raises GeometryError instead of failing later.
        series_uid: which series to read when a DICOM folder holds several.

    Returns:
        MetaTensor (C, *spatial): `.affine` maps voxel indices to RAS+ mm, `.meta` holds `filename_or_obj`,
        `modality`, `spacing` (mm) and, for DICOM, `series_uid`.

    Raises:
        InputNotFoundError, UnreadableImageError, UnsupportedDicomError, GeometryError: each names the file.
    """
    if isinstance(path, (list, tuple)):
        from medattn.io.dicom.read import read_dicom

        image = read_dicom([Path(p) for p in path])
        source = Path(path[0]).parent if path else Path(".")
    else:
        source = Path(path)
        if not source.exists():
            raise InputNotFoundError("no such file or folder", source)
        reader = reader_for(source)
        image = reader(source, series_uid=series_uid) if series_uid else reader(source)
    _check_placement(image, source)
    if spatial_dims is not None:
        image = _as_spatial_dims(image, spatial_dims, source)
    if channels is not None and image.shape[0] != channels:
        raise GeometryError(
            f"expected {channels} channel(s), found {image.shape[0]} (shape {tuple(image.shape)}): "
            "a 4D series, colour image or multi-channel file where a single volume was expected",
            source,
        )
    if dtype is not None and image.dtype != np.dtype(dtype):
        image = image.to(dtype=_torch_dtype(dtype))
    _replace_nonfinite_(image, source)
    return image


def _check_placement(image: MetaTensor, source: Path) -> None:
    """GeometryError for an image no viewer can place or no model can read: no voxels, an affine with a
    non-finite entry (NaN origin or spacing), or a singular one (a zero spacing, a degenerate direction
    matrix). Readers name the damaged header field where they can; this is the net under all of them."""
    if image.numel() == 0:
        raise GeometryError(f"the image has no voxels (shape {tuple(image.shape)})", source)
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise GeometryError(
            "the image's placement (spacing, origin or direction) is not a finite number", source
        )
    size = affine.shape[0] - 1
    linear = affine[:size, :size]
    spacing = np.linalg.norm(linear, axis=0)
    if (spacing == 0).any() or abs(np.linalg.det(linear)) <= 1e-6 * float(np.prod(spacing)):
        raise GeometryError(
            f"the image's voxel grid is degenerate (spacing {np.round(spacing, 6).tolist()} mm or a singular "
            "direction matrix): the header's spacing or orientation is damaged",
            source,
        )


def _replace_nonfinite_(image: MetaTensor, source: Path) -> None:
    """NaN and infinite voxels (outside the field of view of a resampled scan, as in nibabel's own test
    data, or a broken export) replaced in place, per channel: NaN and -inf by the smallest finite value,
    +inf by the largest; with an InputWarning naming the file and `meta["nonfinite_voxels"]` the count.

    Left in, one NaN makes the z-score NaN everywhere and the mask silently empty. The check is one
    min/max pass on the plain tensor (NaN propagates into both, an infinity is one of them), so a clean
    scan pays a small fraction of what a float64 sum through MetaTensor would cost (BENCHMARKS.md,
    end-to-end prediction).
    """
    import torch

    if not image.is_floating_point() or image.numel() == 0:
        return
    values = image.as_tensor()
    low, high = torch.aminmax(values)
    if math.isfinite(float(low)) and math.isfinite(float(high)):
        return
    bad = int((~torch.isfinite(values)).sum())
    for channel in values:
        finite = channel[torch.isfinite(channel)]
        low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 0.0)
        torch.nan_to_num_(channel, nan=low, posinf=high, neginf=low)
    image.meta["nonfinite_voxels"] = bad
    warnings.warn(
        f"{source}: {bad} NaN or infinite voxel(s) replaced by the image's smallest (NaN, -inf) and largest "
        "(+inf) finite value",
        InputWarning,
        stacklevel=3,
    )


def _torch_dtype(dtype: DTypeLike):
    import torch

    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def _as_spatial_dims(image: MetaTensor, spatial_dims: int, source: Path) -> MetaTensor:
    """Insist on 2 or 3 spatial axes; squeeze a single-slice volume to 2D, refuse anything else."""
    have = image.ndim - 1
    if have == spatial_dims and not image.meta.get("time_axis"):
        return image
    if spatial_dims == 2 and have == 3 and image.shape[-1] == 1:
        squeezed = image[..., 0]
        squeezed.meta["spacing"] = tuple(image.meta.get("spacing", (1.0, 1.0, 1.0))[:2])
        return squeezed
    what = "a video (2D+t)" if image.meta.get("time_axis") else f"{have}D with shape {tuple(image.shape[1:])}"
    raise GeometryError(f"expected a {spatial_dims}D image, found {what}", source)
