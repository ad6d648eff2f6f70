"""Lesions of consecutive visits matched in the baseline frame, with ids that stay the same over time.

Each visit's components are carried onto the baseline grid by its registration (nearest neighbour); the
components of two consecutive visits are then matched:

1. by overlap: the one-to-one assignment of most overlap (intersection over union, Hungarian algorithm,
   `scipy.optimize.linear_sum_assignment`) among pairs that share a voxel;
2. by distance, for lesions that overlap nothing on the other side (small lesions a voxel apart, or lost
   in the nearest-neighbour resampling): the one-to-one assignment of shortest centroid distance in the
   baseline frame among pairs closer than `match_distance_mm`. 10 mm by default: ten times the residual of
   the rigid registration (bench/track.py), well under the distance between distinct lesions a reader
   would count apart.

A matched lesion keeps its id. Where one lesion overlaps several on the next visit, it `split`: the
matched piece keeps the id, the others get new ids, all marked split. Where several overlap one, they
`merged`: it keeps the matched id; the others end there (`merged_into`). A lesion with no match is
`vanished` at that visit (and not followed further); a lesion without a predecessor is `new`. Otherwise
the status compares the volume with the previous visit's: `growing` at +`change_percent` or more,
`shrinking` at -`change_percent` or less, `stable` between.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medattn.longitudinal.growth import percent_change

STATUSES = ("baseline", "new", "growing", "stable", "shrinking", "merged", "split", "vanished")
#: Centroids of one lesion on consecutive visits lie closer than this (mm) after registration.
MATCH_DISTANCE_MM = 10.0
#: Volume change (percent of the previous visit's) that makes a lesion growing or shrinking.
CHANGE_PERCENT = 20.0


@dataclass
class VisitLesions:
    """One visit's lesions as matching needs them.

    Attributes:
        on_baseline: the visit's component array carried onto the baseline grid (component k = value k).
        centroids: (N, 3) baseline-frame RAS centroids of components 1..N.
        volumes_ml: each component's volume on the visit's own grid.
    """

    on_baseline: np.ndarray
    centroids: np.ndarray
    volumes_ml: list[float]

    @property
    def count(self) -> int:
        return len(self.volumes_ml)


@dataclass
class Observation:
    """A tracked lesion at one visit: present as `component`, or vanished (`component` None)."""

    lesion: int
    visit: int
    component: int | None
    status: str
    split_from: int | None = None  # split: the lesion this piece came from
    merged_from: list[int] = field(default_factory=list)  # merged: the lesions that joined it here
    merged_into: int | None = None  # set on a lesion's last observation when it joined another


def _overlaps(previous: np.ndarray, current: np.ndarray, n_previous: int, n_current: int) -> np.ndarray:
    """(n_previous + 1, n_current + 1) voxel counts of each pair of component values, row/column 0 unused."""
    both = (previous > 0) & (current > 0)
    pairs = previous[both].astype(np.int64) * (n_current + 1) + current[both].astype(np.int64)
    counts = np.bincount(pairs, minlength=(n_previous + 1) * (n_current + 1))
    return counts.reshape(n_previous + 1, n_current + 1)


def match_visits(previous: VisitLesions, current: VisitLesions, match_distance_mm: float) -> dict[int, int]:
    """current component -> previous component for the lesions that continue (both 1-based)."""
    from scipy.optimize import linear_sum_assignment  # here, so `medattn track --help` stays quick

    overlap = _overlaps(previous.on_baseline, current.on_baseline, previous.count, current.count)[1:, 1:]
    matches: dict[int, int] = {}
    if overlap.any():
        size_previous = np.bincount(previous.on_baseline.ravel(), minlength=previous.count + 1)[1:]
        size_current = np.bincount(current.on_baseline.ravel(), minlength=current.count + 1)[1:]
        union = size_previous[:, None] + size_current[None, :] - overlap
        iou = np.where(overlap > 0, overlap / np.maximum(union, 1), 0.0)
        rows, columns = linear_sum_assignment(-iou)
        matches.update({int(c) + 1: int(r) + 1 for r, c in zip(rows, columns, strict=True) if iou[r, c] > 0})
    lonely_previous = [p for p in range(1, previous.count + 1) if not overlap[p - 1].any()]
    lonely_current = [c for c in range(1, current.count + 1) if not overlap[:, c - 1].any()]
    if lonely_previous and lonely_current:
        a = previous.centroids[np.array(lonely_previous) - 1]
        b = current.centroids[np.array(lonely_current) - 1]
        distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
        rows, columns = linear_sum_assignment(distance)
        for r, c in zip(rows, columns, strict=True):
            if distance[r, c] <= match_distance_mm:
                matches[lonely_current[c]] = lonely_previous[r]
    return matches


def _change_status(volume: float, previous_volume: float, change_percent: float) -> str:
    change = percent_change(volume, previous_volume)
    if change >= change_percent:
        return "growing"
    if change <= -change_percent:
        return "shrinking"
    return "stable"


def track_lesions(
    visits: list[VisitLesions],
    match_distance_mm: float = MATCH_DISTANCE_MM,
    change_percent: float = CHANGE_PERCENT,
) -> list[Observation]:
    """Every tracked lesion at every visit where it is present, and at the visit it vanished.

    Args:
        visits: the visits in date order, the baseline first.
        match_distance_mm: see the module docstring.
        change_percent: see the module docstring.

    Returns:
        Observations in visit order, then lesion id; ids start at 1 with the baseline's largest lesion,
        and a new lesion takes the next free id.
    """
    observations = [Observation(c, 0, c, "baseline") for c in range(1, visits[0].count + 1)]
    ids = {c: c for c in range(1, visits[0].count + 1)}  # component of the previous visit -> lesion id
    next_id = visits[0].count + 1
    for index in range(1, len(visits)):
        previous, current = visits[index - 1], visits[index]
        matches = match_visits(previous, current, match_distance_mm)
        overlap = _overlaps(previous.on_baseline, current.on_baseline, previous.count, current.count)
        current_ids: dict[int, int] = {}
        here: list[Observation] = []
        for component in range(1, current.count + 1):
            parent = matches.get(component)
            touched = [p for p in range(1, previous.count + 1) if overlap[p, component] > 0]
            if parent is None and touched:
                # A piece of a lesion whose main part continues elsewhere: split off with a new id.
                source = max(touched, key=lambda p: overlap[p, component])
                observation = Observation(next_id, index, component, "split", split_from=ids[source])
                next_id += 1
            elif parent is None:
                observation = Observation(next_id, index, component, "new")
                next_id += 1
            else:
                observation = Observation(ids[parent], index, component, "")
                pieces = np.count_nonzero(overlap[parent, 1:])
                joined = [ids[p] for p in touched if p != parent and p not in matches.values()]
                if pieces > 1:
                    observation.status = "split"
                elif joined:
                    observation.status, observation.merged_from = "merged", joined
                else:
                    observation.status = _change_status(
                        current.volumes_ml[component - 1], previous.volumes_ml[parent - 1], change_percent
                    )
            current_ids[component] = observation.lesion
            here.append(observation)
        continued = set(matches.values())
        for component in range(1, previous.count + 1):
            if component in continued:
                continue
            into = [c for c in range(1, current.count + 1) if overlap[component, c] > 0]
            if into:  # joined a lesion that continues another: its last observation says which
                last = next(o for o in reversed(observations) if o.lesion == ids[component])
                last.merged_into = current_ids[max(into, key=lambda c: overlap[component, c])]
            else:
                here.append(Observation(ids[component], index, None, "vanished"))
        observations.extend(sorted(here, key=lambda o: o.lesion))
        ids = current_ids
    return observations
