"""MONAI `ImageReader`s, so `LoadImage(reader=...)`/`LoadImaged` read like medattn: `MedattnReader` every
format `load_image` knows, `Image2DReader` PNG/JPEG/TIFF/BMP (a drop-in for PILReader), `VideoReader`
videos."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.data.meta_tensor import MetaTensor

from medattn.io.atomic import full_suffix
from medattn.io.dicom.series import looks_like_dicom
from medattn.io.formats import IMAGE2D_SUFFIXES, VIDEO_SUFFIXES, supported_suffix
from medattn.io.image2d import DecodedImage, decode_image2d, has_suffix, stack_decoded
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


class DecodingReader(ImageReader):
    """Base of medattn's MONAI readers: `read` decodes each file at once, `get_data` stacks them as channels.

    Decoding in `read` closes the file and makes a corrupt one fail there with a medattn error. Note that
    `LoadImage(reader=SomeReader())` falls back to MONAI's own readers when ours raises, so a corrupt file
    then surfaces MONAI's error; `LoadImage()(path, reader=SomeReader())` raises ours.
    Subclasses set `suffixes` and implement `decode`.
    """

    suffixes: tuple[str, ...] = ()

    @abstractmethod
    def decode(self, path: str | Path) -> DecodedImage:
        """Decode one file into a channel-first array and its meta."""

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """Whether every file ends in one of this reader's `suffixes`."""
        return has_suffix(filename, self.suffixes)

    def read(
        self, data: Sequence[str | Path] | str | Path, **kwargs: Any
    ) -> DecodedImage | list[DecodedImage]:
        """Decode the file (or each file) now; kwargs from LoadImage are not used."""
        if isinstance(data, (str, Path)):
            return self.decode(data)
        decoded = [self.decode(name) for name in data]
        return decoded if len(decoded) > 1 else decoded[0]

    def get_data(self, img: DecodedImage | Sequence[DecodedImage]) -> tuple[np.ndarray, dict]:
        """The channel-first array (file dtype; LoadImage casts it) and meta; several files as channels."""
        return stack_decoded(img)


class Image2DReader(DecodingReader):
    """MONAI ImageReader for PNG, JPEG, TIFF and BMP, a drop-in for PILReader with medattn's channel rules.

    With `LoadImage(reader=Image2DReader(), ensure_channel_first=True)` the array equals PILReader's for RGB
    and grayscale files; unlike PILReader it drops alpha, converts palette images to RGB, reads TIFF, closes
    the file, and raises medattn errors. The array is channel-first already (`ensure_channel_first` is
    optional). Several files given together are concatenated as channels.

    Args:
        palette_indices: keep palette indices (one channel) instead of converting palette images to RGB.
    """

    suffixes = IMAGE2D_SUFFIXES

    def __init__(self, palette_indices: bool = False):
        super().__init__()
        self.palette_indices = palette_indices

    def decode(self, path: str | Path) -> DecodedImage:
        """The image as (C, W, H) (or (C, W, H, T) for multi-page files) in its own dtype, with meta."""
        return decode_image2d(path, self.palette_indices)


class VideoReader(DecodingReader):
    """MONAI ImageReader for video files: `LoadImage(reader=VideoReader())` gives read_video's (3, W, H, T).

    The array is channel-first already (`ensure_channel_first` is optional). Several files given together
    are concatenated as channels, which needs equal frame size and count.

    Args:
        max_frames: read only the first this many frames of each video (None: all).
    """

    suffixes = VIDEO_SUFFIXES

    def __init__(self, max_frames: int | None = None):
        super().__init__()
        self.max_frames = max_frames

    def decode(self, path: str | Path) -> DecodedImage:
        """The video as (3, W, H, T) uint8 with its meta."""
        from medattn.io.video import decode_video

        return decode_video(path, self.max_frames)
