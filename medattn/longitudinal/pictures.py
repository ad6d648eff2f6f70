"""Pictures of a follow-up report: each lesion's colour, its axial slice with its contour, its volume plot.

A lesion has one colour everywhere (the segment in the masks, the contour, the plot): the Tableau 10
palette by lesion id, colours told apart also on a grey MRI. Slices are shown as radiologists read axial
images: the patient's right on the viewer's left, anterior at the top, square millimetres.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from medattn.io.label_table import Label
from medattn.io.overlay import display_rgb, draw_contours
from medattn.longitudinal.lesions import axial_axis

LESION_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
#: The longest side of a slice picture, pixels.
PICTURE_PIXELS = 200
#: Half-width of the field shown around a lesion: at least this, mm.
MIN_HALF_FIELD_MM = 20.0


def lesion_color(lesion: int) -> tuple[int, int, int]:
    """The colour of lesion `lesion` (1-based id), the same at every visit and in every output."""
    return LESION_PALETTE[(lesion - 1) % len(LESION_PALETTE)]


def png_bytes(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 picture as PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _display_axes(affine: np.ndarray, axis: int) -> tuple[int, int, bool, bool]:
    """(horizontal axis, vertical axis, flip horizontal, flip vertical) for a radiological axial view."""
    in_plane = [a for a in range(3) if a != axis]
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    horizontal = max(in_plane, key=lambda a: abs(directions[0, a]) / np.linalg.norm(directions[:, a]))
    vertical = in_plane[0] if horizontal == in_plane[1] else in_plane[1]
    # Screen x runs to the patient's left (-R), screen y to posterior (-A).
    return horizontal, vertical, directions[0, horizontal] > 0, directions[1, vertical] > 0


def slice_picture(
    image: np.ndarray,
    affine: np.ndarray,
    region: np.ndarray | None,
    centre_voxel: np.ndarray,
    half_field_mm: float,
    color: tuple[int, int, int],
) -> bytes:
    """PNG of the axial slice through `centre_voxel`, cropped around it, with `region`'s contour drawn.

    Args:
        image: (i, j, k) scan intensities.
        affine: its voxel -> RAS mm affine.
        region: (i, j, k) boolean lesion mask on the same grid, or None (a vanished lesion: no contour).
        centre_voxel: (i, j, k) voxel the picture is centred on; its axial index picks the slice.
        half_field_mm: half the width of the field shown, mm (at least MIN_HALF_FIELD_MM).
        color: the contour's colour.
    """
    affine = np.asarray(affine, dtype=np.float64)
    axis = axial_axis(affine)
    horizontal, vertical, flip_h, flip_v = _display_axes(affine, axis)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    position = int(np.clip(round(float(centre_voxel[axis])), 0, image.shape[axis] - 1))
    plane = np.take(image, position, axis=axis).astype(np.float32)
    labels = np.zeros(plane.shape, dtype=np.uint8)
    if region is not None:
        labels = np.take(region, position, axis=axis).astype(np.uint8)
    if horizontal > vertical:  # the 2D plane's axes in (horizontal, vertical) order
        plane, labels = plane.T, labels.T
    half = max(half_field_mm, MIN_HALF_FIELD_MM)
    box = []
    for dim, axis_index in ((0, horizontal), (1, vertical)):
        centre = float(centre_voxel[axis_index])
        reach = int(np.ceil(half / spacing[axis_index]))
        box.append(
            slice(max(0, int(round(centre)) - reach), min(plane.shape[dim], int(round(centre)) + reach + 1))
        )
    low, high = np.percentile(plane, [1, 99]) if plane.size else (0.0, 1.0)
    windowed = np.clip((plane[tuple(box)] - low) / max(high - low, 1e-6), 0, 1) * 255.0
    rgb = display_rgb(np.round(windowed)[None], windowed.shape)
    drawn = draw_contours(rgb, labels[tuple(box)], [Label(1, "lesion", color, True, True)])  # (H, W, 3)
    if flip_h:
        drawn = drawn[:, ::-1]
    if flip_v:
        drawn = drawn[::-1]
    height_mm, width_mm = drawn.shape[0] * spacing[vertical], drawn.shape[1] * spacing[horizontal]
    scale = PICTURE_PIXELS / max(height_mm, width_mm, 1e-6)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    return png_bytes(np.asarray(Image.fromarray(np.ascontiguousarray(drawn)).resize(size, Image.NEAREST)))


def volume_plot(
    days: list[int], volumes_ml: list[float], dates: list[str], color: tuple[int, int, int]
) -> bytes:
    """PNG of a lesion's volume (mL) at each visit against time, labelled with the visits' dates."""
    from matplotlib.figure import Figure  # a Figure, not pyplot: no GUI backend, no global state

    figure = Figure(figsize=(3.6, 2.4), dpi=90)
    axes = figure.add_subplot()
    axes.plot(days, volumes_ml, marker="o", color=np.array(color) / 255.0)
    axes.set_xticks(days)
    axes.set_xticklabels(dates, rotation=30, ha="right", fontsize=7)
    axes.set_ylabel("volume (mL)", fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    axes.set_ylim(0, max(max(volumes_ml), 1e-3) * 1.15)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
