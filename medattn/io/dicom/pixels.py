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

from medattn.errors import UnreadableImageError, UnsupportedDicomError
from medattn.io.dicom.headers import functional_item, int_tag


def decoded_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Decoded pixel data, colour as RGB; the error names the transfer syntax when no decoder can."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnsupportedDicomError("the DICOM object has no pixel data", path)
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


def rescaled(pixels: np.ndarray, ds: Dataset, frame_items: Sequence[Dataset] | None = None) -> np.ndarray:
    """Apply the modality LUT; enhanced objects carry slope/intercept per frame in functional groups."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return pixels.astype(np.float32)
    if frame_items is None:
        return np.asarray(apply_rescale(pixels, ds), dtype=np.float32)
    out = np.empty(pixels.shape, dtype=np.float32)
    for index, item in enumerate(frame_items):
        transform = functional_item(ds, item, "PixelValueTransformationSequence")
        slope = float(getattr(transform, "RescaleSlope", 1.0) or 1.0) if transform is not None else 1.0
        intercept = (
            float(getattr(transform, "RescaleIntercept", 0.0) or 0.0) if transform is not None else 0.0
        )
        out[index] = pixels[index].astype(np.float32) * slope + intercept
    return out


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
