"""`predict --ray` on a local Ray cluster started here (2 CPUs, no dashboard, no network) and `--part K/N`:
the same masks and reports as a run in one process, a worker killed mid-run, skip-done, a bad case."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_package import make_ct_case, make_package

import medattn
from medattn.cli.main import main
from medattn.errors import ConfigError

CASES = ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("package") / "tiny")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Five CT volumes, each the first shifted by a few voxels, so every case has its own mask."""
    folder = tmp_path_factory.mktemp("inputs")
    first = nib.load(make_ct_case(folder, "a_0000.nii.gz"))
    for shift, case in enumerate(CASES[1:], start=1):
        image = np.roll(np.asarray(first.dataobj), 2 * shift, axis=0)
        nib.save(nib.Nifti1Image(image, first.affine), folder / f"{case}_0000.nii.gz")
    return folder


@pytest.fixture(scope="module")
def reference(package, inputs, tmp_path_factory):
    """A run in one process: what every other way of running must give."""
    out = tmp_path_factory.mktemp("reference")
    medattn.predict(inputs, out, model=package, device="cpu", uncertainty=True)
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster for the module (starting one takes seconds); `predict --ray local` uses it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def _mask(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _close(rows: list[dict], wanted: list[dict]) -> bool:
    """The same rows, numbers equal to 1e-4: a worker with fewer torch threads sums in another order, so
    probabilities (not masks) may differ in the last float digits."""
    if [list(row) for row in rows] != [list(row) for row in wanted]:
        return False
    for row, expected in zip(rows, wanted, strict=True):
        for key, value in row.items():
            try:
                if abs(float(value) - float(expected[key])) > 1e-4:
                    return False
            except ValueError:
                if value != expected[key]:
                    return False
    return True


def _same_as_reference(out: Path, reference: Path) -> None:
    """Every case's mask equals the reference's (its uncertainty map to float precision), and the reports
    hold the same rows: one per case and label, in the cases' order."""
    for case in CASES:
        assert np.array_equal(_mask(out / f"{case}.nii.gz"), _mask(reference / f"{case}.nii.gz")), case
        uncertainty = [_mask(folder / f"{case}_uncertainty.nii.gz") for folder in (out, reference)]
        assert np.allclose(*uncertainty, atol=1e-5)
    assert _rows(out / "volumes.csv") == _rows(reference / "volumes.csv")
    assert _close(_rows(out / "components.csv"), _rows(reference / "components.csv"))
    report = json.loads((out / "predict.json").read_text())
    assert [c["case"] for c in report["cases"]] == list(CASES)


def _worker_pids() -> list[int]:
    """Processes of this machine whose title is a Ray Data worker running CaseWorker."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and "CaseWorker" in title:
                pids.append(int(entry.name))
    return pids


def test_ray_gives_the_masks_of_one_process_and_a_bad_case_fails_alone(
    ray_cluster, package, inputs, reference, tmp_path, capsys
):
    """Through the CLI, two workers: every mask equals the one-process run's, the reports hold one row per
    case; a broken scan is reported failed and the exit code says so."""
    folder = tmp_path / "inputs"
    shutil.copytree(inputs, folder)
    (folder / "broken_0000.nii.gz").write_bytes(b"not a NIfTI file")
    out = tmp_path / "out"
    command = ["predict", str(folder), str(out), "-m", str(package), "--device", "cpu", "--uncertainty"]
    assert main([*command, "--ray", "local", "--workers", "2"]) == 1
    captured = capsys.readouterr()
    assert (
        "broken failed" in captured.err and "5 predicted, 0 skipped (already done), 1 failed" in captured.out
    )
    report = json.loads((out / "predict.json").read_text())
    statuses = {c["case"]: c["status"] for c in report["cases"]}
    assert statuses == {"broken": "failed", **dict.fromkeys(CASES, "done")}
    assert report["ray"] == {"address": "local", "workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0.0}
    assert report["device"] == "cpu"
    for case in CASES:
        assert np.array_equal(_mask(out / f"{case}.nii.gz"), _mask(reference / f"{case}.nii.gz")), case
    assert _rows(out / "volumes.csv") == _rows(reference / "volumes.csv")  # broken sorts first: no rows


def test_a_worker_killed_mid_run_is_restarted_and_every_case_done_once(
    ray_cluster, package, inputs, reference, tmp_path
):
    """The only worker is killed (SIGKILL, as the kernel's OOM killer does) as soon as it has written the
    first case's mask, so it dies holding the others: Ray restarts it and they are tried again."""
    killed = []

    def kill_the_worker_after_its_first_mask():
        deadline = time.monotonic() + 120
        while not (tmp_path / "a.nii.gz").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        pids = _worker_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed.append((time.time_ns(), pids))

    watcher = threading.Thread(target=kill_the_worker_after_its_first_mask)
    watcher.start()
    results = medattn.predict(
        inputs, tmp_path, model=package, device="cpu", uncertainty=True, ray="local", workers=1
    )
    watcher.join()
    ((when, pids),) = killed
    assert pids and [r.status for r in results] == ["done"] * len(CASES)
    # Cases the dead worker held were written after it died, by the worker that replaced it.
    assert sum((tmp_path / f"{case}.nii.gz").stat().st_mtime_ns > when for case in CASES) >= 3
    _same_as_reference(tmp_path, reference)


def test_skip_done_on_ray(ray_cluster, package, inputs, reference, tmp_path):
    """A re-run predicts only the case whose mask is gone; the reports still list every case once."""
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    (tmp_path / "c.nii.gz").unlink()
    before = (tmp_path / "a.nii.gz").stat().st_mtime_ns
    results = medattn.predict(inputs, tmp_path, model=package, device="cpu", uncertainty=True, ray="local")
    assert {r.case: r.status for r in results} == {**dict.fromkeys(CASES, "skipped"), "c": "done"}
    assert (tmp_path / "a.nii.gz").stat().st_mtime_ns == before
    _same_as_reference(tmp_path, reference)


def test_the_parts_together_are_a_full_run(package, inputs, reference, tmp_path, capsys):
    """--part 0/2 and 1/2 predict disjoint shares; the second to finish merges the reports into a full
    run's, and --merge does the same by hand."""
    command = ["predict", str(inputs), str(tmp_path), "-m", str(package), "--device", "cpu", "--uncertainty"]
    assert main([*command, "--part", "1/2"]) == 0
    assert sorted(p.name for p in tmp_path.glob("?.nii.gz")) == ["b.nii.gz", "d.nii.gz"]  # every 2nd from b
    assert not (tmp_path / "volumes.csv").exists()  # part 0 has not run: nothing merged yet
    with pytest.raises(ConfigError, match="part 0/2 of the --part runs"):
        medattn.predict(inputs, tmp_path, model=package, merge=True)
    assert main([*command, "--part", "0/2"]) == 0
    _same_as_reference(tmp_path, reference)
    part = json.loads((tmp_path / "parts" / "0_of_2" / "predict.json").read_text())
    assert [c["case"] for c in part["cases"]] == ["a", "c", "e"]
    (tmp_path / "volumes.csv").unlink()
    capsys.readouterr()
    assert main([*command, "--merge"]) == 0
    assert "merged the parts: 5 cases, 0 failed" in capsys.readouterr().out
    _same_as_reference(tmp_path, reference)
    assert json.loads((tmp_path / "predict.json").read_text())["parts"] == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--part", "2/2"], "parts count from 0 (0/2 to 1/2), so a SLURM array of 2 parts is --array=0-1"),
        (["--part", "first"], "--part takes K/N like 0/4"),
        (["--workers", "2"], "--workers size the workers of --ray; add --ray local"),
        (["--merge", "--part", "0/2"], "give it without --part and --ray"),
        (["--ray", "local", "--max-retries", "-1"], "--max-retries must be 0 or more"),
    ],
)
def test_wrong_scale_options_are_one_line(package, inputs, tmp_path, capsys, options, message):
    assert main(["predict", str(inputs), str(tmp_path / "out"), "-m", str(package), *options]) == 1
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_ray_without_ray_installed_names_the_extra(package, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    assert main(["predict", str(inputs), str(tmp_path), "-m", str(package), "--ray", "local"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--ray needs Ray" in err and "pip install 'medattn[ray]'" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.nii.gz"))


def test_the_cli_does_not_import_ray():
    """Ray is imported by `--ray` runs only: `medattn --help` and `predict --help` stay fast."""
    code = (
        "import sys\nfrom medattn.cli.main import main\n"
        "main(['--help']); main(['predict', '--help'])\nimport medattn.pipelines.predict\n"
        "print('ray imported' if 'ray' in sys.modules else 'no ray')"
    )
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert done.stdout.strip().endswith("no ray"), done.stderr[-2000:]
    assert "--ray" in done.stdout and "--part" in done.stdout and "pip install 'medattn[ray]'" in done.stdout
