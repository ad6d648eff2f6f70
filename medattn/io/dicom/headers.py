"""Read DICOM headers leniently: files opened with medattn's errors, integer and decimal tags,
functional-group items."""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from medattn.errors import GeometryError, MedattnError, UnreadableImageError


class _BoundedFile(io.BufferedReader):
    """A file whose `read(n)` never asks for more than the bytes left in it, and that notes where it was
    found cut short.

    pydicom reads an element's value with `read(length)`, and a buffered read allocates `length` bytes
    before it reads: garbage after the data, or a damaged length field, would make a file of a few
    kilobytes allocate gigabytes. Bounded, a value can never be larger than the file. pydicom takes a
    file that ends inside an element's tag or length for a clean end; `cut_at` tells them apart.
    """

    def __init__(self, path: Path):
        super().__init__(io.FileIO(str(path), "rb"))
        self.size = os.fstat(self.fileno()).st_size
        self.cut_at: int | None = None  # where a tag or length was found cut off

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > _SMALL_READ:
            size = min(size, max(0, self.size - self.tell()))
        data = super().read(size)
        if size is not None and 0 < len(data) < size <= _TAG_AND_LENGTH:
            self.cut_at = self.tell() - len(data)
        return data


# Reads up to this size (tags, lengths, short values: most of a header) go straight through.
_SMALL_READ = 1 << 16
_UNDEFINED_LENGTH = 0xFFFFFFFF
# The most pydicom reads for an element's tag, VR and length (explicit VR, 4-byte length).
_TAG_AND_LENGTH = 12


def dcmread(path: Path, pixels: bool = True, specific_tags: Sequence[str] | None = None) -> Dataset:
    """The DICOM file's dataset (without pixel data unless `pixels`; only `specific_tags` if given).

    Every public value is decoded here, so that a damaged element (an unknown value representation, a
    length that does not fit its type, a cut-short sequence) is an UnreadableImageError naming the file,
    not an error from pydicom at the first use of the tag. Private (vendor) elements, which medattn never
    reads, stay undecoded.
    """
    try:
        with _BoundedFile(path) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=not pixels, specific_tags=specific_tags)
            # Bytes after the pixel data (padding, junk some writers leave) are no part of the image.
            image_end = _pixel_data_start(ds)
            # Past the end: an element skipped over (specific_tags) claims more bytes than the file holds.
            if handle.tell() > handle.size or (handle.cut_at is not None and handle.cut_at < image_end):
                raise EOFError(f"the file ends at byte {handle.size}, inside a data element")
            with warnings.catch_warnings():
                # pydicom warns of values that break the standard's format rules (a UID of a wrong form, a
                # string too long) yet read fine: not worth a warning for every tag medattn never uses.
                warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
                _decode_public(ds.file_meta)
                _decode_public(ds, image_end)
    except InvalidDicomError as error:
        raise UnreadableImageError("not a DICOM file (no DICM marker and no valid header)", path) from error
    except EOFError as error:
        raise UnreadableImageError(f"the DICOM file is cut short ({error})", path) from error
    except (OSError, ValueError, struct.error, BytesLengthException, NotImplementedError) as error:
        # NotImplementedError: pydicom's "Unknown Value Representation", a damaged element's type.
        reason = str(error).split(". To replace")[0]
        raise UnreadableImageError(f"the DICOM file is truncated or damaged ({reason})", path) from error
    return ds


def _pixel_data_start(ds: Dataset) -> float:
    """Where the pixel data's value starts in the file (infinity without pixel data)."""
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        start = getattr(ds.get_item(keyword), "value_tell", None) if keyword in ds else None
        if start is not None:
            return start
    return float("inf")


def _decode_public(dataset: Dataset, image_end: float = float("inf")) -> None:
    """Convert every public element of `dataset` (up to the pixel data, at `image_end` in the file) and of
    its sequences' items from bytes to its value; EOFError for an element whose value the file ends before.
    """
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)  # as read, not converted
        if getattr(raw, "value_tell", 0) > image_end:
            continue
        held = len(raw.value) if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) else None
        if held is not None and raw.length != _UNDEFINED_LENGTH and held < raw.length:
            raise EOFError(f"element {tag} claims {raw.length} bytes, the file holds {held} of them")
        if tag.is_private:
            continue
        element = dataset[tag]  # item access converts the raw element
        if element.VR == "SQ":
            for item in element.value:
                _decode_public(item)


def int_tag(ds: Dataset, keyword: str, default: int) -> int:
    """An integer attribute read leniently: vendors write junk ('1A', '') where a number belongs."""
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default


def decimals(
    value: object, keyword: str, count: int, path: Path, error: type[MedattnError] = GeometryError
) -> np.ndarray:
    """A decimal tag as `count` finite floats; `error` (GeometryError: most such tags place the image,
    as ImagePositionPatient and PixelSpacing do) naming the tag when its text is no number, it holds
    another number of values, or one is infinite or NaN."""
    values = [value] if value is None or isinstance(value, (str, bytes, int, float)) else list(value)
    try:
        array = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as cause:
        raise error(f"the {keyword} tag is damaged: {values!r} is not {count} number(s)", path) from cause
    if array.shape != (count,):
        raise error(f"the {keyword} tag is damaged: it holds {array.size} values instead of {count}", path)
    if not np.isfinite(array).all():
        raise error(f"the {keyword} tag is damaged: it holds a non-finite value {values!r}", path)
    return array


def functional_item(ds: Dataset, frame_item: Dataset | None, sequence: str) -> Dataset | None:
    """The item of a functional group for one frame: per-frame first, shared otherwise."""
    for holder in (frame_item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if holder is not None and sequence in holder and len(holder[sequence].value):
            return holder[sequence].value[0]
    return None
