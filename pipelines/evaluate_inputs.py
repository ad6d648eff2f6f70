"""What `evaluate` compares: prediction and reference files paired by case id, read as label maps, and the
prediction brought onto the reference's grid (exactly where the grids share voxels, else by --resample).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medattn.errors import (
    GeometryError,
    InputNotFoundError,
    MedattnError,
    NoCasesFoundError,
    UnreadableImageError,
)
from medattn.io.atomic import full_suffix
from medattn.metrics.case import as_label_map

# World-coordinate tolerance (mm) under which two affines describe the same grid (float32 headers round);
# also the rounding of the centroids in components.csv.
GRID_ATOL_MM = 1e-3


def case_id(path: str | Path) -> str:
    """A file's case id: its name without the image suffix (`case_001.nii.gz` -> `case_001`)."""
    path = Path(path)
    suffix = full_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _label_files(folder: Path) -> dict[str, Path]:
    from medattn.io.formats import supported_suffix

    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not supported_suffix(path):
            continue
        key = case_id(path)
        if key in files:
            raise MedattnError(
                f"two files for case {key!r}: {files[key].name} and {path.name}; keep one", folder
            )
        files[key] = path
    return files


def pair_cases(pred: Path, ref: Path) -> tuple[list[tuple[str, Path | None, Path]], list[str]]:
    """Match predictions to references by case id: ([(id, pred or None, ref)], prediction ids without ref)."""
    for path in (pred, ref):
        if not path.exists():
            raise InputNotFoundError("no such file or folder", path)
    if pred.is_file() and ref.is_file():
        return [(case_id(ref), pred, ref)], []
    if pred.is_file() or ref.is_file():
        raise MedattnError("give two folders (one file per case, matched by name) or two files", pred)
    preds, refs = _label_files(pred), _label_files(ref)
    if not refs:
        raise NoCasesFoundError(
            "no label files (.nii.gz, .nrrd, .mha, .png, ...) in the reference folder", ref
        )
    if not set(preds) & set(refs):
        raise NoCasesFoundError(
            f"no prediction file name matches a reference case id (references: {', '.join(sorted(refs)[:5])}"
            f"{', ...' if len(refs) > 5 else ''}); name predictions <case_id>.nii.gz like the references",
            pred,
        )
    pairs = [(key, preds.get(key), path) for key, path in sorted(refs.items())]
    return pairs, sorted(set(preds) - set(refs))


