"""MONAI `ImageReader` adapter, so `LoadImage(reader=...)`/`LoadImaged` read like `load_image`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import ImageReader
from monai.data.meta_tensor import MetaTensor

from medattn.io.atomic import full_suffix
from medattn.io.dicom.series import looks_like_dicom
from medattn.io.formats import supported_suffix
from medattn.io.load import load_image

_WRITING_ONLY_META = ("nifti_forms", "nifti_2d", "first_slice_file")


class MedattnReader(ImageReader):
    """Reads every format `load_image` knows; arrays come channel-first with `original_channel_dim` = 0.

    Use with `LoadImage(reader=MedattnReader(), ensure_channel_first=True)`; a DICOM series is passed as
    its folder. Several files given at once (multi-channel cases) are stacked along the channel axis and
    must share one grid.

    Args:
        suffixes: file endings this instance claims (default: all of medattn's plus folders).
        series_uid: the series to read when a DICOM folder holds several.
    """

    def __init__(self, suffixes: Sequence[str] | None = None, series_uid: str | None = None):
        super().__init__()
        self.suffixes = tuple(suffixes) if suffixes is not None else None
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        if self.suffixes is None:
            return all(Path(n).is_dir() or supported_suffix(n) for n in names)
        return all(full_suffix(n) in self.suffixes for n in names)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs) -> list[MetaTensor]:
        names = [data] if isinstance(data, (str, Path)) else list(data)
        if len(names) > 1 and all(Path(n).is_file() and looks_like_dicom(Path(n)) for n in names):
            return [load_image(names, dtype=None)]  # the files of one DICOM series (a discover() case)
        return [load_image(n, dtype=None, series_uid=self.series_uid) for n in names]

    def get_data(self, img: MetaTensor | list[MetaTensor]) -> tuple[np.ndarray, dict]:
        images = img if isinstance(img, list) else [img]
        arrays = [np.asarray(i.array) for i in images]
        array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        # MONAI's LoadImage converts every meta value to a tensor: keep those it can, drop the rest (what
        # only matters for writing masks: an ambiguous NIfTI's forms, the 2D NIfTI flag, a DICOM volume's
        # first file).
        meta = {k: v for k, v in images[0].meta.items() if k not in _WRITING_ONLY_META}
        meta["affine"] = np.asarray(images[0].affine)
        meta["original_affine"] = np.asarray(images[0].affine)
        meta["spatial_shape"] = np.asarray(array.shape[1:])
        meta["original_channel_dim"] = 0
        return array, meta
