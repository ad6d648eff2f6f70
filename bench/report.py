"""Where every benchmark's table goes: appended to BENCHMARKS.md at the repository root."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def append_section(section: str) -> Path:
    """Append a markdown section (with its own heading) to BENCHMARKS.md, creating the file if needed."""
    if not BENCHMARKS.exists():
        section = "# Benchmarks\n" + section
    with open(BENCHMARKS, "a") as handle:
        handle.write(section)
    print(f"appended to {BENCHMARKS}")
    return BENCHMARKS