def load_label_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A label file as (integer array of spatial axes, 4x4 voxel -> RAS mm affine)."""
    from medattn.io import load_image
    from medattn.io.dicom.seg import read_dicom_seg
    from medattn.io.geometry import affine_4x4

    image = read_dicom_seg(path) if _is_dicom_seg(path) else load_image(path, dtype=None)
    array = np.asarray(image.array)
    if image.meta.get("time_axis"):
        raise GeometryError("a video or image stack is not a label map", path)
    if array.shape[0] > 1 and not all(np.array_equal(array[0], channel) for channel in array[1:]):
        raise GeometryError(f"has {array.shape[0]} different channels; evaluate needs one label map", path)
    from medattn.io.mask_images import binarized, is_binary_mask_file

    if is_binary_mask_file(path, array[0]):  # a 0/255 mask image (Kvasir, ISIC)
        return binarized(array[0]), affine_4x4(image.affine, array.ndim - 1)
    try:
        labels = as_label_map(array[0])
    except ValueError as error:
        raise UnreadableImageError(str(error), path) from error
    return labels, affine_4x4(image.affine, labels.ndim)


def _is_dicom_seg(path: Path) -> bool:
    """A DICOM Segmentation object (medattn predict --format dicom-seg writes them), by its header."""
    if not path.is_file() or full_suffix(path) not in ("", ".dcm", ".dicom"):
        return False
    from medattn.io.dicom.headers import dcmread

    try:
        header = dcmread(path, pixels=False, specific_tags=["Modality"])
    except UnreadableImageError:  # not DICOM at all, or damaged: load_image names the problem
        return False
    return str(header.get("Modality", "")) == "SEG"


def _describe_grid(shape: Sequence[int], affine: np.ndarray) -> str:
    spacing = np.round(np.linalg.norm(affine[:3, : len(shape)], axis=0), 4).tolist()
    origin = np.round(affine[:3, 3], 3).tolist()
    return f"shape {tuple(int(n) for n in shape)}, spacing {spacing} mm, origin {origin} mm"


def onto_reference_grid(
    pred: np.ndarray,
    pred_affine: np.ndarray,
    ref: np.ndarray,
    ref_affine: np.ndarray,
    resample: bool,
    path: Path,
) -> np.ndarray:
    """The prediction on the reference grid: unchanged when the grids match, re-indexed exactly when it
    holds the same voxels in another axis order (or, for a DICOM SEG, a block of them), else GeometryError
    or, with `resample`, nearest-neighbour resampling with MONAI's SpatialResample (labels never blend)."""
    if pred.shape == ref.shape and np.allclose(pred_affine, ref_affine, rtol=0, atol=GRID_ATOL_MM):
        return pred
    placed = _within_reference_grid(pred, pred_affine, ref.shape, ref_affine, allow_block=_is_dicom_seg(path))
    if placed is not None:
        return placed
    if not resample:
        raise GeometryError(
            f"prediction grid ({_describe_grid(pred.shape, pred_affine)}) differs from the reference grid "
            f"({_describe_grid(ref.shape, ref_affine)}); pass --resample (resample=True) to resample the "
            "prediction onto the reference grid with nearest neighbour",
            path,
        )
    if pred.ndim != ref.ndim:
        raise GeometryError(f"prediction is {pred.ndim}D, reference {ref.ndim}D: cannot resample", path)
    import torch
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    dims = ref.ndim
    source = MetaTensor(torch.from_numpy(pred[None].astype(np.float32)), affine=torch.as_tensor(pred_affine))
    resampler = SpatialResample(mode="nearest", padding_mode="zeros", dtype=np.float32)
    if dims == 2:  # MONAI's 2D affines are 3x3
        keep = [0, 1, 3]
        source.affine = torch.as_tensor(pred_affine[np.ix_(keep, keep)])
        target = torch.as_tensor(ref_affine[np.ix_(keep, keep)])
    else:
        target = torch.as_tensor(ref_affine)
    moved = resampler(source, dst_affine=target, spatial_size=ref.shape)
    return as_label_map(np.asarray(moved.detach().cpu().numpy())[0], "resampled prediction")


def _within_reference_grid(
    pred: np.ndarray,
    pred_affine: np.ndarray,
    ref_shape: Sequence[int],
    ref_affine: np.ndarray,
    allow_block: bool = False,
) -> np.ndarray | None:
    """A prediction on the reference grid's own voxels in another axis order or direction (an LPS writer
    against a RAS one), re-indexed exactly by `medattn.io.geometry.onto_grid`; with `allow_block` also one
    on a block of them, placed into an empty map of the reference's shape. None for any other grid.

    `allow_block` is for DICOM SEG predictions: a SEG omits its empty frames, so it covers only the slices
    with a segment, in highdicom's slice order. Other files of another shape stay an error (--resample),
    as they more likely come from a cropped or wrong input.
    """
    from medattn.io.geometry import onto_grid

    if pred.ndim != len(ref_shape) or pred.ndim not in (2, 3):
        return None
    try:
        return onto_grid(pred, pred_affine, tuple(ref_shape), ref_affine, allow_block=allow_block)
    except GeometryError:
        return None


def seg_reference_on_prediction_grid(
    ref: np.ndarray, ref_affine: np.ndarray, pred: np.ndarray, pred_affine: np.ndarray, ref_path: Path
) -> np.ndarray | None:
    """A DICOM SEG reference (annotation tools omit its empty frames, so it spans only the painted slices)
    placed into the prediction's larger grid, when it is a block of that grid's voxels; None otherwise.
    Scoring then covers the whole scan: a false positive outside the painted slices still counts, which
    cropping the prediction to the SEG's slices (--resample) would hide."""
    if not _is_dicom_seg(ref_path) or ref.shape == pred.shape:
        return None
    return _within_reference_grid(ref, ref_affine, pred.shape, pred_affine, allow_block=True)
