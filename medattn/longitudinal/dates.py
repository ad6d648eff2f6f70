"""The date of each visit, and the checks that a set of scans is one patient's follow-up.

A visit's date comes, in this order, from `--dates` (given in the order the cases are found), from the
DICOM header (StudyDate, then SeriesDate, then AcquisitionDate), or from an ISO date in the file or folder
name (``2024-01-10`` or ``20240110``, the file's name first, then its folders from the nearest up). Every
problem is found before any work: a scan without a date, two scans on one date, a single scan, DICOM
scans of different patients (named by their files, never by the patient ID).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medattn.errors import ConfigError, MedattnError

if TYPE_CHECKING:  # the CLI parses --dates before anything heavy (discovery pulls in MONAI and torch)
    from medattn.io.discovery import Case

#: DICOM tags holding a visit's date, in the order tried.
DICOM_DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate")
#: An ISO date in a name, with or without dashes, not part of a longer number.
_NAME_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
#: Folders above a scan searched for a date in their name.
NAME_LEVELS = 3


@dataclass(frozen=True)
class VisitDate:
    """A case's date and where it was read from: 'dates option', 'DICOM StudyDate', 'file name'..."""

    case: Case
    date: datetime.date
    source: str


def date_in_name(text: str) -> datetime.date | None:
    """The first real calendar date written ``YYYY-MM-DD`` or ``YYYYMMDD`` in `text`, else None."""
    for match in _NAME_DATE.finditer(text):
        try:
            found = datetime.date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            continue
        if 1900 <= found.year <= 2200:
            return found
    return None


def parse_date(text: str) -> datetime.date:
    """A date typed by the user, ``YYYY-MM-DD`` or ``YYYYMMDD``; ValueError otherwise."""
    text = text.strip()
    found = date_in_name(text)
    if found is None or _NAME_DATE.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a date; write YYYY-MM-DD or YYYYMMDD")
    return found


def parse_dates(text: str) -> list[str]:
    """The value of `--dates`: comma-separated dates, kept as ISO text (checked by `parse_date`)."""
    return [parse_date(part).isoformat() for part in str(text).split(",") if part.strip()]


def _dicom_header(case: Case):
    from medattn.io.dicom.headers import dcmread

    return dcmread(case.images[0], pixels=False, specific_tags=[*DICOM_DATE_TAGS, "PatientID"])


def _dicom_date(case: Case) -> tuple[datetime.date, str] | None:
    header = _dicom_header(case)
    for tag in DICOM_DATE_TAGS:
        value = str(header.get(tag, "") or "").strip()
        if value:
            try:
                return datetime.datetime.strptime(value[:8], "%Y%m%d").date(), f"DICOM {tag}"
            except ValueError:
                continue
    return None


def _name_date(case: Case) -> tuple[datetime.date, str] | None:
    path = case.images[0]
    candidates = [(path.name, "file name")] if not case.dicom else []
    for level, folder in enumerate(path.parents):
        if level >= NAME_LEVELS:
            break
        candidates.append((folder.name, "folder name"))
    for name, source in candidates:
        found = date_in_name(name)
        if found is not None:
            return found, source
    return None


def _shown(case: Case) -> str:
    """How a case is named in errors: its id and its file (the series folder for DICOM)."""
    return f"{case.id} ({shown_path(case)})"


def visit_dates(cases: list[Case], dates: list[str] | None = None) -> list[VisitDate]:
    """Each case's date, sorted by date (the first is the baseline), every visit checked first.

    Args:
        cases: the scans, in the order they were found (the order `medattn info` lists them).
        dates: ISO dates given by the user, one per case in that order; they replace what the files say.

    Raises:
        ConfigError: fewer than two scans, a count of `dates` that is not the number of scans, a scan with
            no date, two scans on one date, DICOM scans whose PatientID differ.
    """
    if len(cases) < 2:
        found = ", ".join(_shown(case) for case in cases) or "nothing"
        raise ConfigError(f"track needs a patient's scans at two or more dates; found one scan: {found}")
    if dates is not None and len(dates) != len(cases):
        listed = ", ".join(case.id for case in cases)
        raise ConfigError(
            f"--dates gives {len(dates)} date(s) for {len(cases)} scans; give one per scan, in this order: "
            f"{listed}"
        )
    _check_one_patient(cases)
    visits = []
    for index, case in enumerate(cases):
        if dates is not None:
            visits.append(VisitDate(case, parse_date(dates[index]), "dates option"))
            continue
        found = (_dicom_date(case) if case.dicom else None) or _name_date(case)
        if found is None:
            raise ConfigError(
                f"no date for the scan {_shown(case)}: no StudyDate/SeriesDate/AcquisitionDate in DICOM and "
                "no YYYY-MM-DD or YYYYMMDD in its file or folder name; give every date with "
                "--dates D1,D2,... in the order `medattn info` lists the scans"
            )
        visits.append(VisitDate(case, *found))
    by_date: dict[datetime.date, list[VisitDate]] = {}
    for visit in visits:
        by_date.setdefault(visit.date, []).append(visit)
    for date, same in by_date.items():
        if len(same) > 1:
            names = " and ".join(_shown(visit.case) for visit in same)
            raise ConfigError(
                f"two scans on one date ({date.isoformat()}): {names}; track compares one scan per date: "
                "keep one, or give the right dates with --dates"
            )
    return sorted(visits, key=lambda visit: visit.date)


def _check_one_patient(cases: list[Case]) -> None:
    """ConfigError when DICOM scans carry different PatientIDs; the files are named, the IDs never."""
    first: tuple[Case, str] | None = None
    for case in cases:
        if not case.dicom:
            continue
        try:
            patient = str(_dicom_header(case).get("PatientID", "") or "").strip()
        except MedattnError:
            continue  # an unreadable header is reported when the scan is read
        if not patient:
            continue
        if first is None:
            first = (case, patient)
        elif patient != first[1]:
            raise ConfigError(
                f"the scans {_shown(first[0])} and {_shown(case)} belong to different patients (their DICOM "
                "PatientID differ); track follows one patient: give only that patient's scans"
            )


def days_between(start: datetime.date, end: datetime.date) -> int:
    """Whole days from `start` to `end`."""
    return (end - start).days


def shown_path(case: Case) -> Path:
    """The file (or DICOM series folder) a case stands for, as the report names it."""
    return case.images[0].parent if case.dicom else case.images[0]
