"""`predict` under output and package faults: a full disk stops the batch with masks and reports in
agreement, a folder that refuses writes is refused before any case, a damaged package is one CLI line."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from full_disk import FullDisk, refuse_writes  # tests/ is on sys.path (pythonpath in pyproject.toml)
from tiny_package import make_ct_case, make_package

import medattn
from medattn.cli.main import main
from medattn.errors import DiskFullError, WriteError
from medattn.package import WEIGHTS_NAME

CASES = ("a", "b", "c")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("package") / "tiny")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three copies of one CT volume: their masks and report rows are the same size, so a disk's free bytes
    can be chosen to run out at a known write."""
    folder = tmp_path_factory.mktemp("inputs")
    first = make_ct_case(folder, f"{CASES[0]}_0000.nii.gz")
    for case in CASES[1:]:
        shutil.copy(first, folder / f"{case}_0000.nii.gz")
    return folder


@pytest.fixture(scope="module")
def sizes(package, inputs, tmp_path_factory):
    """Bytes one case writes: its mask and the reports after it (rewritten after every case)."""
    out = tmp_path_factory.mktemp("reference")
    medattn.predict(inputs / "a_0000.nii.gz", out, model=package, device="cpu")
    return {name: (out / name).stat().st_size for name in ("a.nii.gz", "volumes.csv", "predict.json")}


def _agree(out, done: list[str]) -> None:
    """Exactly the masks of `done` exist, the reports list exactly those, and no temporary file is left."""
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{case}.nii.gz" for case in done]
    report = json.loads((out / "predict.json").read_text())
    assert [c["case"] for c in report["cases"] if c["status"] == "done"] == done
    with open(out / "volumes.csv", newline="") as handle:
        assert sorted({row["case"] for row in csv.DictReader(handle)}) == done
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("pipelined", [False, True], ids=["in turn", "pipelined"])
def test_a_full_disk_stops_the_batch_at_the_case_it_happens_on(
    package, inputs, sizes, tmp_path, monkeypatch, pipelined
):
    first_case = sizes["a.nii.gz"] + sizes["volumes.csv"] + sizes["predict.json"]
    FullDisk(tmp_path, free=first_case + 20).install(monkeypatch)
    seen = []
    with pytest.raises(DiskFullError, match="b.nii.gz: the disk is full"):
        medattn.predict(
            inputs, tmp_path, model=package, pipelined=pipelined, on_case=lambda r, i, n: seen.append(r)
        )
    assert [r.case for r in seen] == ["a"]  # b was not recorded as failed, c never ran
    _agree(tmp_path, ["a"])


def test_a_full_disk_at_the_reports_takes_back_that_cases_mask(package, inputs, sizes, tmp_path, monkeypatch):
    """b's mask fits but its reports do not: they keep only a, so b's mask goes (a re-run redoes it)."""
    first_case = sizes["a.nii.gz"] + sizes["volumes.csv"] + sizes["predict.json"]
    FullDisk(tmp_path, free=first_case + sizes["a.nii.gz"] + 20).install(monkeypatch)
    with pytest.raises(DiskFullError, match="volumes.csv: the disk is full"):
        medattn.predict(inputs, tmp_path, model=package, device="cpu", pipelined=True)
    _agree(tmp_path, ["a"])
    monkeypatch.undo()
    assert [r.status for r in medattn.predict(inputs, tmp_path, model=package)] == ["skipped", "done", "done"]
    assert sorted(p.name for p in tmp_path.glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]


def test_the_cli_says_disk_full_in_one_line_and_exits_1(package, inputs, tmp_path, monkeypatch, capsys):
    FullDisk(tmp_path, free=100).install(monkeypatch)
    assert main(["predict", str(inputs), str(tmp_path), "-m", str(package), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "a.nii.gz: the disk is full" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_an_output_folder_that_refuses_writes_fails_before_any_case(package, inputs, tmp_path, monkeypatch):
    out = tmp_path / "locked"
    refuse_writes(out, monkeypatch)
    seen = []
    try:
        with pytest.raises(WriteError, match="locked: cannot write here"):
            medattn.predict(inputs, out, model=package, on_case=lambda r, i, n: seen.append(r))
        assert main(["predict", str(inputs), str(out), "-m", str(package)]) == 1
    finally:
        out.chmod(0o755)
    assert not seen and not list(out.iterdir())


def test_a_damaged_package_is_one_cli_line(package, inputs, tmp_path, capsys):
    damaged = shutil.copytree(package, tmp_path / "damaged")
    weights = damaged / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["predict", str(inputs), str(tmp_path / "out"), "-m", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert f"{weights}: the file is cut short" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
