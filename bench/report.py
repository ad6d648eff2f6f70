"""Where every benchmark's table goes: its own section of BENCHMARKS.md at the repository root."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from medattn.io.atomic import atomic_path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
# The page ends with what was tried and ruled out; a benchmark's first section goes in before it.
RULED_OUT = "## tried and ruled out"


def write_section(heading: str, body: str, path: Path = BENCHMARKS) -> Path:
    """Put a benchmark's latest run on the page: replace its own section, or add it if there is none yet.

    The page keeps one section per benchmark (per configuration where a script keeps several apart, such
    as one per model), so a run replaces the numbers it measured and leaves every other section as it
    was, byte for byte. A section is its heading line and everything up to the next heading of the same
    or a higher level (``#`` marks outside code fences). The section of `heading` is the one whose heading
    line is `heading` alone or `heading` followed by `` (``, the date a run adds. A section not on the
    page yet goes in before "## tried and ruled out", or at the end of the page when it has none. The
    page is written atomically (temporary file, then rename): a run that fails leaves it as it was.

    Args:
        heading: the section's heading without its date, e.g. "## metrics: `bench/metrics.py`".
        body: the markdown under the heading (setup, command, machine, table, reading of it).
        path: the page; BENCHMARKS.md at the repository root unless a test points elsewhere.

    Returns:
        `path`.
    """
    lines = path.read_text().splitlines(keepends=True) if path.exists() else ["# Benchmarks\n"]
    block = [f"{heading} ({datetime.date.today().isoformat()})\n", "\n", body.strip("\n") + "\n"]
    span = _section_span(lines, heading)
    if span is None:
        ruled_out = _section_span(lines, RULED_OUT)
        start = end = ruled_out[0] if ruled_out else len(lines)
        if lines and start == len(lines):  # at the end: one blank line between the page and the new section
            lines[-1] = lines[-1].rstrip("\n") + "\n"
            if lines[-1].strip():
                block.insert(0, "\n")
    else:
        start, end = span
    if end < len(lines):  # a section follows: keep the blank line before its heading
        block.append("\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines[:start] + block + lines[end:]))
    print(f"wrote {heading!r} to {path}")
    return path


def _heading_level(line: str) -> int:
    """2 for '## title', 3 for '### title'...; 0 for a line that is not a markdown heading."""
    marks = len(line) - len(line.lstrip("#"))
    return marks if marks and line[marks : marks + 1] == " " else 0


def _section_span(lines: list[str], heading: str) -> tuple[int, int] | None:
    """(first line, line after the last) of `heading`'s section; None if the page has no such section."""
    level, start, fenced = _heading_level(heading), None, False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not _heading_level(line):
            continue
        if start is None:
            text = line.rstrip("\n")
            if text == heading or text.startswith(heading + " ("):
                start = index
        elif _heading_level(line) <= level:
            return start, index
    return None if start is None else (start, len(lines))


def machine(threads: str | None = None, **versions: str) -> str:
    """One line naming the CPU, cores, threads, load, and the versions of medattn, torch, MONAI, Python.

    Args:
        threads: how the threads were set, e.g. "2 threads (torch and onnxruntime)"; default torch's count.
        **versions: further packages and their versions to name, e.g. ``onnxruntime="1.17.0"``.
    """
    import monai
    import torch

    import medattn

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    named = {
        "medattn": medattn.__version__,
        "torch": torch.__version__,
        **versions,
        "MONAI": monai.__version__,
    }
    listed = ", ".join(f"{name} {version}" for name, version in named.items())
    return (
        f"{cpu}, {cpus} CPU cores, {threads or f'{torch.get_num_threads()} torch threads'}; load average "
        f"{load:.1f} at the start (shared machine: wall times vary); {listed}, "
        f"Python {platform.python_version()}"
    )
