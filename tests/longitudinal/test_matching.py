"""Matching consecutive visits: overlap by the Hungarian algorithm, centroid distance, split, merge, ids."""

from __future__ import annotations

import numpy as np

from medattn.longitudinal.matching import VisitLesions, track_lesions


def _visit(*boxes, shape=(30, 10, 10)):
    """Components from boxes (start, stop along axis 0) in the order given; centroids in voxels = mm."""
    labels = np.zeros(shape, dtype=np.int32)
    centroids, volumes = [], []
    for number, (start, stop) in enumerate(boxes, start=1):
        labels[start:stop, 2:6, 2:6] = number
        centroids.append(((start + stop - 1) / 2, 3.5, 3.5))
        volumes.append(float((stop - start) * 16))
    return VisitLesions(labels, np.array(centroids).reshape(-1, 3), volumes)


def _by_visit(observations):
    return [{(o.lesion, o.status) for o in observations if o.visit == v} for v in range(3)]


def test_split_new_and_vanished():
    observations = track_lesions(
        [_visit((0, 10), (20, 22)), _visit((0, 4), (6, 10), (25, 28)), _visit((0, 4))]
    )
    first, second, third = _by_visit(observations)
    assert first == {(1, "baseline"), (2, "baseline")}
    # Lesion 1 split in two (the piece of most overlap keeps its id); lesion 2 moved 4 voxels without
    # overlap: matched by distance (under 10 mm) and grown by half.
    assert second == {(1, "split"), (3, "split"), (2, "growing")}
    assert next(o for o in observations if o.lesion == 3).split_from == 1
    assert third == {(1, "stable"), (2, "vanished"), (3, "vanished")}


def test_merge_and_far_lesions_are_new():
    observations = track_lesions([_visit((0, 4), (6, 10)), _visit((0, 10), (24, 27))], match_distance_mm=5)
    _, second, _ = _by_visit(observations)
    assert second == {(1, "merged"), (3, "new")}
    merged = next(o for o in observations if o.visit == 1 and o.lesion == 1)
    assert merged.merged_from == [2]
    assert next(o for o in observations if o.lesion == 2).merged_into == 1


def test_change_thresholds():
    shrunk = track_lesions([_visit((0, 10)), _visit((0, 7))], change_percent=20)
    assert {o.status for o in shrunk if o.visit == 1} == {"shrinking"}
    steady = track_lesions([_visit((0, 10)), _visit((0, 7))], change_percent=40)
    assert {o.status for o in steady if o.visit == 1} == {"stable"}
