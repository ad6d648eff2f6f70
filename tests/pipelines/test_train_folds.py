"""k-fold training: disjoint seeded splits, one plan, a package per fold, OUT an ensemble package."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from tiny_package import TINY_TRAINING, make_package, write_sphere_dataset

import medattn
from medattn.cli.main import main
from medattn.errors import ConfigError
from medattn.io.discovery import Case
from medattn.package import is_ensemble, package_members, read_config
from medattn.pipelines.train_options import TrainOptions
from medattn.pipelines.train_plan import split_cases

CASES = 5
TINY = {**TINY_TRAINING, "epochs": 1, "steps_per_epoch": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """nnU-Net layout: five labelled sphere scans."""
    return write_sphere_dataset(tmp_path_factory.mktemp("Dataset002_Folds"), CASES)


@pytest.fixture(scope="module")
def two_folds(dataset, tmp_path_factory):
    """`medattn.train(..., folds=2)` and the folds its epoch callback saw."""
    seen = []
    out = tmp_path_factory.mktemp("cv") / "run"
    result = medattn.train(dataset, out=out, folds=2, on_epoch_end=lambda s: seen.append(s["fold"]), **TINY)
    return result, seen


@pytest.mark.parametrize("folds", [2, 3, 5, 11])
def test_fold_splits_are_disjoint_complete_and_fixed_by_the_seed(folds):
    cases = [Case(f"c{index:02d}", [Path(f"c{index:02d}.nii.gz")]) for index in range(11)]
    ids = {case.id for case in cases}
    splits = [split_cases(cases, 0.2, f"{k}/{folds}", seed=3) for k in range(folds)]
    validated = [case for _, val in splits for case in val]
    assert sorted(validated) == sorted(ids)  # every case validates in exactly one fold
    assert {len(val) for _, val in splits} <= {11 // folds, -(-11 // folds)}
    for train_ids, val in splits:
        assert val and set(train_ids) == ids - set(val)
    assert splits == [split_cases(cases, 0.5, f"{k}/{folds}", seed=3) for k in range(folds)]
    if folds < 11:
        assert splits != [split_cases(cases, 0.2, f"{k}/{folds}", seed=4) for k in range(folds)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"folds": 2, "fold": "0/2"}, "--folds 2 trains every fold, --fold 0/2 one of them"),
        ({"folds": 1}, "--folds takes 2 or more, got 1"),
        ({"folds": 0}, "--folds takes 2 or more, got 0"),
        ({"fold": "2/2"}, "need 0 <= K < N and N >= 2"),
        ({"fold": "0/1"}, "need 0 <= K < N and N >= 2"),
        ({"fold": "first"}, "--fold takes K/N like 0/5"),
    ],
)
def test_wrong_fold_options_are_refused_before_any_work(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainOptions(**options)


def test_folds_and_fold_together_are_one_line_cli_error(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(dataset), "--out", str(out), "--folds", "2", "--fold", "1/2"]) == 1
    assert "give one of the two" in capsys.readouterr().err
    assert not out.exists()


def test_more_folds_than_cases_is_refused(dataset, tmp_path):
    with pytest.raises(ConfigError, match=f"6 folds but {CASES} training cases"):
        medattn.train(dataset, out=tmp_path / "run", folds=6, **TINY)
    assert not (tmp_path / "run" / "fold_0").exists()


def test_a_single_model_package_is_not_turned_into_an_ensemble(dataset, tmp_path):
    single = make_package(tmp_path / "single")
    with pytest.raises(ConfigError, match="holds a single model package"):
        medattn.train(dataset, out=single, folds=2, **TINY)
    assert not is_ensemble(single)


def test_folds_train_one_package_per_fold_from_one_plan_and_make_an_ensemble(two_folds):
    result, seen = two_folds
    out = result.package
    assert result.run == out and sorted(set(seen)) == [0, 1]
    assert [fold.package for fold in result.folds] == [out / "fold_0", out / "fold_1"]
    assert result.epochs == 2 and result.stopped_by == "epochs"
    scores = [fold.best_metric for fold in result.folds]
    assert result.best_metric == pytest.approx(sum(scores) / 2)
    assert is_ensemble(out) and package_members(out) == [out / "fold_0", out / "fold_1"]
    assert json.loads((out / "medattn.json").read_text())["folds"] == 2
    shared = json.loads((out / "plan.json").read_text())
    assert shared["folds"] == 2 and len(shared["splits"]) == 2
    validated = []
    for k, fold in enumerate(result.folds):
        for name in ("plan.json", "train_options.json", "metrics.csv", "checkpoint_last.pt", "model.pt"):
            assert (fold.package / name).is_file(), name
        plan = json.loads((fold.package / "plan.json").read_text())
        assert plan["split"] == shared["splits"][k] and plan["plan"] == shared["plan"]
        assert read_config(fold.package).training["split"] == plan["split"]
        options = json.loads((fold.package / "train_options.json").read_text())
        assert (options["fold"], options["folds"]) == (f"{k}/2", None)
        validated += plan["split"]["val"]
    assert sorted(validated) == [f"s_{index:03d}" for index in range(CASES)]


def test_max_time_is_each_folds(dataset, tmp_path):
    """Every fold trains under its own --max-time (the first one's includes the shared planning)."""
    started = time.perf_counter()
    result = medattn.train(
        dataset, out=tmp_path / "run", folds=2, **{**TINY, "epochs": 10_000, "max_time": 4.0}
    )
    took = time.perf_counter() - started
    assert [fold.stopped_by for fold in result.folds] == ["max_time", "max_time"]
    assert result.stopped_by == "max_time" and 1.5 * 4.0 < took < 2 * 4.0 + 10.0


def test_resume_skips_finished_folds_and_trains_the_unfinished_one(two_folds, dataset, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_folds[0].package, out)
    (out / "fold_1" / "medattn.json").unlink()  # fold 1 was cut off before its package was written
    kept = (out / "fold_0" / "model.pt").stat().st_mtime_ns
    result = medattn.train(dataset, out=out, folds=2, resume=True, **TINY)
    assert (out / "fold_0" / "model.pt").stat().st_mtime_ns == kept
    assert [fold.package for fold in result.folds] == [out / "fold_0", out / "fold_1"]
    assert result.folds[0].history == [] and result.folds[0].epochs == 1  # read from its package
    assert result.folds[1].history and read_config(out / "fold_1").training["epochs"] == 1
    assert package_members(out) == [out / "fold_0", out / "fold_1"]
    with pytest.raises(ConfigError, match="split into 2 folds here, not 3"):
        medattn.train(dataset, out=out, folds=3, resume=True, **TINY)


def test_one_fold_per_job_adds_its_fold_to_the_ensemble(dataset, tmp_path, capsys):
    """`--fold K/N` jobs (a cluster's): each trains OUT/fold_K from the one OUT/plan.json and lists every
    finished fold in OUT's ensemble package."""
    out = tmp_path / "run"
    args = ["train", str(dataset), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1"]
    args += ["--patch", "16,16,16", "--batch", "2", "--device", "cpu", "--num-workers", "0"]
    args += ["--model-kwargs", '{"base_channels": 4, "depth": 2}']
    assert main([*args, "--fold", "1/2"]) == 0
    assert "ensemble package" in capsys.readouterr().out
    assert package_members(out) == [out / "fold_1"] and not (out / "fold_0").exists()
    assert json.loads((out / "medattn.json").read_text())["folds"] == 2
    shared = (out / "plan.json").read_text()
    assert main([*args, "--fold", "0/2"]) == 0
    assert (out / "plan.json").read_text() == shared  # the plan was made once
    assert package_members(out) == [out / "fold_0", out / "fold_1"]
    splits = json.loads(shared)["splits"]
    for k in (0, 1):
        assert json.loads((out / f"fold_{k}" / "plan.json").read_text())["split"] == splits[k]
    assert main([*args, "--fold", "0/3"]) == 1
    assert "split into 2 folds here, not 3" in capsys.readouterr().err
