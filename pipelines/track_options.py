"""The options of `medattn track` / `medattn.track`, declared once: each field's default, help and flag.

`TrackOptions` is what `track` runs with and what report.json keeps under "settings"; the command line is
built from its fields (`medattn.cli.options`), and the Python API takes them as keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from medattn.errors import ConfigError
from medattn.longitudinal.dates import parse_dates
from medattn.longitudinal.growth import PROGRESSION_PERCENT, RESPONSE_PERCENT
from medattn.longitudinal.matching import CHANGE_PERCENT, MATCH_DISTANCE_MM


@dataclass
class TrackOptions:
    """Every option of `medattn track`; saved in report.json."""

    label: str | None = field(
        default=None,
        metadata={
            "help": "The label holding the lesions, by name (with --model) or number. Default: the "
            "package's label named like lesion/tumour/metastasis..., else the only foreground label.",
            "flags": ("--label",),
            "show_default": False,
        },
    )
    dates: list[str] | None = field(
        default=None,
        metadata={
            "help": "The visits' dates D1,D2,... (YYYY-MM-DD or YYYYMMDD), in the order `medattn info` lists "
            "the scans; replace what DICOM headers and file names say.",
            "parser": parse_dates,
            "cli_type": str,
        },
    )
    format: str = field(
        default="seg.nrrd",
        metadata={
            "help": "Format of OUT/masks/<case_id>.*: seg.nrrd (3D Slicer, a segment per lesion), nii.gz, "
            "dicom-seg (DICOM input), nrrd, mha."
        },
    )
    progression_percent: float = field(
        default=PROGRESSION_PERCENT,
        metadata={"help": "Category progression: last volume this many percent above the lesion's smallest."},
    )
    response_percent: float = field(
        default=RESPONSE_PERCENT,
        metadata={"help": "Category partial response: last volume this many percent below the first."},
    )
    change_percent: float = field(
        default=CHANGE_PERCENT,
        metadata={
            "help": "Status growing / shrinking: volume this many percent above / below the previous visit's."
        },
    )
    match_distance_mm: float = field(
        default=MATCH_DISTANCE_MM,
        metadata={
            "help": "Lesions of consecutive visits that do not overlap still match when their centroids lie "
            "this close (mm, after registration).",
            "flags": ("--match-distance",),
        },
    )
    device: str = field(default="auto", metadata={"help": "With --model: auto|cpu|cuda[:N]."})


def check_track_options(options: TrackOptions | None = None, **changes) -> TrackOptions:
    """The options with `changes` applied, checked before any work (ConfigError names the option)."""
    from medattn.io.formats import normalized_format

    settings = TrackOptions(**changes) if options is None else replace(options, **changes)
    if isinstance(settings.dates, str):
        settings.dates = parse_dates(settings.dates)
    if settings.label is not None:
        settings.label = str(settings.label)
    settings.format = normalized_format(settings.format)
    if settings.format == "png":
        raise ConfigError("--format png is for 2D images; track writes 3D masks: seg.nrrd, nii.gz, dicom-seg")
    for name in ("progression_percent", "response_percent", "change_percent", "match_distance_mm"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be above 0, got {getattr(settings, name)}")
    if settings.response_percent > 100:
        raise ConfigError(f"--response-percent is at most 100 (vanished), got {settings.response_percent}")
    return settings
