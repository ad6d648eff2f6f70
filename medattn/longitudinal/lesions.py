"""The lesions of one visit: 26-connected components, each with its volume, centroid and diameters.

Everything is measured on the visit's own grid, without resampling: the volume is the voxel count times
the voxel volume; the centroid is the mean of the voxel centres in world RAS mm (carried to the baseline
frame by the registration); the diameters are RANO/RECIST's, on axial slices: the slices of the scan's
own axis closest to the patient's superior (S) axis. On each slice the lesion is the union of its pixel
squares; its longest diameter is the longest segment between two of their corners (edge to edge, as a
reader measures on screen), and the perpendicular diameter its extent at right angles to that segment in
the slice plane. The slice with the longest diameter is the one reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from medattn.metrics.lesions import connected_components
from medattn.metrics.volume import voxel_volume_ml

#: The corners of a pixel square around its centre, in pixel units.
_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


@dataclass(frozen=True)
class MeasuredLesion:
    """One connected component of a visit's lesion label, measured on that visit's grid.

    Attributes:
        component: its number among the visit's components (1 = largest), as in the component array.
        voxels: voxel count.
        volume_ml: voxels x voxel volume, mL.
        centroid_ras: centre of mass in the visit's world coordinates, RAS mm.
        diameter_mm: longest axial diameter, mm.
        perpendicular_mm: longest diameter perpendicular to it on the same slice, mm.
        axial_slice: the slice (index along `axial_axis`) both diameters were measured on.
    """

    component: int
    voxels: int
    volume_ml: float
    centroid_ras: tuple[float, float, float]
    diameter_mm: float
    perpendicular_mm: float
    axial_slice: int


def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis of a grid closest to the patient's superior-inferior axis (RAS z)."""
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    units = directions / np.linalg.norm(directions, axis=0)
    return int(np.argmax(np.abs(units[2])))


def slice_diameters(pixels: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray) -> tuple[float, float]:
    """(longest, perpendicular) diameter in mm of the pixels (N, 2) of one slice.

    Args:
        pixels: (u, v) indices of the lesion's pixels on the slice.
        axis_u: world vector (mm) of one step along u; axis_v: of one step along v.
    """
    corners = (pixels[:, None, :].astype(np.float64) + _CORNERS[None]).reshape(-1, 2)
    points = corners[:, :1] * axis_u + corners[:, 1:] * axis_v  # (M, 3) in the slice plane
    points = np.unique(np.round(points, 6), axis=0)
    try:
        hull = points[ConvexHull(_plane_coordinates(points, axis_u, axis_v)).vertices]
    except (QhullError, ValueError):  # fewer than three corners off one line cannot make a hull
        hull = points
    gaps = hull[:, None, :] - hull[None, :, :]
    lengths = np.linalg.norm(gaps, axis=-1)
    first, second = np.unravel_index(int(np.argmax(lengths)), lengths.shape)
    longest = float(lengths[first, second])
    direction = gaps[first, second] / longest
    normal = np.cross(axis_u, axis_v)
    across = np.cross(normal / np.linalg.norm(normal), direction)
    projected = points @ across
    return longest, float(projected.max() - projected.min())


def _plane_coordinates(points: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray) -> np.ndarray:
    """Points of a slice plane in an orthonormal 2D basis of that plane (for the convex hull)."""
    first = axis_u / np.linalg.norm(axis_u)
    second = axis_v - (axis_v @ first) * first
    second /= np.linalg.norm(second)
    return np.stack([points @ first, points @ second], axis=1)


def measure_lesions(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, list[MeasuredLesion]]:
    """The lesions of a binary mask on its grid, largest first.

    Args:
        mask: (i, j, k) boolean lesion mask of one visit.
        affine: voxel -> RAS mm affine of its grid.

    Returns:
        (components, lesions): the int32 component array (lesion k has value k, 1 = largest) and each
        lesion's measures.
    """
    affine = np.asarray(affine, dtype=np.float64)
    components, sizes = connected_components(np.asarray(mask, dtype=bool))
    voxel_ml = voxel_volume_ml(affine, 3)
    axis = axial_axis(affine)
    in_plane = [a for a in range(3) if a != axis]
    axis_u, axis_v = affine[:3, in_plane[0]], affine[:3, in_plane[1]]
    lesions = []
    for number, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        inside = components[box] == number
        where = np.nonzero(inside)
        offset = np.array([s.start for s in box], dtype=np.float64)
        index_centre = np.array([w.mean() for w in where]) + offset
        centroid = affine[:3, :3] @ index_centre + affine[:3, 3]
        best = (-1.0, 0.0, 0)
        for position in np.unique(where[axis]):
            on_slice = where[axis] == position
            pixels = np.stack([where[in_plane[0]][on_slice], where[in_plane[1]][on_slice]], axis=1)
            longest, perpendicular = slice_diameters(pixels, axis_u, axis_v)
            if (longest, perpendicular) > best[:2]:
                best = (longest, perpendicular, int(position + offset[axis]))
        lesions.append(
            MeasuredLesion(
                component=number,
                voxels=int(sizes[number - 1]),
                volume_ml=float(sizes[number - 1]) * voxel_ml,
                centroid_ras=tuple(float(v) for v in centroid),
                diameter_mm=best[0],
                perpendicular_mm=best[1],
                axial_slice=best[2],
            )
        )
    return components, lesions
