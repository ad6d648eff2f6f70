"""bench/report.py: a benchmark's run replaces its own section of the page and leaves the rest as it was."""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path

# bench/ is a folder of scripts, not a package: load its report module by path, leaving sys.path alone.
_spec = importlib.util.spec_from_file_location(
    "bench_report", Path(__file__).resolve().parents[2] / "bench" / "report.py"
)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)
write_section = report.write_section

INTRO = "# Benchmarks\n\nOne section per benchmark.\n\n"
FIRST = "## metrics: `bench/metrics.py` (2026-11-23)\n\n| what | s |\n| --- | ---: |\n| old | 1.0 |\n\n"
# A `## ` line inside a code fence and a subsection belong to the section they sit in.
SECOND = (
    "## export formats: `bench/export.py` (2026-11-23)\n\n```bash\n## not a heading\n```\n\n"
    "### onnxruntime\n\nold numbers\n\n"
)
RULED_OUT = "## tried and ruled out\n\n- **something**: slower.\n"


def page(tmp_path: Path) -> Path:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(INTRO + FIRST + SECOND + RULED_OUT)
    return path


def test_a_run_replaces_its_own_section_and_leaves_the_others_byte_identical(tmp_path):
    path = page(tmp_path)
    write_section(
        "## export formats: `bench/export.py`", "| engine | s |\n| --- | ---: |\n| new | 2.0 |\n", path
    )
    today = datetime.date.today().isoformat()
    new = (
        f"## export formats: `bench/export.py` ({today})\n\n| engine | s |\n| --- | ---: |\n| new | 2.0 |\n\n"
    )
    assert path.read_text() == INTRO + FIRST + new + RULED_OUT


def test_a_new_benchmark_goes_in_before_the_ruled_out_list(tmp_path):
    path = page(tmp_path)
    write_section("## 2D frames per second, pranet: `bench/fps_2d.py`", "fps table", path)
    today = datetime.date.today().isoformat()
    added = f"## 2D frames per second, pranet: `bench/fps_2d.py` ({today})\n\nfps table\n\n"
    assert path.read_text() == INTRO + FIRST + SECOND + added + RULED_OUT


def test_a_heading_that_only_starts_like_another_is_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(INTRO + FIRST)
    write_section("## metrics: `bench/metrics.py` on CUDA", "gpu", path)
    today = datetime.date.today().isoformat()
    assert path.read_text() == INTRO + FIRST + f"## metrics: `bench/metrics.py` on CUDA ({today})\n\ngpu\n"
