"""Where every benchmark's table goes: appended to BENCHMARKS.md at the repository root."""

from __future__ import annotations

import os
import platform
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
