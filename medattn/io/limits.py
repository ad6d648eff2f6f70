"""Allocation guard for every reader: what a header claims is checked against what the file can hold
and against the machine's memory before anything of that size is allocated.

A damaged header (a flipped byte in a dimension, an absurd frame count) can claim gigabytes in a file of a
few kilobytes; decoding it would end in a MemoryError, or an OOM kill that loses the whole batch. Readers
call `check_claimed_size` with the header's claim as soon as they know it.
"""

from __future__ import annotations

import os
from pathlib import Path

from medattn.errors import UnreadableImageError

#: The most a compressed stream can expand: deflate (gzip, zlib, PNG) tops out near 1032:1; the codecs of
#: DICOM, TIFF and video compress less except on constant images, which RLE and JPEG-LS can squeeze more.
MAX_COMPRESSION_RATIO = 2048
#: Share of the machine's physical memory one decoded image may take.
MEMORY_SHARE = 0.5


def physical_memory_bytes() -> int:
    """The machine's physical memory (bytes); a large number where the platform does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_claimed_size(
    claimed_bytes: int,
    path: str | Path,
    *,
    compressed: bool,
    file_bytes: int | None = None,
    what: str = "image",
) -> None:
    """Refuse a header's claim before allocating it.

    Args:
        claimed_bytes: what decoding would allocate, from the header (shape x bytes per value).
        path: the file, named in the error.
        compressed: whether the data is stored compressed (then it may expand up to
            `MAX_COMPRESSION_RATIO`); uncompressed data must fit in the file.
        file_bytes: the bytes that hold the data (default: the file's size).
        what: what is claimed, for the message ("image", "frames", "pixel data").

    Raises:
        UnreadableImageError: the claim is negative, exceeds what the file can hold, or exceeds
            `MEMORY_SHARE` of physical memory.
    """
    path = Path(path)
    if file_bytes is None:
        file_bytes = path.stat().st_size if path.is_file() else 0
    limit = file_bytes * MAX_COMPRESSION_RATIO if compressed else file_bytes
    memory = int(physical_memory_bytes() * MEMORY_SHARE)
    if claimed_bytes < 0 or claimed_bytes > max(limit, 0):
        raise UnreadableImageError(
            f"the header claims {_size(claimed_bytes)} of {what}, more than the {_size(file_bytes)} file can "
            "hold: the header is damaged or the file is cut short",
            path,
        )
    if claimed_bytes > memory:
        raise UnreadableImageError(
            f"the header claims {_size(claimed_bytes)} of {what}, more than half this machine's memory "
            f"({_size(memory * 2)}): refused rather than run out of memory",
            path,
        )


def _size(count: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(count) >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
