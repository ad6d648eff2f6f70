"""What `predict` reports: one `CaseResult` per case, `volumes.csv` and `predict.json`, rewritten atomically
after every case so a killed run leaves reports that match the finished masks."""

from __future__ import annotations

import csv
import io
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medattn import __version__
from medattn.io.atomic import atomic_path
from medattn.metrics.volume import label_voxel_counts, voxel_volume_ml

VOLUME_COLUMNS = ("case", "label", "name", "voxels", "volume_ml")


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


def earlier_volume_rows(out: Path, case_ids: set[str]) -> list[dict]:
    """Rows of volumes.csv from an earlier run into `out` for cases this run does not have (a run on a
    subset of the inputs must not drop the others' volumes); none when the file is absent or foreign."""
    try:
        with open(out / "volumes.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != VOLUME_COLUMNS:
                return []
            return [row for row in reader if row["case"] not in case_ids]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def write_reports(
    out: Path, results: list[CaseResult], settings: dict, earlier_rows: list[dict] = ()
) -> None:
    """volumes.csv (earlier rows first, then this run's) and predict.json (settings and every case)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=VOLUME_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(earlier_rows)
    for result in results:
        writer.writerows(result.volumes)
    with atomic_path(out / "volumes.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    report = {**settings, "cases": [{k: v for k, v in asdict(r).items() if k != "volumes"} for r in results]}
    with atomic_path(out / "predict.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))


def run_settings(model: Path, predictor, options, inputs: Path) -> dict:
    """predict.json's header: versions, the input, the package, every option, the device and precision."""
    import monai
    import torch

    return {
        "medattn_version": __version__,
        "input": str(inputs),
        "model_package": str(model),
        "model": predictor.config.model,
        "options": asdict(options),
        "device": str(predictor.device),
        "amp": str(predictor.amp_dtype).replace("torch.", "") if predictor.amp_dtype else "off",
        "versions": {
            "torch": torch.__version__,
            "monai": monai.__version__,
            "python": platform.python_version(),
        },
    }
