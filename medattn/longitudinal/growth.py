"""Rows of lesions.csv and growth.csv: each lesion at each visit, and its growth over the follow-up.

Growth of a lesion, over the visits where it is present:
- doubling time: ln 2 / k, where k is the least-squares slope of ln(volume) against days (for two visits,
  Δt·ln 2 / ln(V2/V1)); empty when the lesion does not grow (k <= 0) or is seen once;
- growth rate: (last volume - first volume) / days between them x 365.25, mL per year;
- category, by volumetric criteria (thresholds are options): `complete response` when it vanished,
  `progression` when its last volume is `progression_percent` (40 %) or more above its smallest,
  `partial response` when it is `response_percent` (65 %) or more below its first, otherwise `stable`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

LESION_COLUMNS = (
    "lesion",
    "date",
    "days",
    "volume_ml",
    "diameter_mm",
    "perpendicular_mm",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "status",
)
GROWTH_COLUMNS = (
    "lesion",
    "first_date",
    "last_date",
    "volume_first_ml",
    "volume_last_ml",
    "change_ml",
    "change_percent",
    "growth_ml_per_year",
    "doubling_time_days",
    "category",
)
CATEGORIES = ("progression", "partial response", "complete response", "stable")
PROGRESSION_PERCENT = 40.0
RESPONSE_PERCENT = 65.0
DAYS_PER_YEAR = 365.25
#: Decimals kept: volumes to the microlitre's thousandth (a voxel of 0.1 mm^3 stays exact), lengths to
#: the hundredth of a mm.
VOLUME_DECIMALS = 6
LENGTH_DECIMALS = 2
_ROUNDING = 1e-9


@dataclass(frozen=True)
class LesionRow:
    """A lesion at one visit (a row of lesions.csv); a vanished lesion has volume 0 and no measures.

    Attributes:
        lesion: the lesion's id, the same at every visit.
        date: the visit's date, YYYY-MM-DD.
        days: days since the baseline.
        volume_ml: on the visit's own grid, mL.
        diameter_mm, perpendicular_mm: longest axial diameter and the longest one perpendicular to it.
        centroid_x, centroid_y, centroid_z: centre of mass in the baseline's world coordinates, RAS mm.
        status: baseline, new, growing, stable, shrinking, merged, split or vanished.
    """

    lesion: int
    date: str
    days: int
    volume_ml: float
    diameter_mm: float | None
    perpendicular_mm: float | None
    centroid_x: float | None
    centroid_y: float | None
    centroid_z: float | None
    status: str


@dataclass(frozen=True)
class GrowthRow:
    """A lesion over the follow-up (a row of growth.csv); see the module docstring for each measure.

    Attributes:
        change_percent: relative to the first volume.
        growth_ml_per_year: None when the lesion was seen at one visit only.
        doubling_time_days: None when the lesion does not grow.
    """

    lesion: int
    first_date: str
    last_date: str
    volume_first_ml: float
    volume_last_ml: float
    change_ml: float
    change_percent: float
    growth_ml_per_year: float | None
    doubling_time_days: float | None
    category: str


def percent_change(volume_ml: float, reference_ml: float) -> float:
    """The change from `reference_ml` to `volume_ml` in percent of the reference (0 for a 0 reference),
    nudged by a rounding margin so that a threshold met exactly counts whatever the float arithmetic."""
    if reference_ml <= 0:
        return 0.0
    change = (volume_ml - reference_ml) / reference_ml * 100.0
    return change + _ROUNDING if change >= 0 else change - _ROUNDING


def doubling_time_days(days: list[float], volumes_ml: list[float]) -> float | None:
    """ln 2 over the least-squares slope of ln(volume) against days; None when it is not positive."""
    if len(days) < 2 or len(set(days)) < 2 or min(volumes_ml) <= 0:
        return None
    slope = float(np.polyfit(np.asarray(days, dtype=np.float64), np.log(volumes_ml), 1)[0])
    return math.log(2.0) / slope if slope > 0 else None


def category(
    volumes_ml: list[float],
    vanished: bool,
    progression_percent: float = PROGRESSION_PERCENT,
    response_percent: float = RESPONSE_PERCENT,
) -> str:
    """The volumetric category of a lesion from its volumes at the visits where it is present."""
    if vanished:
        return "complete response"
    first, last, smallest = volumes_ml[0], volumes_ml[-1], min(volumes_ml)
    if percent_change(last, smallest) >= progression_percent:
        return "progression"
    if percent_change(last, first) <= -response_percent:
        return "partial response"
    return "stable"


def growth_rows(
    rows: list[LesionRow],
    progression_percent: float = PROGRESSION_PERCENT,
    response_percent: float = RESPONSE_PERCENT,
) -> list[GrowthRow]:
    """One GrowthRow per lesion of `rows` (lesions.csv's rows, in date order), by lesion id."""
    result = []
    for lesion in sorted({row.lesion for row in rows}):
        own = [row for row in rows if row.lesion == lesion]
        present = [row for row in own if row.status != "vanished"]
        vanished = own[-1].status == "vanished"
        first, last = own[0], own[-1]
        volumes = [row.volume_ml for row in present]
        change = last.volume_ml - first.volume_ml
        span = last.days - first.days
        doubling = doubling_time_days([row.days for row in present], volumes)
        result.append(
            GrowthRow(
                lesion=lesion,
                first_date=first.date,
                last_date=last.date,
                volume_first_ml=first.volume_ml,
                volume_last_ml=last.volume_ml,
                change_ml=round(change, VOLUME_DECIMALS),
                change_percent=round(change / first.volume_ml * 100.0, 2) if first.volume_ml > 0 else 0.0,
                growth_ml_per_year=round(change / span * DAYS_PER_YEAR, VOLUME_DECIMALS) if span else None,
                doubling_time_days=round(doubling, 1) if doubling is not None else None,
                category=category(volumes, vanished, progression_percent, response_percent),
            )
        )
    return result


def as_dicts(rows: list) -> list[dict]:
    """Rows (LesionRow or GrowthRow) as dicts in column order; None as an empty CSV cell."""
    return [
        {f.name: ("" if getattr(row, f.name) is None else getattr(row, f.name)) for f in fields(row)}
        for row in rows
    ]
