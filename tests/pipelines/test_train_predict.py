"""End to end: train a few iterations -> package -> predict -> masks on the input grid, volumes, skip."""

from __future__ import annotations

import csv
import json
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_package import TINY_TRAINING as TINY
from tiny_package import sphere_case, write_sphere_dataset

import medattn
from medattn.cli.main import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """nnU-Net layout: 4 training cases and 2 test cases, one with an oblique LPS grid."""
    root = write_sphere_dataset(tmp_path_factory.mktemp("Dataset001_Sphere"), cases=4)
    (root / "imagesTs").mkdir()
    oblique = np.eye(4)
    angle = np.radians(20)
    oblique[:3, :3] = np.array(
        [[-np.cos(angle), np.sin(angle), 0], [-np.sin(angle), -np.cos(angle), 0], [0, 0, 1]]
    )
    oblique[:3, :3] = oblique[:3, :3] @ np.diag([1.2, 1.2, 2.0])
    oblique[:3, 3] = (30, 20, -10)
    for index, affine in enumerate([np.diag([1.1, 0.9, 1.4, 1.0]), oblique]):
        image, _ = sphere_case((21, 19, 17), (10, 9, 8), 5, seed=10 + index)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTs" / f"t_{index:03d}_0000.nii.gz")
    return root


