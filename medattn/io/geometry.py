"""Grids: affines as 4x4 RAS, and a label mask put exactly on a reference grid (axis permutations and flips).

A mask that went through MONAI's `Orientation` (e.g. to RAS) holds the same voxels as the scan, with its
axes permuted or reversed. Writing it for the scan (medattn.io.write) means undoing exactly that: the
voxel index map between the two grids, inv(mask_affine) @ reference_affine, must then be a signed
permutation with the matching offset. Anything else (other spacing, shift, rotation) needs resampling,
which is inference's job, so it is refused here. `medattn evaluate` places predictions on reference grids
with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from medattn.errors import GeometryError

# In voxels: affines written in float32 or with ~6 decimals agree far better than this.
GRID_TOLERANCE = 1e-3
# DICOM, ITK and NRRD store geometry in LPS millimetres; MONAI, nibabel and medattn use RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def volume_meta(path: Path, affine: np.ndarray, spatial_dims: int) -> dict:
    """The meta the NIfTI and ITK readers set: source path, modality unknown (''), spacing (mm, from the
    affine), RAS space."""
    return {
        "filename_or_obj": str(path),
        "modality": "",
        "spacing": tuple(float(v) for v in np.linalg.norm(affine[:3, :spatial_dims], axis=0)),
        "space": "RAS",
        "original_channel_dim": 0,
    }


def as_volume(array: np.ndarray) -> np.ndarray:
    """A 2D label image as a one-slice volume; volume formats store three axes."""
    return array[..., None] if array.ndim == 2 else array


def affine_4x4(affine: np.ndarray | torch.Tensor | None, spatial_dims: int) -> np.ndarray:
    """A voxel -> world affine as 4x4 float64; a 2D (3x3) affine is embedded with z = 0, None is identity."""
    if affine is None:
        return np.eye(4)
    matrix = np.asarray(
        affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64
    )
    if matrix.shape == (4, 4):
        return matrix
    if matrix.shape == (3, 3) and spatial_dims <= 2:
        embedded = np.eye(4)
        embedded[:2, :2] = matrix[:2, :2]
        embedded[:2, 3] = matrix[:2, 2]
        return embedded
    raise GeometryError(f"expected a 4x4 (or 2D 3x3) affine, got shape {matrix.shape}")


def split_channel(
    mask: np.ndarray | torch.Tensor, spatial_dims: int | None, path: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The mask's spatial array (channel removed) and its own affine when it carries one (a MetaTensor).

    Args:
        mask: (*spatial) or (1, *spatial) label values; a MetaTensor is channel-first like every MONAI image.
        spatial_dims: the number of spatial axes the output needs (the reference's), or None to infer:
            4D arrays and (1, W, H) MetaTensors (MONAI's channel-first 2D images) drop their first axis.
        path: the output file, named in errors.
    """
    affine = getattr(mask, "affine", None)
    is_meta = affine is not None and isinstance(mask, torch.Tensor)
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if spatial_dims is None:
        has_channel = array.ndim == 4 or (is_meta and array.ndim == 3 and array.shape[0] == 1)
        spatial_dims = array.ndim - 1 if has_channel else array.ndim
    if array.ndim == spatial_dims + 1:
        if array.shape[0] != 1:
            raise GeometryError(
                f"the mask has {array.shape[0]} channels (shape {tuple(array.shape)}); pass one channel of "
                "integer labels, e.g. the argmax over classes",
                path,
            )
        array = array[0]
    elif array.ndim != spatial_dims:
        raise GeometryError(
            f"the mask has shape {tuple(array.shape)}, expected {spatial_dims} spatial axes (plus an "
            "optional channel axis of size 1)",
            path,
        )
    if array.ndim not in (2, 3):
        raise GeometryError(f"masks are 2D or 3D, got shape {tuple(array.shape)}", path)
    return array, (affine_4x4(affine, array.ndim) if is_meta else None)


