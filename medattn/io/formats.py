"""The one table of file formats: for each suffix, its reader and, for mask formats, its writer and name.

`load_image` takes its reader from here, `save_mask` its writer, `discover` which files are images and
of what kind, and `medattn predict --format` the names of the formats masks are written in. To add a
format, add a row (and its reader or writer in the format's own module).

Readers and writers import their module on first use, so a format's libraries (nibabel, SimpleITK,
pydicom, PyAV, Pillow) load only when a file of that format is read or written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medattn.errors import UnreadableImageError, WriteError
from medattn.io.atomic import full_suffix


# Each returns its format's function, imported on first use; returning it (rather than calling it) keeps
# warnings' stack levels pointing at the caller of load_image / save_mask.
def _nifti_reader():
    from medattn.io.nifti import read_nifti

    return read_nifti


def _itk_reader():
    from medattn.io.itk import read_itk

    return read_itk


def _dicom_reader():
    from medattn.io.dicom.read import read_dicom

    return read_dicom


def _image2d_reader():
    from medattn.io.image2d import read_image2d

    return read_image2d


def _video_reader():
    from medattn.io.video import read_video

    return read_video


def _nifti_writer():
    from medattn.io.nifti import write_mask

    return write_mask


def _itk_writer():
    from medattn.io.itk import write_mask

    return write_mask


def _seg_nrrd_writer():
    from medattn.io.seg_nrrd import write_mask

    return write_mask


def _dicom_seg_writer():
    from medattn.io.dicom.seg import save_dicom_seg

    return save_dicom_seg


def _png_writer():
    from medattn.io.png import write_mask

    return write_mask


def _png_overlay_writer():
    from medattn.io.png import write_overlay_mask

    return write_overlay_mask


@dataclass(frozen=True)
class Format:
    """One file format.

    Attributes:
        name: what users call it; for mask formats, the `medattn predict --format` value.
        suffixes: file endings, lower case with the dot (see medattn.io.atomic.full_suffix); masks are
            written with the first.
        kind: what a file holds: 'volume', 'image2d' (2D, or 2D+t for multi-page files), 'video', 'dicom'.
        reader: returns the read function, path -> MetaTensor (C, *spatial) with its RAS affine; None for
            a format medattn only writes.
        writer: returns `save_mask`'s writer, (mask, path, reference, labels) -> None; None for a format
            medattn only reads.
        overlay_writer: returns the writer for `save_mask(..., overlay=True)` (contours drawn on the image).
        aliases: other spellings of `name` that `normalized_format` accepts.
    """

    name: str
    suffixes: tuple[str, ...]
    kind: str
    reader: Callable[[], Callable] | None = None
    writer: Callable[[], Callable] | None = None
    overlay_writer: Callable[[], Callable] | None = None
    aliases: tuple[str, ...] = ()


# Mask formats first, in the order `medattn predict --help` and its errors list them.
FORMATS = (
    # name, suffixes, kind, reader, writer[, overlay writer]
    Format("nii.gz", (".nii.gz",), "volume", _nifti_reader, _nifti_writer, aliases=("nifti",)),
    Format("seg.nrrd", (".seg.nrrd", ".seg.nhdr"), "volume", _itk_reader, _seg_nrrd_writer),
    Format("dicom-seg", (".dcm",), "dicom", None, _dicom_seg_writer, aliases=("dcm", "dicom", "seg")),
    Format("png", (".png",), "image2d", _image2d_reader, _png_writer, _png_overlay_writer),
    Format("nii", (".nii",), "volume", _nifti_reader, _nifti_writer),
    Format("nrrd", (".nrrd", ".nhdr"), "volume", _itk_reader, _itk_writer),
    Format("mha", (".mha", ".mhd"), "volume", _itk_reader, _itk_writer),
    # Read only: medattn does not write masks in these.
    Format("dicom", (".dcm", ".dicom", ".ima"), "dicom", _dicom_reader),
    Format("jpeg", (".jpg", ".jpeg"), "image2d", _image2d_reader),
    Format("tiff", (".tif", ".tiff"), "image2d", _image2d_reader),
    Format("bmp", (".bmp",), "image2d", _image2d_reader),
    Format(
        "video", (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"), "video", _video_reader
    ),
)

_READERS = {suffix: f for f in FORMATS if f.reader is not None for suffix in f.suffixes}
_WRITERS = {f.suffixes[0]: f for f in FORMATS if f.writer is not None}
#: `--format` name -> the suffix its masks are written with.
MASK_FORMATS = {f.name: f.suffixes[0] for f in FORMATS if f.writer is not None}
#: other spellings users type for a mask format -> its name.
FORMAT_ALIASES = {alias: f.name for f in FORMATS if f.writer is not None for alias in f.aliases}
#: every suffix `load_image` reads (a DICOM folder, or a DICOM file without a suffix, is read too).
READ_SUFFIXES = tuple(_READERS)
IMAGE2D_SUFFIXES = tuple(s for f in FORMATS if f.kind == "image2d" for s in f.suffixes)
VIDEO_SUFFIXES = tuple(s for f in FORMATS if f.kind == "video" for s in f.suffixes)


def supported_suffix(path: str | Path) -> bool:
    """True when `load_image` has a reader for this file name (DICOM without a suffix is not guessed here)."""
    return full_suffix(path) in _READERS


def reader_for(path: Path) -> Callable:
    """The read function for a path: a folder is a DICOM series, a file is read by its suffix, and a file
    without a known suffix is DICOM when its header says so.

    Raises:
        UnreadableImageError: no format reads this file; the message lists what medattn reads.
    """
    from medattn.io.dicom.series import looks_like_dicom

    if path.is_dir():
        return _dicom_reader()
    suffix = full_suffix(path)
    if suffix in _READERS:
        return _READERS[suffix].reader()
    if looks_like_dicom(path):
        return _dicom_reader()
    supported = ", ".join((*READ_SUFFIXES, "a DICOM folder"))
    raise UnreadableImageError(
        f"unknown image format {suffix or '(no suffix)'!r}; medattn reads {supported}", path
    )


def mask_format(path: Path) -> Format:
    """The format a mask file is written in, by its suffix.

    Raises:
        WriteError: no mask format has this suffix; the message lists those that do.
    """
    suffix = full_suffix(path)
    if suffix not in _WRITERS:
        raise WriteError(
            f"unknown mask format {suffix or '(no suffix)'!r}; medattn writes {', '.join(_WRITERS)}", path
        )
    return _WRITERS[suffix]


def normalized_format(name: str) -> str:
    """The `MASK_FORMATS` name for what a user typed: "nii.gz", ".NII.GZ", "dcm" and "dicom-seg" all name
    theirs; anything else is returned as typed, for the error that lists the formats."""
    key = str(name).strip().lower().lstrip(".")
    return FORMAT_ALIASES.get(key, key)
