"""Describe the cases in a folder: what was found and how each reads (shape, spacing, orientation, range)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from nibabel.orientations import aff2axcodes

from medattn.errors import MedattnError
from medattn.io.discovery import Case, Dataset, discover
from medattn.metrics.volume import spacing_from_affine


@dataclass
class CaseInfo:
    """One case as it reads: spatial `shape` (voxels), `spacing` (mm), the 4x4 RAS `affine`, intensities."""

    id: str
    kind: str
    images: list[str]
    label: str | None = None
    subset: str | None = None
    group: str = ""
    channels: int | None = None
    shape: list[int] | None = None
    spacing: list[float] | None = None
    affine: list[list[float]] | None = None
    orientation: str | None = None
    modality: str | None = None
    dtype: str | None = None
    intensity_min: float | None = None
    intensity_max: float | None = None
    frames: int | None = None
    fps: float | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def describe_case(case: Case) -> CaseInfo:
    """Read one case and summarise it; a failure is recorded in `error` instead of raised."""
    shown = [str(case.images[0].parent)] if case.dicom else [str(p) for p in case.images]
    info = CaseInfo(
        case.id, case.kind, shown, str(case.label) if case.label else None, case.subset, case.group
    )
    try:
        if case.kind == "video":
            return _describe_video(case, info)
        image = case.load_image()
    except MedattnError as error:
        info.error = str(error)
        return info
    except Exception as error:  # a bug of ours must not hide the other cases; report it with the case
        info.error = f"internal error reading this case: {type(error).__name__}: {error}"
        return info
    time_axis = image.meta.get("time_axis")
    spatial = list(image.shape[1:])
    if time_axis:
        info.frames = int(spatial.pop(time_axis - 1))
        info.fps = float(image.meta["fps"]) if image.meta.get("fps") else None
    affine = np.asarray(image.affine, dtype=np.float64)
    info.channels = int(image.shape[0])
    info.shape = [int(s) for s in spatial]
    info.spacing = [round(s, 6) for s in spacing_from_affine(affine, len(spatial))]
    info.affine = np.round(affine, 6).tolist()
    info.orientation = _orientation(image.meta, affine, len(spatial))
    info.modality = image.meta.get("modality") or None
    info.dtype = str(image.dtype).replace("torch.", "")
    values = image.as_tensor()
    info.intensity_min = float(values.min())
    info.intensity_max = float(values.max())
    return info


def _orientation(meta: dict, affine: np.ndarray, spatial_dims: int) -> str | None:
    """Axis codes of a volume ("RAS", "LPS", ...); "unknown" where the file gave no orientation (a multi-frame
    DICOM without plane positions, read on an identity grid that only looks like RAS); None for 2D."""
    if spatial_dims != 3:
        return None
    if str(meta.get("geometry", "")).startswith("unknown"):
        return "unknown"
    return "".join(aff2axcodes(affine))


def _describe_video(case: Case, info: CaseInfo) -> CaseInfo:
    """Videos are described from the container header: decoding every frame for a summary costs minutes."""
    from medattn.io.video import video_info

    header = video_info(case.images[0])
    info.channels, info.shape, info.spacing = 3, [int(header["width"]), int(header["height"])], [1.0, 1.0]
    info.frames, info.fps, info.modality = int(header["n_frames"]), float(header["fps"] or 0) or None, "RGB"
    info.affine = np.eye(4).tolist()
    return info


def describe(path: str | Path) -> tuple[Dataset, Iterator[CaseInfo]]:
    """Discover cases under `path`; the iterator reads them one at a time so a caller can show progress."""
    dataset = discover(path)
    return dataset, (describe_case(case) for case in dataset)
