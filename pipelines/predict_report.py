"""What `predict` reports: one `CaseResult` per case, `volumes.csv` and `predict.json`, rewritten atomically
after every case so a killed run leaves reports that match the finished masks."""

from __future__ import annotations

import csv
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medattn import __version__
from medattn.inference.uncertainty import COMPONENT_COLUMNS
from medattn.io.atomic import atomic_path, write_csv_rows
from medattn.metrics.volume import label_voxel_counts, voxel_volume_ml

VOLUME_COLUMNS = ("case", "label", "name", "voxels", "volume_ml")
#: The CSV reports, their columns, and the CaseResult field that holds a case's rows.
REPORTS = {"volumes.csv": VOLUME_COLUMNS, "components.csv": COMPONENT_COLUMNS}
_RESULT_FIELD = {"volumes.csv": "volumes", "components.csv": "components"}


@dataclass
class CaseResult:
    """What happened to one case: status 'done', 'skipped' or 'failed'."""

    case: str
    status: str
    output: str | None = None
    seconds: float = 0.0
    error: str | None = None
    volumes: list[dict] = field(default_factory=list)
    frames: int | None = None  # videos: frames segmented
    fps: float | None = None  # videos: frames segmented per second, decoding and writing included
    mean_uncertainty: float | None = None  # --uncertainty: the case's mean normalized entropy in its mask
    components: list[dict] = field(default_factory=list)  # --uncertainty: components.csv rows


def volume_rows(case_id: str, mask, affine, names: dict[int, str]) -> list[dict]:
    """One row per label of the package: voxels and volume in mL (2D: area x 1 mm, as the metrics do)."""
    voxel_ml = voxel_volume_ml(np.asarray(affine), np.asarray(mask).ndim - 1)
    return [
        {
            "case": case_id,
            "label": value,
            "name": name,
            "voxels": voxels,
            "volume_ml": round(voxels * voxel_ml, 6),
        }
        for value, name, voxels in label_voxel_counts(mask, names)
    ]


def earlier_report_rows(out: Path, case_ids: set[str]) -> dict[str, list[dict]]:
    """Rows of volumes.csv and components.csv from an earlier run into `out` for cases this run does not
    have (a run on a subset of the inputs must not drop the others' rows); none for an absent or foreign
    file."""
    return {name: _earlier_rows(out / name, columns, case_ids) for name, columns in REPORTS.items()}


def _earlier_rows(path: Path, columns: tuple[str, ...], case_ids: set[str]) -> list[dict]:
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != columns:
                return []
            return [row for row in reader if row["case"] not in case_ids]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def report_rows_by_case(path: Path) -> dict[str, list[dict]]:
    """The rows of a report (volumes.csv, components.csv, by its name) by case; none for an absent or
    foreign file."""
    rows: dict[str, list[dict]] = {}
    for row in _earlier_rows(path, REPORTS[path.name], set()):
        rows.setdefault(row["case"], []).append(row)
    return rows


def write_reports(
    out: Path, results: list[CaseResult], settings: dict, earlier_rows: dict[str, list[dict]] | None = None
) -> None:
    """volumes.csv, components.csv when a case has components (earlier rows first, then this run's), and
    predict.json (settings and every case)."""
    earlier_rows = earlier_rows or {}
    for name, columns in REPORTS.items():
        rows = [row for result in results for row in getattr(result, _RESULT_FIELD[name])]
        if name != "volumes.csv" and not rows and not earlier_rows.get(name):
            continue
        write_csv_rows(out / name, columns, [*earlier_rows.get(name, ()), *rows])
    listed = ("volumes", "components")
    report = {**settings, "cases": [{k: v for k, v in asdict(r).items() if k not in listed} for r in results]}
    with atomic_path(out / "predict.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))


def run_settings(packages: list, members: list, predictor, options, inputs: Path) -> dict:
    """predict.json's header: versions, the input, the package(s) and the members used, every option, the
    device and precision."""
    import monai
    import torch

    return {
        "medattn_version": __version__,
        "input": str(inputs),
        "model_package": str(packages[0]) if len(packages) == 1 else [str(p) for p in packages],
        "members": [str(m) for m in members],
        "model": predictor.config.model,
        "options": asdict(options),
        **predictor_device(predictor),
        "versions": {
            "torch": torch.__version__,
            "monai": monai.__version__,
            "python": platform.python_version(),
        },
    }


def predictor_device(predictor) -> dict:
    """predict.json's "device" and "amp": where the predictor runs and in which precision."""
    return {
        "device": str(predictor.device),
        "amp": str(predictor.amp_dtype).replace("torch.", "") if predictor.amp_dtype else "off",
    }
