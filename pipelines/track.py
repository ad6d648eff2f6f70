"""Follow one patient's lesions over time: segment (or read) every visit, register, match, measure, report.

Steps, every check before the first of them: find the scans as `predict` finds cases, date them
(`medattn.longitudinal.dates`), find their masks (`--masks`) or the package's lesion label (`--model`);
then segment every visit through `medattn.pipelines.predict` (into OUT/segmentations), register every
visit rigidly to the baseline (`registration`), take the lesions as 26-connected components of the label
and measure them on each visit's own grid (`lesions`), match them across consecutive visits in the
baseline frame (`matching`), and write lesions.csv, growth.csv (`growth`), a mask per visit with a
segment per lesion, report.json and report.html (`medattn.pipelines.track_report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from monai.data import MetaTensor

from medattn.errors import ConfigError, InputNotFoundError, MedattnError
from medattn.io.discovery import Case, discover
from medattn.io.formats import FORMATS
from medattn.longitudinal.dates import VisitDate, visit_dates
from medattn.longitudinal.growth import GrowthRow, LesionRow, growth_rows
from medattn.longitudinal.lesions import MeasuredLesion, measure_lesions
from medattn.longitudinal.matching import Observation, VisitLesions, track_lesions
from medattn.longitudinal.registration import (
    RigidRegistration,
    identity_registration,
    labels_on_baseline,
    register_rigid,
    sitk_image,
)
from medattn.pipelines.track_options import TrackOptions, check_track_options

#: Suffixes a mask given with --masks may have: those medattn writes masks in.
MASK_SUFFIXES = tuple(s for f in FORMATS if f.writer is not None and f.kind != "image2d" for s in f.suffixes)
SEGMENTATIONS = "segmentations"


@dataclass
class Visit:
    """One visit as track works on it: its scan, its lesion mask and components, their measures."""

    dated: VisitDate
    days: int
    image: MetaTensor | None = None
    components: np.ndarray | None = None
    lesions: list[MeasuredLesion] = field(default_factory=list)
    registration: RigidRegistration | None = None
    centroids: np.ndarray | None = None  # (N, 3) baseline-frame RAS

    @property
    def case(self) -> Case:
        return self.dated.case

    @property
    def date(self) -> str:
        return self.dated.date.isoformat()

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.image.affine, dtype=np.float64)


@dataclass
class TrackResult:
    """What `track` returns: the rows of lesions.csv and growth.csv, the visits, the output folder."""

    lesions: list[LesionRow]
    growth: list[GrowthRow]
    visits: list[dict]
    out: Path


def find_cases(inputs: list[str | Path]) -> list[Case]:
    """The scans under every input, as `predict` finds cases in each, in the order given."""
    cases = [case for path in inputs for case in discover(path)]
    seen: dict[str, Case] = {}
    for case in cases:
        if case.id in seen:
            raise ConfigError(
                f"two scans have the case id {case.id!r} ({seen[case.id].images[0]} and {case.images[0]}); "
                "their masks would have one name: rename one"
            )
        seen[case.id] = case
    return cases


def mask_path(folder: Path, case: Case) -> Path:
    """`folder/<case_id>.<mask suffix>`; ConfigError naming the case when there is none."""
    for suffix in MASK_SUFFIXES:
        candidate = folder / f"{case.id}{suffix}"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no mask for the scan {case.id!r} in {folder}: expected {case.id}.nii.gz (or "
        f"{', '.join(s for s in MASK_SUFFIXES if s != '.nii.gz')}), named by the case id `medattn predict` "
        "gives"
    )


def package_lesion_label(model: Path, label: str | None) -> tuple[int, str]:
    """(value, name) of the lesion label of a model package (see `TrackOptions.label`)."""
    from medattn.package import package_members, read_config
    from medattn.plan import LESION_WORDS

    names = {v: n for v, n in read_config(package_members(model)[0]).labels.items() if v != 0}
    listed = ", ".join(f"{v} ({n})" for v, n in sorted(names.items()))
    if label is not None:
        for value, name in names.items():
            if label == str(value) or label.lower() == name.lower():
                return value, name
        raise ConfigError(f"--label {label!r} is not a label of {model}; its labels: {listed}")
    lesion_like = [v for v, n in names.items() if LESION_WORDS.search(n)]
    if len(lesion_like) == 1:
        return lesion_like[0], names[lesion_like[0]]
    if not lesion_like and len(names) == 1:
        (value,) = names
        return value, names[value]
    raise ConfigError(f"choose the label holding the lesions with --label; the labels of {model}: {listed}")


def mask_lesion_label(masks: dict[str, np.ndarray], label: str | None) -> int:
    """The value of the lesion label in masks read from files (see `TrackOptions.label`)."""
    found = sorted({int(v) for array in masks.values() for v in np.unique(array) if v != 0})
    if label is not None:
        if not label.isdigit():
            raise ConfigError(
                f"--label {label!r}: masks read from files carry label values, not names; give the value "
                f"(found: {', '.join(map(str, found)) or 'none'})"
            )
        return int(label)
    if len(found) <= 1:
        return found[0] if found else 1
    raise ConfigError(
        f"the masks hold the labels {', '.join(map(str, found))}; choose the one holding the lesions with "
        "--label"
    )


def _predict_visits(inputs: list[Path], out: Path, model: Path, options: TrackOptions) -> Path:
    """Segment every input with `medattn.predict` into OUT/segmentations (always afresh: masks of another
    model must not be reused); a failed scan stops track, naming it."""
    from medattn.pipelines.predict import predict

    folder = out / SEGMENTATIONS
    for path in inputs:
        for result in predict(path, folder, model, format="nii.gz", device=options.device, overwrite=True):
            if result.status == "failed":
                raise MedattnError(f"the scan {result.case!r} could not be segmented: {result.error}", path)
    return folder


def _read_visit(visit: Visit, mask_file: Path) -> np.ndarray:
    """Load the visit's scan and its label mask, put on the scan's grid (the same grid with axes in any
    order; a DICOM SEG may cover a block of its slices)."""
    from medattn.io.geometry import onto_grid
    from medattn.pipelines.evaluate_inputs import load_label_map

    visit.image = visit.case.load_image()
    spatial = tuple(int(n) for n in visit.image.shape[1:])
    if len(spatial) != 3:
        raise ConfigError(f"track follows 3D scans; {visit.case.id} has {len(spatial)} spatial dimensions")
    labels, affine = load_label_map(mask_file)
    return onto_grid(labels, affine, spatial, visit.affine, mask_file, allow_block=True)


def _registered(baseline_scan, scan: np.ndarray, visit: Visit) -> RigidRegistration:
    """The visit registered to the baseline; ITK's failure (a scan too small or blank to register) as a
    MedattnError naming the scan."""
    try:
        return register_rigid(baseline_scan, sitk_image(scan, visit.affine))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1][-200:]
        raise MedattnError(
            f"the scan {visit.case.id!r} could not be registered to the baseline ({reason})",
            visit.case.images[0],
        ) from error


def track(
    inputs: str | Path | list[str | Path],
    out: str | Path,
    *,
    model: str | Path | None = None,
    masks: str | Path | None = None,
    options: TrackOptions | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
    **changes,
) -> TrackResult:
    """Match one patient's lesions across visits and report their growth.

    Args:
        inputs: the patient's scans at two or more dates: files, DICOM series folders, or one folder
            holding them (found as `predict` finds cases).
        out: folder for lesions.csv, growth.csv, masks/, report.json, report.html.
        model: a model package that segments every visit; or
        masks: a folder of label maps `<case_id>.<mask suffix>`, one per scan.
        options: `TrackOptions` (default: TrackOptions()).
        on_step: called as (what is being done, steps done, steps in all), e.g. for a progress bar.
        **changes: fields of TrackOptions as keyword arguments (``label="lesion", dates=[...]``).

    Returns:
        TrackResult with the LesionRow and GrowthRow rows written to lesions.csv and growth.csv.

    Raises:
        ConfigError: neither or both of model/masks, fewer than two scans, a scan without a date, two on
            one date, scans of different patients, a missing mask, an unknown or ambiguous label.
    """
    from medattn.io.atomic import check_writable
    from medattn.pipelines.track_report import write_outputs

    started = time.perf_counter()
    settings = check_track_options(options, **changes)
    if (model is None) == (masks is None):
        raise ConfigError("give either --model PKG (segment every visit) or --masks DIR (read their masks)")
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    cases = find_cases(paths)
    dated = visit_dates(cases, settings.dates)
    baseline_date = dated[0].date
    visits = [Visit(d, (d.date - baseline_date).days) for d in dated]
    total = len(visits) * 2 + 1 + (model is not None)
    step = 0

    def advance(what: str) -> None:
        nonlocal step
        if on_step is not None:
            on_step(what, step, total)
        step += 1

    def read_visits(folder: Path) -> dict[str, np.ndarray]:
        files = {v.case.id: mask_path(folder, v.case) for v in visits}  # every mask found before reading
        read = {}
        for visit in visits:
            advance(f"reading {visit.case.id}")
            read[visit.case.id] = _read_visit(visit, files[visit.case.id])
        return read

    if masks is not None:  # the masks are read (and their label chosen) before OUT is made
        masks = Path(masks)
        if not masks.is_dir():
            raise InputNotFoundError("no such folder of masks", masks)
        labels = read_visits(masks)
        label_value = mask_lesion_label(labels, settings.label)
        label_name, source = f"label {label_value}", f"masks in {masks}"
        out = check_writable(out)
    else:
        label_value, label_name = package_lesion_label(Path(model), settings.label)
        source = f"model {model}"
        out = check_writable(out)
        advance("segmenting the visits")
        labels = read_visits(_predict_visits(paths, out, Path(model), settings))
    baseline = visits[0]
    baseline_scan = sitk_image(np.asarray(baseline.image[0], dtype=np.float32), baseline.affine)
    matching = []
    for visit in visits:
        advance(f"registering {visit.case.id}")
        scan = np.asarray(visit.image[0], dtype=np.float32)
        visit.registration = (
            identity_registration() if visit is baseline else _registered(baseline_scan, scan, visit)
        )
        visit.components, visit.lesions = measure_lesions(
            labels.pop(visit.case.id) == label_value, visit.affine
        )
        centroids = np.array([lesion.centroid_ras for lesion in visit.lesions]).reshape(-1, 3)
        visit.centroids = visit.registration.to_baseline_ras(centroids) if visit.lesions else centroids
        on_baseline = (
            visit.components
            if visit is baseline
            else labels_on_baseline(visit.components, visit.affine, baseline_scan, visit.registration)
        )
        matching.append(
            VisitLesions(on_baseline, visit.centroids, [lesion.volume_ml for lesion in visit.lesions])
        )
    observations = track_lesions(matching, settings.match_distance_mm, settings.change_percent)
    rows = lesion_rows(visits, observations)
    growth = growth_rows(rows, settings.progression_percent, settings.response_percent)
    advance("writing the report")
    summary = write_outputs(
        out,
        visits,
        observations,
        rows,
        growth,
        settings,
        {"label": label_value, "label_name": label_name, "source": source},
        seconds=time.perf_counter() - started,
    )
    return TrackResult(rows, growth, summary, out)


def lesion_rows(visits: list[Visit], observations: list[Observation]) -> list[LesionRow]:
    """A LesionRow per observation: a present lesion with its measures, a vanished one with volume 0."""
    from medattn.longitudinal.growth import LENGTH_DECIMALS, VOLUME_DECIMALS

    rows = []
    for observation in observations:
        visit = visits[observation.visit]
        if observation.component is None:
            rows.append(
                LesionRow(
                    observation.lesion, visit.date, visit.days, 0.0, None, None, None, None, None, "vanished"
                )
            )
            continue
        measured = visit.lesions[observation.component - 1]
        x, y, z = (round(float(v), LENGTH_DECIMALS) + 0.0 for v in visit.centroids[observation.component - 1])
        rows.append(
            LesionRow(
                lesion=observation.lesion,
                date=visit.date,
                days=visit.days,
                volume_ml=round(measured.volume_ml, VOLUME_DECIMALS),
                diameter_mm=round(measured.diameter_mm, LENGTH_DECIMALS),
                perpendicular_mm=round(measured.perpendicular_mm, LENGTH_DECIMALS),
                centroid_x=x,
                centroid_y=y,
                centroid_z=z,
                status=observation.status,
            )
        )
    return rows
