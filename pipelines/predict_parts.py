"""`predict --part K/N`: one of N deterministic shares of the cases, for one job each of a job array, and
the merge of the parts' reports into OUTPUT's volumes.csv, components.csv and predict.json.

Part K holds every N-th case from the K-th of the cases sorted by id (K from 0, as `--fold K/N`), so the
parts are disjoint, together hold every case, and differ in size by at most one. Its masks go to OUTPUT as a
full run's do; its reports, rewritten after every case as a full run's are, go to OUTPUT/parts/K_of_N/ (N
jobs rewriting one volumes.csv would lose each other's rows). A part is finished when its predict.json
lists every case of its share; the part that finishes last finds every part finished and merges, and
`predict --merge` does the same by hand (e.g. where the parts' filesystem shows new files late). The merged
reports are a full run's: one row per case in discovery order, whichever part predicted it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medattn.errors import ConfigError
from medattn.io.discovery import Case
from medattn.pipelines.predict_report import (
    REPORTS,
    CaseResult,
    earlier_report_rows,
    report_rows_by_case,
    write_reports,
)

PARTS_FOLDER = "parts"
_PART_FOLDER = re.compile(r"(\d+)_of_(\d+)")


def parse_part(text: str) -> tuple[int, int]:
    """--part's ``K/N`` as (K, N), with 0 <= K < N.

    Raises:
        ConfigError: not two integers K/N, or K outside 0..N-1 (e.g. a 1-based SLURM array index).
    """
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError as error:
        raise ConfigError(f"--part takes K/N like 0/4 (part K of N, K from 0), got {text!r}") from error
    if n < 1 or not 0 <= k < n:
        last = max(n, 1)
        raise ConfigError(
            f"--part {text}: need 0 <= K < N; parts count from 0 (0/{last} to {last - 1}/{last}), so a SLURM "
            f"array of {last} parts is --array=0-{last - 1}"
        )
    return k, n


def part_cases(cases: list[Case], part: str) -> list[Case]:
    """The cases of part K of N: every N-th case from the K-th, of the cases sorted by id."""
    k, n = parse_part(part)
    return sorted(cases, key=lambda case: case.id)[k::n]


def part_folder(out: Path, part: str) -> Path:
    """Where part K of N writes its reports: OUTPUT/parts/K_of_N."""
    k, n = parse_part(part)
    return out / PARTS_FOLDER / f"{k}_of_{n}"


def merge_parts(cases: list[Case], out: Path, *, required: bool = True) -> list[CaseResult] | None:
    """Merge the finished parts' reports in `out` into its volumes.csv, components.csv and predict.json.

    Args:
        cases: every case of the input (the parts' shares are made from them).
        out: the output folder the parts wrote to.
        required: raise when a part is not finished; False: return None then (a part checking whether it
            finished last).

    Returns:
        One CaseResult per case in `cases` order, or None (`required` False and a part unfinished).

    Raises:
        ConfigError: no parts in `out`, parts of several counts N, or (`required`) a part not finished.
    """
    count = _part_count(out)
    merged: dict[str, CaseResult] = {}
    unfinished = []
    settings = None
    for k in range(count):
        part = f"{k}/{count}"
        report = _read_part(part_folder(out, part))
        wanted = {case.id for case in part_cases(cases, part)}
        if report is None or not wanted <= set(report[0]):
            unfinished.append(part)
            continue
        results, header = report
        settings = settings or header
        merged.update({case_id: result for case_id, result in results.items() if case_id in wanted})
    if unfinished:
        if not required:
            return None
        raise ConfigError(
            f"part{'s' if len(unfinished) > 1 else ''} {', '.join(unfinished)} of the --part runs in {out} "
            "not finished (or not found): run `medattn predict INPUT OUTPUT --model PKG --part K/N` for "
            "each, then --merge again"
        )
    settings["options"] = {**settings["options"], "part": None}
    settings["parts"] = count
    results = [merged[case.id] for case in cases]
    write_reports(out, results, settings, earlier_report_rows(out, {case.id for case in cases}))
    return results


def _part_count(out: Path) -> int:
    counts = sorted(
        {
            int(match[2])
            for folder in (out / PARTS_FOLDER).glob("*_of_*")
            if (match := _PART_FOLDER.fullmatch(folder.name))
        }
    )
    if not counts:
        raise ConfigError(
            "holds no --part results (OUTPUT/parts/K_of_N): run the parts first, then --merge", out
        )
    if len(counts) > 1:
        raise ConfigError(
            f"holds parts of runs split {' and '.join(map(str, counts))} ways; remove the folders of the "
            f"split no longer wanted from {out / PARTS_FOLDER}",
            out,
        )
    return counts[0]


def _read_part(folder: Path) -> tuple[dict[str, CaseResult], dict] | None:
    """A part's results by case id (with their report rows) and its predict.json header; None when the part
    has not written a report yet."""
    try:
        report = json.loads((folder / "predict.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    rows = {name: report_rows_by_case(folder / name) for name in REPORTS}
    results = {}
    for entry in report.pop("cases"):
        result = CaseResult(**entry)
        result.volumes = rows["volumes.csv"].get(result.case, [])
        result.components = rows["components.csv"].get(result.case, [])
        results[result.case] = result
    return results, report
