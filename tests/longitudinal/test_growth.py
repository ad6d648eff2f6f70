"""Doubling time (log-linear least squares), volumetric categories and their thresholds."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest

from medattn.longitudinal.growth import (
    GROWTH_COLUMNS,
    LESION_COLUMNS,
    GrowthRow,
    LesionRow,
    category,
    doubling_time_days,
    growth_rows,
)


def test_columns_are_the_dataclass_fields():
    assert tuple(f.name for f in fields(LesionRow)) == LESION_COLUMNS
    assert tuple(f.name for f in fields(GrowthRow)) == GROWTH_COLUMNS


def test_doubling_time():
    assert doubling_time_days([0, 100], [1.0, 2.0]) == pytest.approx(100.0)
    assert doubling_time_days([0, 90], [2.0, 3.0]) == pytest.approx(90 * math.log(2) / math.log(1.5))
    days, volumes = [0, 50, 200], [1.0, 1.6, 3.1]
    slope = np.polyfit(days, np.log(volumes), 1)[0]
    assert doubling_time_days(days, volumes) == pytest.approx(math.log(2) / slope)
    assert doubling_time_days([0, 100], [2.0, 1.0]) is None  # not growing
    assert doubling_time_days([0], [1.0]) is None


def test_categories_and_thresholds():
    assert category([1.0, 1.5], vanished=False) == "progression"
    assert category([2.0, 1.0, 1.39], vanished=False) == "stable"  # +39 % from the nadir
    assert category([2.0, 1.0, 1.4], vanished=False) == "progression"  # +40 % from the nadir
    assert category([1.0, 0.35], vanished=False) == "partial response"
    assert category([1.0, 0.36], vanished=False) == "stable"
    assert category([1.0], vanished=True) == "complete response"
    assert category([1.0, 1.3], vanished=False, progression_percent=25) == "progression"
    assert category([1.0, 0.6], vanished=False, response_percent=30) == "partial response"


def test_growth_rows_of_a_vanished_lesion():
    rows = [
        LesionRow(1, "2024-01-01", 0, 2.0, 10, 8, 0, 0, 0, "baseline"),
        LesionRow(1, "2024-04-10", 100, 1.0, 8, 6, 0, 0, 0, "shrinking"),
        LesionRow(1, "2024-07-19", 200, 0.0, None, None, None, None, None, "vanished"),
    ]
    (row,) = growth_rows(rows)
    assert (row.first_date, row.last_date, row.volume_last_ml, row.change_percent) == (
        "2024-01-01",
        "2024-07-19",
        0.0,
        -100.0,
    )
    assert row.growth_ml_per_year == pytest.approx(-2.0 / 200 * 365.25)
    assert row.doubling_time_days is None and row.category == "complete response"
