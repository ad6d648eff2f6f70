"""Which files of a classic DICOM series make its volume: copies of an instance and stray localizers left out.

The reader and the DICOM SEG writer both call `series_slices`, so a SEG's frames are the slices the image
was read from.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medattn.errors import InputWarning
from medattn.io.dicom.geometry import ORIENTATION_TOLERANCE
from medattn.io.dicom.series import is_localizer


def series_slices(
    files: Sequence[Path], headers: list[Dataset], source: Path
) -> tuple[list[Path], list[Dataset]]:
    """The files (and headers) of a classic series that make its volume: copies of one instance and stray
    localizer images left out, with an InputWarning each."""
    files, headers = _without_duplicates(list(files), headers, source)
    return _without_strays(files, headers, source)


def _without_duplicates(
    files: list[Path], headers: list[Dataset], source: Path
) -> tuple[list[Path], list[Dataset]]:
    """The files of a series minus copies of an instance already seen (the same SOPInstanceUID: a file
    copied twice into the folder, or one image saved in several transfer syntaxes); warns naming them."""
    seen: dict[str, Path] = {}
    kept_files, kept_headers, copies = [], [], []
    for path, header in zip(files, headers, strict=True):
        uid = str(header.get("SOPInstanceUID", "")) or None
        if uid is not None and uid in seen:
            copies.append(f"{path.name} (= {seen[uid].name})")
            continue
        if uid is not None:
            seen[uid] = path
        kept_files.append(path)
        kept_headers.append(header)
    if copies:
        warnings.warn(
            f"{source}: {len(copies)} file(s) repeat an image already in the series (same SOPInstanceUID) "
            f"and are left out: {', '.join(copies[:3])}{', ...' if len(copies) > 3 else ''}",
            InputWarning,
            stacklevel=4,
        )
    return kept_files, kept_headers


# At most this many images in another orientation or size inside a series are left out as strays (the
# one to three localizers some scanners put into the series they plan); more is a series to split.
MAX_STRAY_IMAGES = 3


def _same_orientation(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Two ImageOrientationPatient values within the reader's tolerance (two missing ones agree too)."""
    if a is None or b is None:
        return a is None and b is None
    return bool(np.abs(a - b).max() <= ORIENTATION_TOLERANCE)


def _without_strays(
    files: list[Path], headers: list[Dataset], source: Path
) -> tuple[list[Path], list[Dataset]]:
    """A series' slices minus the localizer images inside it and up to `MAX_STRAY_IMAGES` images in another
    orientation or size than the rest (left out with an InputWarning naming them); the series unchanged
    when there is no such clear majority, so that `stack_geometry` names the problem."""
    localizer = [is_localizer(h) for h in headers]
    keep = [not flag for flag in localizer] if any(localizer) and not all(localizer) else [True] * len(files)

    def orientation(header: Dataset) -> np.ndarray | None:
        values = header.get("ImageOrientationPatient")
        try:
            array = np.asarray([float(v) for v in values], dtype=float) if values else None
        except (TypeError, ValueError):
            return None
        return array if array is not None and array.shape == (6,) else None

    # Images share a grid when their orientations agree within the reader's tolerance (rounding them
    # would part two values a hair apart) and their sizes match: each is labelled by the first of its kind.
    kinds: list[tuple[np.ndarray | None, object, object]] = []
    grids = []
    for header in headers:
        mine = (orientation(header), header.get("Rows"), header.get("Columns"))
        for number, kind in enumerate(kinds):
            if _same_orientation(mine[0], kind[0]) and mine[1:] == kind[1:]:
                grids.append(number)
                break
        else:
            kinds.append(mine)
            grids.append(len(kinds) - 1)
    counts: dict[tuple, int] = defaultdict(int)
    for g, kept in zip(grids, keep, strict=True):
        if kept:
            counts[g] += 1
    main_grid, main_count = max(counts.items(), key=lambda item: item[1])
    others = sum(counts.values()) - main_count
    if others and others <= MAX_STRAY_IMAGES and main_count > MAX_STRAY_IMAGES:
        keep = [kept and g == main_grid for g, kept in zip(grids, keep, strict=True)]
    left_out = [f.name for f, kept in zip(files, keep, strict=True) if not kept]
    if not left_out:
        return files, headers
    warnings.warn(
        f"{source}: {len(left_out)} image(s) in another orientation or size than the series' "
        f"{len(files) - len(left_out)} slices (localizers) are left out: {', '.join(left_out[:3])}"
        f"{', ...' if len(left_out) > 3 else ''}",
        InputWarning,
        stacklevel=4,
    )
    kept_pairs = [(f, h) for f, h, kept in zip(files, headers, keep, strict=True) if kept]
    return [f for f, _ in kept_pairs], [h for _, h in kept_pairs]
