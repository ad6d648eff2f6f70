"""Decode DICOM pixel data into values a model can use: colour as RGB, MONOCHROME1 inverted, modality LUT.

Pixel data is decoded by pydicom's plugins (pylibjpeg for JPEG, JPEG-LS, JPEG 2000 and RLE). Rescale
slope/intercept apply per slice, or per frame from an enhanced object's functional groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_rescale
from pydicom.uid import UID

from medattn.errors import UnreadableImageError, UnsupportedDicomError
from medattn.io.dicom.headers import decimals, functional_item, int_tag
from medattn.io.limits import check_claimed_size


def decoded_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Decoded pixel data, colour as RGB; the error names the transfer syntax when no decoder can."""
    keywords = [k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds]
    if not keywords:
        raise UnsupportedDicomError("the DICOM object has no pixel data", path)
    if not ds[keywords[0]].value:
        raise UnreadableImageError("the pixel data element is empty: the file is damaged or cut short", path)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and not isinstance(syntax, UID):
        raise UnreadableImageError(f"the TransferSyntaxUID tag is damaged ({syntax!r})", path)
    check_pixel_claim(ds, path)
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as error:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "exceptions were raised by all available plugins" in reason:
            reason = "every installed decoder failed: the pixel data is damaged or an unsupported variant"
            advice = "re-export the series uncompressed (e.g. gdcmconv --raw)"
        else:
            advice = (
                "install the decoders (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
                "pylibjpeg-rle) or re-export the series uncompressed (e.g. gdcmconv --raw)"
            )
        raise UnsupportedDicomError(
            f"cannot decode transfer syntax {name} ({reason}); {advice}", path
        ) from error
    except (ValueError, AttributeError, KeyError, EOFError) as error:
        raise UnreadableImageError(f"the pixel data is truncated or inconsistent ({error})", path) from error
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    return pixels


def check_pixel_claim(ds: Dataset, path: Path) -> None:
    """Refuse pixel data whose header claims more than the file can hold (Rows x Columns x frames x
    samples x BitsAllocated; uncompressed it must fit in the file, compressed it may expand up to
    `MAX_COMPRESSION_RATIO`), before decoding allocates it: a damaged Rows or NumberOfFrames would make
    a small file allocate gigabytes."""
    values = 1
    for keyword, default in (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1), ("SamplesPerPixel", 1)):
        values *= int_tag(ds, keyword, default)
    stored_bits = values * int_tag(ds, "BitsAllocated", 8)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    # Deflated data is compressed too; an unknown or damaged syntax gets the looser bound (and no decoder).
    native = (
        isinstance(syntax, UID)
        and syntax.is_transfer_syntax
        and not (syntax.is_compressed or syntax.is_deflated)
    )
    if native and ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        stored_bits = stored_bits // 3 * 2  # two chroma samples shared by two pixels
    check_claimed_size((stored_bits + 7) // 8, path, compressed=not native, what="pixel data")


def rescaled(
    pixels: np.ndarray, ds: Dataset, path: Path, frame_items: Sequence[Dataset] | None = None
) -> np.ndarray:
    """Apply the modality LUT; enhanced objects carry slope/intercept per frame in functional groups."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return pixels.astype(np.float32)
    if frame_items is None:
        if ds.get("ModalityLUTSequence"):
            return np.asarray(apply_rescale(pixels, ds), dtype=np.float32)
        if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:  # the standard's rule: both or none
            return pixels.astype(np.float32)
        slope, intercept = _rescale_of(ds, path)
        return (pixels.astype(np.float64) * slope + intercept).astype(np.float32)
    out = np.empty(pixels.shape, dtype=np.float32)
    for index, item in enumerate(frame_items):
        slope, intercept = _rescale_of(functional_item(ds, item, "PixelValueTransformationSequence"), path)
        out[index] = pixels[index].astype(np.float32) * slope + intercept
    return out


def _rescale_of(holder: Dataset | None, path: Path) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (1 and 0 where absent, empty or a zero slope); UnreadableImageError
    naming the tag when one is damaged."""
    slope, intercept = 1.0, 0.0
    if holder is not None:
        if getattr(holder, "RescaleSlope", None) not in (None, ""):
            slope = float(decimals(holder.RescaleSlope, "RescaleSlope", 1, path, UnreadableImageError)[0])
        if getattr(holder, "RescaleIntercept", None) not in (None, ""):
            intercept = float(
                decimals(holder.RescaleIntercept, "RescaleIntercept", 1, path, UnreadableImageError)[0]
            )
    return slope or 1.0, intercept


def monochrome1_inverted(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """MONOCHROME1 shows low values bright; invert the stored values against their bit depth (before the
    modality LUT) so every image means the same: bright = dense, independent of the image's content."""
    if ds.get("PhotometricInterpretation") != "MONOCHROME1":
        return stored
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -stored.astype(np.int64) - 1  # two's complement bit flip of signed values
    return (1 << int_tag(ds, "BitsStored", 16)) - 1 - stored.astype(np.int64)


def channel_first(stack: np.ndarray, samples_per_pixel: int) -> np.ndarray:
    """(frames, rows, cols[, samples]) -> (C, cols, rows, frames): axis i runs along columns as in ITK."""
    if samples_per_pixel == 1 and stack.ndim == 3:
        stack = stack[..., None]
    return np.ascontiguousarray(np.transpose(stack, (3, 2, 1, 0)))
