"""Read 2D images (PNG, JPEG, TIFF, BMP) into channel-first MetaTensors laid out like MONAI's PILReader.

Layout: a MetaTensor (C, W, H), i.e. MONAI's PILReader convention (axis 0 runs along image columns, the
transpose of PIL's/NumPy's (H, W)), with the identity affine PILReader's output carries: one pixel is 1 unit,
pixel (i, j) lies at (i, j). Channels: colour -> 3 (RGB), grayscale -> 1; alpha is dropped, palette images
become RGB, 16-bit and float grayscale keep their values, 1-bit images read as 0/1. EXIF orientation is not
applied (PILReader does not either), so arrays match pixel storage order; a photo's orientation tag (2-8,
as phone-mounted dermatoscopes write) is kept in `meta["exif_orientation"]`, and PNG masks and overlays
written for it carry the same tag, so viewers turn image and mask alike.

Multi-page TIFFs (and animated PNGs) are read as a 2D+t stack (C, W, H, T) like video, with
`meta["time_axis"] = 3` and `meta["n_frames"]`; all pages must share size and mode.

TIFF: Pillow decodes it unless Pillow cannot open it (float RGB, planar 16-bit) or would cut colour samples
of more than 8 bits down to 8; then tifffile (a scikit-image dependency) decodes it. A 16-bit colour PNG is
read by Pillow at 8 bits (the high byte), with a warning: no installed library decodes it at full depth.

Damaged files: what the header claims (width x height x bytes per pixel x pages, and a PNG's chunk lengths)
is checked against the file's size and the machine's memory (`medattn.io.limits`) before any pixel is
decoded, so a flipped byte in a size field is an UnreadableImageError, never a MemoryError.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from PIL import Image, ImageMode, ImageSequence

from medattn.errors import GeometryError, InputNotFoundError, UnreadableImageError
from medattn.io.limits import check_claimed_size

# Pillow modes whose pixels are already one grayscale value each (np.asarray gives (H, W)).
_GRAY_MODES = {"L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
# Pillow modes converted to RGB first: palette, premultiplied alpha, other colour spaces.
_TO_RGB_MODES = {"P", "PA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"}
_TIFF_BITS_PER_SAMPLE = 258


@dataclass
class DecodedImage:
    """Pixels of one file, fully decoded (so the file is closed), and their meta: what `read` returns.

    Attributes:
        array: (C, W, H) or (C, W, H, T), in the file's own dtype (uint8, uint16, float32, ...).
        meta: the MONAI/medattn meta dict for this array (see `planar_meta`).
    """

    array: np.ndarray
    meta: dict[str, Any]


def has_suffix(filename: Sequence[str | Path] | str | Path, suffixes: Sequence[str]) -> bool:
    """Whether every file name ends in one of `suffixes` (lower case, with the dot), ignoring case."""
    names = [filename] if isinstance(filename, (str, Path)) else list(filename)
    return bool(names) and all(Path(name).suffix.lower() in suffixes for name in names)


#: The EXIF tag that tells viewers how to turn a photo for display (1 = as stored, 2-8 = mirrored/rotated).
EXIF_ORIENTATION = 0x0112


def planar_meta(path: str | Path, array: np.ndarray, modality: str, **extra: Any) -> dict[str, Any]:
    """Meta for a channel-first 2D or 2D+t array: what LoadImage + PILReader produce, plus medattn keys.

    Args:
        path: the source file, stored as `filename_or_obj`.
        array: (C, W, H) or (C, W, H, T); its spatial shape is recorded.
        modality: 'RGB' for colour, 'OT' (DICOM's "other") for grayscale.
        extra: further keys (format, mode, fps, ...).

    Returns:
        filename_or_obj, modality, spacing (1.0, 1.0): pixel size in the image plane (files carry no mm),
        space 'RAS', spatial_shape, original_channel_dim 0 (the array is channel-first), affine (identity
        4x4, as PILReader's output has), then `extra`.
    """
    meta: dict[str, Any] = {
        "filename_or_obj": str(path),
        "modality": modality,
        "spacing": (1.0, 1.0),
        "space": "RAS",
        "spatial_shape": np.asarray(array.shape[1:]),
        "original_channel_dim": 0,
        "affine": np.eye(4),
    }
    meta.update(extra)
    return meta


def stack_decoded(decoded: DecodedImage | Sequence[DecodedImage]) -> tuple[np.ndarray, dict[str, Any]]:
    """Array and meta of one decoded file, or of several concatenated along channels with the first's meta.

    This is MONAI's rule for several files given to one reader (e.g. one file per MRI sequence).

    Raises:
        GeometryError: the files differ in spatial shape, so they cannot be channels of one image.
    """
    items = [decoded] if isinstance(decoded, DecodedImage) else list(decoded)
    first = items[0]
    for item in items[1:]:
        if item.array.shape[1:] != first.array.shape[1:]:
            raise GeometryError(
                f"cannot stack as channels: spatial shape {item.array.shape[1:]} differs from "
                f"{first.array.shape[1:]} of {first.meta['filename_or_obj']}",
                item.meta["filename_or_obj"],
            )
    if len(items) == 1:
        return first.array, dict(first.meta)
    return np.concatenate([item.array for item in items], axis=0), dict(first.meta)


def check_file(path: str | Path) -> Path:
    """The path as a Path, or the medattn error a user should see when it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError("file not found", path)
    if path.is_dir():
        raise UnreadableImageError("is a folder, not an image file", path)
    return path


def _page_channels(path: Path, page: Image.Image, palette_indices: bool) -> np.ndarray:
    """One Pillow page as (H, W, C): grayscale 1 channel, colour 3, alpha dropped, values kept."""
    mode = page.mode
    if mode == "1":
        return np.asarray(page, dtype=np.uint8)[..., None]
    if mode == "P" and palette_indices:
        return np.asarray(page)[..., None]
    if mode in _GRAY_MODES:
        return np.asarray(page)[..., None]
    if mode == "LA":
        return np.asarray(page)[..., :1]
    if mode in ("RGB", "RGBA", "RGBX"):
        return np.asarray(page)[..., :3]
    if mode in _TO_RGB_MODES:
        # Through RGBA so palette transparency is handled the way Pillow recommends, then alpha is dropped.
        return np.asarray(page.convert("RGBA"))[..., :3]
    raise UnreadableImageError(
        f"unsupported Pillow image mode {mode!r}; convert it to RGB or grayscale", path
    )


def _is_reduced_colour_tiff(image: Image.Image) -> bool:
    """A TIFF with more than 8 bits per colour sample, which Pillow would silently cut to 8 bits."""
    if image.format != "TIFF" or image.mode in _GRAY_MODES:
        return False
    bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) > 8


def _is_reduced_colour_png(image: Image.Image) -> bool:
    """A PNG with 16 bits per colour sample; Pillow keeps only the high byte of each."""
    if image.format != "PNG" or not image.tile:
        return False
    rawmode = image.tile[0].args
    rawmode = rawmode[0] if isinstance(rawmode, tuple) else rawmode
    return isinstance(rawmode, str) and rawmode.startswith(("RGB;16", "RGBA;16"))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png_chunks(path: Path) -> None:
    """Refuse a PNG whose chunk lengths run past the end of the file, before Pillow reads them.

    Pillow reads the rest of a damaged image-data chunk in one call, which first allocates the length the
    chunk claims (up to 2 GB) however short the file is. Walking the chunk headers (12 bytes each) up to
    IEND finds a damaged length, or a file cut short, without reading any chunk's data.
    """
    file_bytes = path.stat().st_size
    with path.open("rb") as stream:
        if stream.read(8) != _PNG_SIGNATURE:
            return  # not a PNG after all: Pillow names what it is, or fails to
        position = 8
        while position + 8 <= file_bytes:
            stream.seek(position)
            head = stream.read(8)
            length, kind = int.from_bytes(head[:4], "big"), head[4:].decode("latin-1")
            remaining = file_bytes - position - 12
            what = f"PNG chunk {kind!r} at byte {position}"
            check_claimed_size(length, path, compressed=False, file_bytes=max(remaining, 0), what=what)
            if kind == "IEND":
                return
            position += 12 + length


def _check_pillow_claim(path: Path, image: Image.Image) -> None:
    """Refuse a header whose size, mode and page count claim more than the file or memory can hold.

    Image.open reads only the header, so this runs before any pixel is allocated; every page must then
    match the first page's size and mode (checked before each page is decoded).
    """
    mode = ImageMode.getmode(image.mode)
    pixel_bytes = len(mode.bands) * np.dtype(mode.typestr).itemsize
    pages = getattr(image, "n_frames", 1)
    check_claimed_size(image.width * image.height * pixel_bytes * pages, path, compressed=True)


def _decode_with_pillow(path: Path, palette_indices: bool) -> tuple[list[np.ndarray], dict[str, Any]] | None:
    """Pages as (H, W, C) arrays and Pillow's format/mode; None when tifffile should decode the TIFF."""
    _check_png_chunks(path)
    with warnings.catch_warnings():
        # _check_pillow_claim replaces Pillow's pixel-count alarm: it weighs the claim against the file's size
        # and the memory, so a damaged header is an error and a large valid image reads without a warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        if _is_reduced_colour_tiff(image):
            return None
        if _is_reduced_colour_png(image):
            warnings.warn(
                f"{path}: 16-bit colour PNG read at 8 bits per channel (Pillow keeps the high byte)",
                stacklevel=4,
            )
        _check_pillow_claim(path, image)
        info = {"format": image.format, "mode": image.mode, "width": image.width, "height": image.height}
        orientation = image.getexif().get(EXIF_ORIENTATION)
        if isinstance(orientation, int) and 2 <= orientation <= 8:  # 1: as stored
            info["exif_orientation"] = orientation
        first_size = image.size
        pages = []
        for page in ImageSequence.Iterator(image):  # the same Image object, seeked to each page in turn
            if page.size != first_size or page.mode != info["mode"]:
                raise UnreadableImageError(
                    f"pages differ in size or mode ({page.size} {page.mode} vs {first_size} {info['mode']}); "
                    "only stacks of equal pages read as 2D+t",
                    path,
                )
            page.load()
            pages.append(_page_channels(path, page, palette_indices))
    return pages, info


def _tiff_page_bytes(path: Path, page: Any, file_bytes: int) -> int:
    """What decoding one tifffile page would allocate, from its header, before anything is decoded.

    Its strips or tiles must also lie inside the file: tifffile reads each in one call, which first
    allocates the byte count the header claims. A sample type tifffile cannot name fails to decode later;
    it counts as 8 bytes a sample meanwhile.
    """
    if not all(isinstance(size, (int, np.integer)) for size in page.shape):
        raise UnreadableImageError(
            "the TIFF page header is damaged: a size tag (ImageWidth, ImageLength or SamplesPerPixel) holds "
            "several values",
            path,
        )
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
        if offset + count > file_bytes:
            remaining, what = max(file_bytes - offset, 0), f"TIFF strip or tile data at byte {offset}"
            check_claimed_size(count, path, compressed=False, file_bytes=remaining, what=what)
    return math.prod(page.shape) * (page.dtype.itemsize if page.dtype is not None else 8)


def _decode_with_tifffile(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """TIFF pages as (H, W, C) arrays at full bit depth, for the TIFFs Pillow cannot read or would reduce."""
    import tifffile  # only TIFFs beyond Pillow need it

    pages = []
    with tifffile.TiffFile(path) as tif:
        file_bytes = path.stat().st_size
        claimed = sum(_tiff_page_bytes(path, page, file_bytes) for page in tif.pages)
        check_claimed_size(claimed, path, compressed=True, file_bytes=file_bytes)
        for page in tif.pages:
            array, axes = page.asarray(), page.axes
            if axes == "YX":
                array = array[..., None]
            elif axes == "SYX":
                array = np.moveaxis(array, 0, -1)
            elif axes != "YXS":
                raise UnreadableImageError(
                    f"unsupported TIFF page layout {axes!r} (expected YX, YXS or SYX)", path
                )
            if array.shape[-1] >= 3 and page.photometric != tifffile.PHOTOMETRIC.RGB:
                raise UnreadableImageError(f"unsupported TIFF photometric {page.photometric.name}", path)
            array = array[..., :1] if array.shape[-1] < 3 else array[..., :3]
            pages.append(array.astype(np.uint8) if array.dtype == bool else array)
    if not pages:
        raise UnreadableImageError("TIFF file holds no image pages", path)
    if any(page.shape != pages[0].shape for page in pages):
        raise UnreadableImageError(
            "TIFF pages differ in size or channels; only equal pages read as 2D+t", path
        )
    height, width, channels = pages[0].shape
    return pages, {"format": "TIFF", "mode": f"{pages[0].dtype}x{channels}", "width": width, "height": height}


def decode_image2d(path: str | Path, palette_indices: bool = False) -> DecodedImage:
    """Decode a 2D image file into a channel-first array (C, W, H), or (C, W, H, T) for multi-page files.

    Args:
        path: a PNG, JPEG, TIFF or BMP file.
        palette_indices: keep a palette image's indices as one channel (label masks saved with a palette)
            instead of converting it to RGB.

    Returns:
        The array in the file's own dtype and its meta (see `planar_meta`; also Pillow's format, mode, width
        and height as PILReader records them, and n_frames/time_axis for stacks).

    Raises:
        InputNotFoundError: the file does not exist.
        UnreadableImageError: not an image, truncated or corrupt, or a layout medattn does not read.
    """
    path = check_file(path)
    errors: list[str] = []
    decoded = None
    try:
        decoded = _decode_with_pillow(path, palette_indices)
    except (UnreadableImageError, MemoryError):
        raise
    except Image.DecompressionBombError as err:  # a TIFF this large may still be one tifffile decodes
        errors.append(
            f"the header claims more pixels than Pillow decodes, so it is damaged or too large: {err}"
        )
    except Exception as err:  # Pillow reports corrupt data as OSError, SyntaxError, struct.error, ...
        errors.append(f"{type(err).__name__}: {err}")
    if decoded is None and path.suffix.lower() in (".tif", ".tiff"):
        try:
            decoded = _decode_with_tifffile(path)
        except (UnreadableImageError, MemoryError):
            raise
        except Exception as err:
            errors.append(f"tifffile {type(err).__name__}: {err}")
    if decoded is None:
        raise UnreadableImageError(f"cannot decode as an image ({'; '.join(errors)})", path)

    pages, info = decoded
    # (H, W, C) -> (C, W, H): PILReader's spatial order, channel first.
    planes = [page.transpose(2, 1, 0) for page in pages]
    extra: dict[str, Any] = dict(info)
    if len(planes) == 1:
        array = planes[0]
    else:
        array = np.stack(planes, axis=-1)
        extra.update(n_frames=len(planes), time_axis=3)
    modality = "RGB" if array.shape[0] == 3 else "OT"
    return DecodedImage(np.ascontiguousarray(array), planar_meta(path, array, modality, **extra))


def read_image2d(path: str | Path, palette_indices: bool = False) -> MetaTensor:
    """Read a PNG, JPEG, TIFF or BMP as a float32 MetaTensor (C, W, H) laid out like MONAI's PILReader.

    The same array and meta `LoadImage(reader=Image2DReader())` gives, without LoadImage's reader setup.

    Args:
        path: the image file.
        palette_indices: read a palette image's indices (one channel) instead of its RGB colours.

    Returns:
        (C, W, H) float32, or (C, W, H, T) for a multi-page file; meta as `planar_meta` describes, with
        modality 'RGB' (3 channels) or 'OT' (grayscale).

    Raises:
        InputNotFoundError: the file does not exist.
        UnreadableImageError: not an image, truncated or corrupt.
    """
    decoded = decode_image2d(path, palette_indices)
    return MetaTensor(torch.from_numpy(decoded.array.astype(np.float32)), meta=decoded.meta)