def onto_grid(
    array: np.ndarray,
    affine: np.ndarray | None,
    target_shape: tuple[int, ...],
    target_affine: np.ndarray,
    path: str | Path | None = None,
    allow_block: bool = False,
) -> np.ndarray:
    """The mask's voxels re-indexed onto the target grid, exactly (the same world position for each voxel).

    nibabel's orientation tools find the axis order and directions that turn the mask's grid into the
    target's; what is left after them must be nothing (or, with `allow_block`, a shift by whole voxels).

    Args:
        array: spatial label array.
        affine: its voxel -> world affine, or None when the array is already indexed like the target.
        target_shape: spatial shape of the reference grid.
        target_affine: voxel -> world affine of the reference grid.
        path: the output file, named in errors.
        allow_block: also accept a mask on a block of the target's voxels (shifted by whole voxels, all
            inside the target), placed into zeros of the target shape: a DICOM SEG, which omits its
            empty frames, covers only the slices with a segment.

    Raises:
        GeometryError: the shapes differ, or the two grids are not a permutation/flip (or, with
            `allow_block`, a block) of each other.
    """
    target_shape = tuple(int(n) for n in target_shape)
    if affine is None:
        if array.shape != target_shape:
            raise GeometryError(
                f"the mask shape {tuple(array.shape)} differs from the reference image shape {target_shape}",
                path,
            )
        return array
    dims = len(target_shape)
    # Work in 3D: a 2D grid is a 3D grid with one slice.
    volume = array.reshape(array.shape + (1,) * (3 - array.ndim))
    target3 = target_shape + (1,) * (3 - dims)
    own, target = affine_4x4(affine, dims), affine_4x4(target_affine, dims)
    try:
        # For each mask axis: the target axis it runs along, and whether it runs backwards.
        axes = io_orientation(np.linalg.inv(np.linalg.solve(own, target)))
        if np.isnan(axes).any():
            raise np.linalg.LinAlgError
        placed = apply_orientation(volume, axes)
        placed_affine = own @ inv_ornt_aff(axes, volume.shape)
        residual = np.linalg.solve(placed_affine, target)  # target index -> placed mask index
    except np.linalg.LinAlgError as error:
        raise GeometryError(
            "the mask's or the reference's affine is singular (an axis of zero length)", path
        ) from error
    if np.abs(residual[:3, :3] - np.eye(3)).max() > GRID_TOLERANCE:
        raise GeometryError(
            "the mask grid is rotated or scaled relative to the reference image grid; resample the mask onto "
            "the reference first (inference does this). If the array already is on the reference grid and "
            "only its affine is wrong, pass the plain array (mask.numpy())",
            path,
        )
    if not allow_block and placed.shape != target3:
        raise GeometryError(
            f"the mask shape {tuple(array.shape)} does not cover the reference image shape {target_shape} "
            "(after matching axes)",
            path,
        )
    shift = residual[:3, 3]  # placed mask index = target index + shift
    whole = np.round(shift) if allow_block else np.zeros(3)
    for axis in np.flatnonzero(np.abs(shift - whole) > GRID_TOLERANCE)[:1]:
        raise GeometryError(
            f"the mask grid is shifted by {shift[axis] - whole[axis]:.3f} voxels along axis {axis} relative "
            "to the reference image grid; resample or pad it onto the reference first",
            path,
        )
    start = -whole.astype(int)  # the target index of the placed mask's first voxel
    if not allow_block:
        return np.ascontiguousarray(placed).reshape(target_shape)
    end = start + np.asarray(placed.shape)
    if (start < 0).any() or (end > np.asarray(target3)).any():
        raise GeometryError(
            f"the mask grid (shape {tuple(array.shape)}) reaches outside the reference image grid "
            f"(shape {target_shape})",
            path,
        )
    out = np.zeros(target3, dtype=array.dtype)
    out[tuple(slice(a, b) for a, b in zip(start, end, strict=True))] = placed
    return out.reshape(target_shape)


@dataclass(frozen=True)
class NiftiForms:
    """The geometry of a NIfTI file whose readers disagree on it, as the file holds it.

    A header with a qform and an sform that differ, or with neither coded, places the scan differently in
    nibabel (sform first, else the qform, else a centred guess from the voxel size) and in ITK / 3D Slicer
    (qform first; the raw voxel size at the origin when neither is coded). medattn reads nibabel's
    placement; the mask writers use these to put a mask wherever each reader puts the scan: NIfTI masks
    copy both forms and their codes, NRRD / MHA / .seg.nrrd masks (read by ITK) take ITK's placement.
    """

    qform: np.ndarray
    qform_code: int
    sform: np.ndarray
    sform_code: int
    nibabel_affine: np.ndarray  # voxel -> RAS, as nibabel (and medattn) read the file
    itk_affine: np.ndarray  # voxel -> RAS, as ITK reads the file
