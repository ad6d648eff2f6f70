"""What `track` writes: lesions.csv, growth.csv, a mask per visit (a segment per lesion), report.json and
report.html; every file atomically, so an interrupted run leaves whole files."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
from monai.data import MetaTensor

from medattn import __version__
from medattn.io import save_mask
from medattn.io.atomic import atomic_path, write_csv_rows
from medattn.io.formats import MASK_FORMATS
from medattn.longitudinal.dates import shown_path
from medattn.longitudinal.growth import GROWTH_COLUMNS, LESION_COLUMNS, GrowthRow, LesionRow, as_dicts
from medattn.longitudinal.lesions import axial_axis
from medattn.longitudinal.matching import Observation
from medattn.longitudinal.pictures import lesion_color, slice_picture, volume_plot
from medattn.longitudinal.report_html import report_html

MASKS = "masks"


def write_masks(out: Path, visits: list, observations: list[Observation], file_format: str) -> dict[str, str]:
    """OUT/masks/<case_id>.<format> per visit, on its own grid: voxel value = lesion id, one segment per
    lesion present, named `lesion N`, in the lesion's colour."""
    written = {}
    for index, visit in enumerate(visits):
        present = {
            o.component: o.lesion for o in observations if o.visit == index and o.component is not None
        }
        lookup = np.zeros(len(visit.lesions) + 1, dtype=np.int64)
        for component, lesion in present.items():
            lookup[component] = lesion
        relabelled = lookup[visit.components]
        mask = MetaTensor(relabelled[None], affine=visit.image.affine)
        table = {lesion: (f"lesion {lesion}", lesion_color(lesion)) for lesion in sorted(present.values())}
        target = out / MASKS / f"{visit.case.id}{MASK_FORMATS[file_format]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        reference = visit.case.images if visit.case.dicom else visit.image
        save_mask(mask, target, reference=reference, labels=table)
        written[visit.case.id] = str(target)
    return written


def _voxel(affine: np.ndarray, point_ras: np.ndarray) -> np.ndarray:
    return (np.linalg.inv(affine) @ np.append(point_ras, 1.0))[:3]


def lesion_pictures(visits: list, observations: list[Observation], rows: list[LesionRow]) -> dict:
    """lesion id -> [(date, status, PNG)] for each of its rows: the axial slice of its diameters with its
    contour; where it vanished, the slice where it was last seen (carried by the registration), no contour."""
    pictures: dict[int, list[tuple[str, str, bytes]]] = {}
    last_seen: dict[int, tuple[np.ndarray, float]] = {}
    for observation, row in zip(observations, rows, strict=True):
        visit = visits[observation.visit]
        image = np.asarray(visit.image[0], dtype=np.float32)
        affine = visit.affine
        if observation.component is None:
            point, diameter = last_seen[observation.lesion]
            centre = _voxel(affine, (visit.registration.matrix_ras() @ np.append(point, 1.0))[:3])
            region = None
        else:
            measured = visit.lesions[observation.component - 1]
            centre = _voxel(affine, np.asarray(measured.centroid_ras))
            centre[axial_axis(affine)] = measured.axial_slice
            region = visit.components == observation.component
            diameter = measured.diameter_mm
            last_seen[observation.lesion] = (
                np.array([row.centroid_x, row.centroid_y, row.centroid_z]),
                diameter,
            )
        png = slice_picture(
            image, affine, region, centre, 0.75 * diameter + 10.0, lesion_color(observation.lesion)
        )
        pictures.setdefault(observation.lesion, []).append((row.date, row.status, png))
    return pictures


def _versions() -> dict:
    import scipy
    import SimpleITK as sitk

    return {
        "medattn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "SimpleITK": sitk.Version.VersionString(),
    }


def write_outputs(
    out: Path,
    visits: list,
    observations: list[Observation],
    rows: list[LesionRow],
    growth: list[GrowthRow],
    settings,
    label: dict,
    seconds: float,
) -> list[dict]:
    """Every output of `track` into `out`; returns report.json's visits."""
    write_csv_rows(out / "lesions.csv", LESION_COLUMNS, as_dicts(rows))
    write_csv_rows(out / "growth.csv", GROWTH_COLUMNS, as_dicts(growth))
    masks = write_masks(out, visits, observations, settings.format)
    summary = []
    for visit in visits:
        registration = visit.registration
        summary.append(
            {
                "case": visit.case.id,
                "scan": str(shown_path(visit.case)),
                "date": visit.date,
                "days": visit.days,
                "date_source": visit.dated.source,
                "lesions": len(visit.lesions),
                "mask": masks[visit.case.id],
                "registration": {
                    "metric": round(registration.metric, 5),
                    "metric_name": "Mattes mutual information (negative; lower is better)",
                    "iterations": registration.iterations,
                    "stop": registration.stop,
                    "seconds": registration.seconds,
                    "baseline_to_visit_ras": np.round(registration.matrix_ras(), 6).tolist(),
                },
            }
        )
    events = [
        {"lesion": o.lesion, "date": visits[o.visit].date, "split_from": o.split_from}
        for o in observations
        if o.split_from is not None
    ] + [
        {"lesion": o.lesion, "date": visits[o.visit].date, "merged_from": o.merged_from}
        for o in observations
        if o.merged_from
    ]
    events += [
        {"lesion": o.lesion, "last_date": visits[o.visit].date, "merged_into": o.merged_into}
        for o in observations
        if o.merged_into is not None
    ]
    report = {
        "visits": summary,
        "lesions": [asdict(row) for row in rows],
        "growth": [asdict(row) for row in growth],
        "events": events,
        "settings": {**asdict(settings), **label},
        "versions": _versions(),
        "seconds": round(seconds, 3),
    }
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    colors = {g.lesion: lesion_color(g.lesion) for g in growth}
    plots = {}
    for g in growth:
        own = [r for r in rows if r.lesion == g.lesion]
        plots[g.lesion] = volume_plot(
            [r.days for r in own], [r.volume_ml for r in own], [r.date for r in own], colors[g.lesion]
        )
    page = report_html(report, colors, plots, lesion_pictures(visits, observations, rows))
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return summary