@pytest.fixture(scope="module")
def package(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    result = medattn.train(
        dataset, out=run, epochs=2, **{k: v for k, v in TINY.items() if k != "model"}, model=TINY["model"]
    )
    return result


def test_training_leaves_a_package_and_logs(package):
    run = package.run
    for name in (
        "model.pt",
        "medattn.json",
        "plan.json",
        "train_options.json",
        "metrics.csv",
        "checkpoint_last.pt",
    ):
        assert (run / name).is_file(), name
    config = json.loads((run / "medattn.json").read_text())
    assert config["model"] == "agunet" and config["plan"]["labels"]["1"] == "sphere"
    assert config["plan"]["patch_size"] == [16, 16, 16]
    # The CPU default (half-resolution stem) is recorded, so the package rebuilds the network it trained.
    assert config["model_kwargs"]["stem_stride"] == 2 and config["model_kwargs"]["base_channels"] == 4
    assert json.loads((run / "plan.json").read_text())["model_kwargs"]["stem_stride"] == 2
    state = torch.load(run / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert package.epochs == 2


def test_the_package_holds_the_best_validation_weights_unless_final_is_asked_for(package, dataset, tmp_path):
    """The best validation epoch by default; `weights="final"` packages the end of the schedule."""
    history = [row for row in package.history if "val_dice" in row]
    best_epoch = max(history, key=lambda row: row["val_dice"])["epoch"]
    best = torch.load(package.run / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] == best_epoch
    assert json.loads((package.run / "medattn.json").read_text())["training"]["weights"] == "best"
    packaged = torch.load(package.run / "model.pt", weights_only=True)
    assert all(torch.equal(value, best["model"][key]) for key, value in packaged.items())

    run = medattn.train(dataset, out=tmp_path / "final", epochs=3, weights="final", **TINY)
    final = torch.load(run.run / "model.pt", weights_only=True)
    last = torch.load(run.run / "checkpoint_last.pt", weights_only=True)
    assert last["epoch"] == 3
    assert all(torch.equal(value, last["model"][key]) for key, value in final.items())
    with pytest.raises(medattn.errors.ConfigError, match="--weights takes final or best"):
        medattn.train(dataset, out=tmp_path / "bad", weights="last", **TINY)


def test_max_time_is_the_whole_run_reading_and_validation_included(dataset, tmp_path):
    started = time.perf_counter()
    run = medattn.train(dataset, out=tmp_path / "timed", epochs=10_000, max_time=6.0, **TINY)
    took = time.perf_counter() - started
    assert run.stopped_by == "max_time" and took < 6.0 + 2.0  # a step and the package's save past it
    assert "val_dice" in run.history[-1]
    with pytest.raises(medattn.errors.ConfigError, match="spent before training began"):
        medattn.train(dataset, out=tmp_path / "none", max_time=0.01, **TINY)


def test_predict_writes_masks_on_the_input_grid_and_volumes(package, dataset, tmp_path):
    results = medattn.predict(dataset / "imagesTs", tmp_path, model=package.package, device="cpu")
    assert [r.status for r in results] == ["done", "done"]
    rows = list(csv.DictReader((tmp_path / "volumes.csv").read_text().splitlines()))
    assert {row["case"] for row in rows} == {"t_000", "t_001"} and rows[0]["name"] == "sphere"
    for case in ("t_000", "t_001"):
        image = nib.load(dataset / "imagesTs" / f"{case}_0000.nii.gz")
        mask = nib.load(tmp_path / f"{case}.nii.gz")
        assert mask.shape == image.shape
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
        voxels = int((np.asarray(mask.dataobj) == 1).sum())
        row = next(r for r in rows if r["case"] == case)
        assert int(row["voxels"]) == voxels
        voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000
        assert float(row["volume_ml"]) == pytest.approx(voxels * voxel_ml, rel=1e-5, abs=1e-6)
    report = json.loads((tmp_path / "predict.json").read_text())
    assert report["device"] == "cpu" and len(report["cases"]) == 2 and report["versions"]["torch"]


def test_rerun_skips_done_cases_and_a_corrupt_case_fails_alone(package, dataset, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in (dataset / "imagesTs").iterdir():
        (inputs / path.name).write_bytes(path.read_bytes())
    (inputs / "broken_0000.nii.gz").write_bytes(b"not a nifti at all")
    out = tmp_path / "out"
    code = main(["predict", str(inputs), str(out), "--model", str(package.package), "--device", "cpu"])
    assert code == 1
    report = json.loads((out / "predict.json").read_text())
    status = {c["case"]: c["status"] for c in report["cases"]}
    assert status == {"broken": "failed", "t_000": "done", "t_001": "done"}
    assert "broken_0000.nii.gz" in next(c["error"] for c in report["cases"] if c["case"] == "broken")
    assert not (out / "broken.nii.gz").exists()
    (inputs / "broken_0000.nii.gz").unlink()
    before = (out / "t_000.nii.gz").stat().st_mtime_ns
    assert main(["predict", str(inputs), str(out), "--model", str(package.package), "--device", "cpu"]) == 0
    assert (out / "t_000.nii.gz").stat().st_mtime_ns == before
    statuses = {c["case"]: c["status"] for c in json.loads((out / "predict.json").read_text())["cases"]}
    assert statuses == {"t_000": "skipped", "t_001": "skipped"}
    volumes = (out / "volumes.csv").read_text()
    one = inputs / "one"
    one.mkdir()
    (inputs / "t_001_0000.nii.gz").rename(one / "t_001_0000.nii.gz")
    assert main(["predict", str(one), str(out), "--model", str(package.package), "--overwrite"]) == 0
    rows = (out / "volumes.csv").read_text().splitlines()
    assert sorted(rows) == sorted(volumes.splitlines())  # a run on a subset keeps the other cases' rows


def test_a_case_failing_on_the_writer_thread_fails_alone_and_leaves_no_mask(package, dataset, tmp_path):
    """--overlay is for 2D images: on 3D volumes every case fails with that message, before any file."""
    results = medattn.predict(
        dataset / "imagesTs", tmp_path, model=package.package, device="cpu", pipelined=True, overlay=True
    )
    assert [r.status for r in results] == ["failed", "failed"]
    assert all("--overlay" in r.error for r in results)
    assert not list(tmp_path.glob("t_*"))


def test_load_model_predict_returns_mask_on_input_grid(package, dataset):
    predictor = medattn.load_model(package.package, device="cpu")
    image = medattn.io.load_image(dataset / "imagesTs" / "t_001_0000.nii.gz")
    original = image.clone()
    mask = predictor.predict(image)
    assert torch.equal(image, original)  # the caller's image is not normalised in place
    assert tuple(mask.shape) == (1, *image.shape[1:])
    np.testing.assert_allclose(mask.affine.numpy(), image.affine.numpy(), atol=1e-5)
    assert set(np.unique(mask.numpy())) <= {0, 1}


def test_compiled_training_saves_the_plain_network_and_learns_the_same_weights(dataset, tmp_path):
    """`compile` (here torch.compile's "eager" backend: Dynamo traces the steps, nothing is generated) saves
    a package of the bare network, with the weights of the same run uncompiled."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    options = {**{k: v for k, v in TINY.items() if k != "model"}, "epochs": 1, "model": TINY["model"]}
    plain = medattn.train(dataset, out=tmp_path / "plain", **options)
    counters.clear()
    compiled = medattn.train(dataset, out=tmp_path / "compiled", compile="eager", **options)
    assert counters["stats"]["unique_graphs"] >= 1  # the steps did run through Dynamo
    weights = torch.load(compiled.package / "model.pt", weights_only=True)
    reference = torch.load(plain.package / "model.pt", weights_only=True)
    assert weights.keys() == reference.keys() and not any("_orig_mod" in key for key in weights)
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, msg=key)
    assert json.loads((compiled.run / "train_options.json").read_text())["compile"] == "eager"


class _Killed(Exception):
    """Stands in for a kill right after an epoch's checkpoint was written."""


def _kill_after_first_epoch(stats: dict) -> None:
    if stats["epoch"] == 1:
        raise _Killed


def test_resume_after_an_interruption_reaches_the_same_weights(dataset, tmp_path):
    options = {k: v for k, v in TINY.items() if k != "model"}
    straight = medattn.train(dataset, out=tmp_path / "straight", epochs=3, model="agunet", **options)
    with pytest.raises(_Killed):
        medattn.train(
            dataset,
            out=tmp_path / "resumed",
            epochs=3,
            model="agunet",
            on_epoch_end=_kill_after_first_epoch,
            **options,
        )
    resumed = medattn.train(
        dataset, out=tmp_path / "resumed", epochs=3, model="agunet", resume=True, **options
    )
    assert resumed.epochs == straight.epochs == 3
    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader((tmp_path / "resumed" / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_train_cli_makes_a_package_and_predict_cli_uses_it(dataset, tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        str(dataset),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--patch",
        "16,16,16",
        "--batch",
        "2",
        "--device",
        "cpu",
        "--model-kwargs",
        '{"base_channels": 4, "depth": 2}',
    ]
    assert main(args) == 0
    assert (run / "medattn.json").is_file() and (run / "model.pt").is_file()
    out = tmp_path / "out"
    single = dataset / "imagesTs" / "t_000_0000.nii.gz"
    assert (
        main(
            [
                "predict",
                str(single),
                str(out),
                "--model",
                str(run),
                "--format",
                "seg.nrrd",
                "--device",
                "cpu",
                "--keep-largest",
            ]
        )
        == 0
    )
    import SimpleITK as sitk

    # The CLI writes what the Python API writes with the same options, on the scan's grid.
    medattn.predict(single, tmp_path / "api", model=run, format="seg.nrrd", device="cpu", keep_largest=True)
    by_cli, by_api = (sitk.ReadImage(str(folder / "t_000.seg.nrrd")) for folder in (out, tmp_path / "api"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(by_cli), sitk.GetArrayFromImage(by_api))
    scan = sitk.ReadImage(str(single))
    assert by_cli.GetSize()[:3] == scan.GetSize()
    np.testing.assert_allclose(by_cli.GetOrigin()[:3], scan.GetOrigin(), atol=1e-4)


@pytest.mark.parametrize(("typed", "suffix"), [(".MHA", ".mha"), ("nrrd", ".nrrd"), ("nii", ".nii")])
def test_label_map_formats_by_any_spelling_land_on_the_input_grid(package, dataset, tmp_path, typed, suffix):
    """--format takes the file suffix as users type it; plain NRRD/MHA/NIfTI label maps are read by
    SimpleITK onto the scan's grid."""
    import SimpleITK as sitk

    medattn.predict(dataset / "imagesTs" / "t_000_0000.nii.gz", tmp_path, model=package.package, format=typed)
    mask = sitk.ReadImage(str(tmp_path / f"t_000{suffix}"))
    scan = sitk.ReadImage(str(dataset / "imagesTs" / "t_000_0000.nii.gz"))
    assert mask.GetSize() == scan.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), scan.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), scan.GetDirection(), atol=1e-6)


def test_a_mask_is_never_written_over_its_scan(package, dataset, tmp_path):
    """Output folder = input folder, scan named like its mask: refused before any case, scan untouched, so
    the scan is never taken for an earlier mask and its intensities never reported as label volumes."""
    import shutil

    from medattn.errors import ConfigError

    scan = tmp_path / "x.nii.gz"
    shutil.copy(dataset / "imagesTs" / "t_000_0000.nii.gz", scan)
    before = scan.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="would be written over its scan"):
            medattn.predict(tmp_path, tmp_path, model=package.package, overwrite=overwrite)
    assert scan.read_bytes() == before and not (tmp_path / "volumes.csv").exists()


def test_unknown_model_and_bad_device_are_one_line_errors(dataset, tmp_path, capsys):
    assert main(["train", str(dataset), "--out", str(tmp_path), "--model", "agunett"]) == 1
    assert "Did you mean agunet" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--overlap", "1.5"], "--overlap must be in"),
        (["--sw-batch", "0"], "--sw-batch must be at least 1"),
        (["--min-lesion-ml", "-1"], "--min-lesion-ml must be 0 or more"),
        (["--lesion-threshold", "0"], "--lesion-threshold is a probability in (0, 1]"),
        (["--device", "cpu", "--amp", "bf16"], "--amp bf16 needs a CUDA device"),
        (["--format", "png"], "--format png writes 2D masks"),
        (
            ["--format", "jpg"],
            "unknown --format 'jpg'; choose nii.gz, seg.nrrd, dicom-seg, png, nii, nrrd, mha",
        ),
    ],
)
def test_options_wrong_for_every_case_fail_once_before_any_case(
    package, dataset, tmp_path, capsys, options, message
):
    out = tmp_path / "out"
    assert main(["predict", str(dataset / "imagesTs"), str(out), "-m", str(package.package), *options]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count(message) == 1 and "failed" not in err
    assert not (out / "volumes.csv").exists()


def test_an_output_that_is_a_file_or_a_package_file_is_a_clear_error(package, dataset, tmp_path, capsys):
    (tmp_path / "masks").write_text("")
    assert (
        main(["predict", str(dataset / "imagesTs"), str(tmp_path / "masks"), "-m", str(package.package)]) == 1
    )
    assert "the output is a file" in capsys.readouterr().err
    weights = str(package.package / "model.pt")
    assert main(["predict", str(dataset / "imagesTs"), str(tmp_path / "out"), "-m", weights]) == 1
    assert f"did you mean its folder {package.package}" in capsys.readouterr().err
