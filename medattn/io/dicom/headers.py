"""Read DICOM headers leniently: files opened with medattn's errors, integer tags, functional-group items."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medattn.errors import UnreadableImageError


def dcmread(path: Path, pixels: bool = True) -> Dataset:
    """The DICOM file's dataset (without pixel data unless `pixels`); UnreadableImageError names the file."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError as error:
        raise UnreadableImageError("not a DICOM file (no DICM marker and no valid header)", path) from error
    except (OSError, EOFError, ValueError) as error:
        raise UnreadableImageError(f"the DICOM file is truncated or damaged ({error})", path) from error


def int_tag(ds: Dataset, keyword: str, default: int) -> int:
    """An integer attribute read leniently: vendors write junk ('1A', '') where a number belongs."""
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default


def functional_item(ds: Dataset, frame_item: Dataset | None, sequence: str) -> Dataset | None:
    """The item of a functional group for one frame: per-frame first, shared otherwise."""
    for holder in (frame_item, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if holder is not None and sequence in holder and len(holder[sequence].value):
            return holder[sequence].value[0]
    return None
