"""Label values, names and colours of a written mask: the user's table completed with Slicer-like defaults."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medattn.errors import WriteError

# The first distinct entries of 3D Slicer's GenericAnatomyColors table (tissue, bone, skin, connective
# tissue, blood, organ, mass, muscle, foreign object, waste, teeth, fat, grey matter, white matter,
# nerve, vein): the colours Slicer users already associate with label 1, 2, 3...
GENERIC_ANATOMY_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 174, 128),
    (241, 214, 145),
    (177, 122, 101),
    (111, 184, 210),
    (216, 101, 79),
    (221, 130, 101),
    (144, 238, 144),
    (192, 104, 88),
    (220, 245, 20),
    (78, 63, 0),
    (255, 250, 220),
    (230, 220, 70),
    (200, 200, 235),
    (250, 250, 210),
    (244, 214, 49),
    (0, 151, 206),
)

RGB = tuple[int, int, int]
# value -> name, or value -> (name, (r, g, b)) with 0-255 ints; keys may be JSON strings ("1").
LabelSpec = Mapping[int | str, str | tuple[str, RGB] | tuple[str, None]]


@dataclass(frozen=True)
class Label:
    """One label of a mask as written: its voxel value, display name and colour (0-255 RGB)."""

    value: int
    name: str
    color: RGB
    name_given: bool  # False: the default name `label_<value>`
    color_given: bool  # False: the default palette colour

    @property
    def color_unit(self) -> tuple[float, float, float]:
        """The colour as three floats in [0, 1], as Slicer stores it."""
        return tuple(c / 255.0 for c in self.color)  # type: ignore[return-value]


def default_color(value: int) -> RGB:
    """Palette colour of a label value; by value, so a label keeps its colour whatever else is present."""
    return GENERIC_ANATOMY_PALETTE[(value - 1) % len(GENERIC_ANATOMY_PALETTE)]


def label_table(
    labels: LabelSpec | None, present: Iterable[int], path: str | Path | None = None
) -> list[Label]:
    """Every label to write, sorted by value: those named in `labels` and those present in the mask.

    Labels named but absent from the mask still get an entry (an empty segment), labels present but not
    named get `label_<value>` and a palette colour. Value 0 is background and never a label.

    Args:
        labels: value -> name or value -> (name, (r, g, b)) with 0-255 ints; None for all defaults.
        present: label values found in the mask.
        path: the output file, named in errors.

    Raises:
        WriteError: a value is not a positive integer, a name is empty or multi-line, a colour is not
            three 0-255 integers.
    """
    given: dict[int, tuple[str | None, RGB | None]] = {}
    for key, entry in (labels or {}).items():
        value = _label_value(key, path)
        if value == 0:
            continue
        name, color = (entry, None) if isinstance(entry, str) else _name_and_color(value, entry, path)
        given[value] = (_checked_name(value, name, path) if name is not None else None, color)
    table = []
    for value in sorted(set(given) | {int(v) for v in present if int(v) != 0}):
        name, color = given.get(value, (None, None))
        table.append(
            Label(
                value=value,
                name=name if name is not None else f"label_{value}",
                color=color if color is not None else default_color(value),
                name_given=name is not None,
                color_given=color is not None,
            )
        )
    return table


def _label_value(key: int | str, path: str | Path | None) -> int:
    try:
        value = int(key)
    except (TypeError, ValueError):
        value = -1
    if value < 0 or (isinstance(key, float) and not float(key).is_integer()):
        raise WriteError(f"label values must be non-negative integers, got {key!r} in labels", path)
    return value


def _name_and_color(value: int, entry: object, path: str | Path | None) -> tuple[str | None, RGB | None]:
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        raise WriteError(f"labels[{value}] must be a name or (name, (r, g, b)), got {entry!r}", path)
    name, color = entry
    if color is None:
        return name, None
    if (
        not isinstance(color, (tuple, list, np.ndarray))
        or len(color) != 3
        or not all(isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in color)
    ):
        raise WriteError(f"labels[{value}] colour must be three integers 0-255, got {color!r}", path)
    return name, (int(color[0]), int(color[1]), int(color[2]))


def _checked_name(value: int, name: object, path: str | Path | None) -> str:
    if not isinstance(name, str) or not name.strip():
        raise WriteError(f"labels[{value}] needs a non-empty name, got {name!r}", path)
    if any(ch in name for ch in "\r\n\t") or not name.isprintable():
        raise WriteError(f"labels[{value}] name {name!r} must be one line of printable text", path)
    return name.strip()


def as_label_array(array: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Integer label values in the smallest unsigned type that holds them (uint8, uint16 or uint32).

    Raises:
        WriteError: negative or fractional values (probabilities or logits instead of labels).
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.size == 0:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer) and (
        not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array))
    ):
        raise WriteError(
            "the mask holds fractional values; pass integer labels (e.g. argmax of the probabilities)",
            path,
        )
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise WriteError(f"the mask holds negative label values (down to {low}); labels start at 0", path)
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    raise WriteError(f"label value {high} is too large for a label map", path)


def present_values(array: np.ndarray) -> list[int]:
    """Label values found in a mask, background excluded."""
    if array.dtype == np.uint8:
        # torch counts uint8 in place, ~20x faster than np.unique (sorts) or np.bincount (casts to int64).
        counts = torch.bincount(torch.from_numpy(np.ascontiguousarray(array).reshape(-1)), minlength=1)
        return [int(v) for v in torch.nonzero(counts).flatten().tolist() if v != 0]
    return [int(v) for v in np.unique(array) if v != 0]
