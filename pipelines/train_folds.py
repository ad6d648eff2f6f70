"""k-fold training: one plan, N disjoint validation sets, a model package per fold, OUT an ensemble package.

OUT/plan.json holds what the folds share, made once from every training case: the fingerprint, the plan,
the network's options and every fold's split (`split_cases`: each case validates in exactly one fold).
Fold K trains in OUT/fold_K exactly as a single run does (`medattn.pipelines.train.train_prepared`: its own
plan.json with its split, train_options.json with ``fold="K/N"``, metrics.csv, checkpoints, model.pt,
medattn.json), under its own `--max-time`. After each fold OUT/medattn.json lists every fold folder that
holds a finished package (`medattn.package.save_ensemble`), so `medattn predict --model OUT` uses them all.

``fold="K/N"`` trains fold K alone, for one job per fold on a cluster: it takes the plan from OUT/plan.json
when an earlier job made it (else makes it; the plan is the same for the same data and options), and a
later job adds its fold to the ensemble package. With `resume`, finished folds are skipped and an
unfinished one continues from its checkpoint_last.pt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from medattn.errors import ConfigError, MedattnError
from medattn.package import CONFIG_NAME, WEIGHTS_NAME, is_ensemble, read_config, save_ensemble
from medattn.pipelines.train import RunResult, train_prepared
from medattn.pipelines.train_options import TrainOptions, parse_fold
from medattn.pipelines.train_plan import Prepared, labelled_cases, plan_training, split_cases, write_json
from medattn.plan import Fingerprint, Plan


def fold_folder(out: Path, fold: int) -> Path:
    """Where fold `fold` of a k-fold run in `out` trains: ``out/fold_K``."""
    return out / f"fold_{fold}"


def is_finished(folder: Path) -> bool:
    """Whether `folder` holds a finished model package (training writes model.pt and medattn.json last)."""
    if not (folder / WEIGHTS_NAME).is_file():
        return False
    try:
        read_config(folder)
    except MedattnError:
        return False
    return True


def train_folds(
    data: Path,
    out: Path,
    settings: TrainOptions,
    *,
    started: float,
    progress: Callable | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> RunResult:
    """Train every fold (``settings.folds``) or one (``settings.fold``) in `out` and list the finished folds
    in `out`'s ensemble package; the arguments are `medattn.pipelines.train.train`'s.

    Returns:
        The ensemble's RunResult (see `RunResult`): `out`, and one RunResult per fold it lists.

    Raises:
        ConfigError: `out` holds a single model package, or a k-fold plan for another number of folds; more
            folds than training cases.
    """
    from medattn.device import resolve_device
    from medattn.training import init_distributed

    if settings.folds is not None:
        count, chosen = settings.folds, list(range(settings.folds))
    else:
        fold, count = parse_fold(settings.fold)
        chosen = [fold]
    if (out / CONFIG_NAME).is_file() and not is_ensemble(out):
        raise ConfigError(
            "holds a single model package; k-fold training makes its --out an ensemble package of fold "
            "folders: choose another --out",
            out,
        )
    write = init_distributed(resolve_device(settings.device)).is_main  # only rank 0 writes files
    plans = _fold_plans(data, out, settings, count, progress, write)
    trained: dict[int, RunResult] = {}
    clock = started  # the first fold's --max-time includes the planning, as a single run's does
    for fold in chosen:
        folder = fold_folder(out, fold)
        if settings.resume and is_finished(folder):
            continue
        fold_settings = replace(settings, folds=None, fold=f"{fold}/{count}")
        if write:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / CONFIG_NAME).unlink(missing_ok=True)  # not listed as a member while it trains again
            write_json(folder / "train_options.json", asdict(fold_settings))
            plans[fold].save(folder / "plan.json")
        trained[fold] = train_prepared(
            plans[fold],
            folder,
            fold_settings,
            started=clock,
            on_step=_with_fold(on_step, fold),
            on_epoch_end=_with_fold(on_epoch_end, fold),
        )
        clock = time.perf_counter()
        if write:
            _list_finished(out, count)
    finished = _list_finished(out, count) if write else []
    return _ensemble_result(out, finished, trained)


def _fold_plans(
    data: Path, out: Path, settings: TrainOptions, count: int, progress, write: bool
) -> list[Prepared]:
    """Each fold's cases, split, fingerprint, plan and network options: read from OUT/plan.json when
    resuming or training one fold of several, else planned once from every training case (and saved)."""
    saved = out / "plan.json"
    if saved.is_file() and (settings.resume or settings.fold is not None):
        state = json.loads(saved.read_text())
        splits = state.get("splits")
        if not isinstance(splits, list):
            raise ConfigError(
                "is a single run's plan, not a k-fold run's: give the folds another --out", saved
            )
        if len(splits) != count:
            raise ConfigError(
                f"the cases were split into {len(splits)} folds here, not {count}: use --folds {len(splits)} "
                f"or --fold K/{len(splits)}, or another --out",
                saved,
            )
        cases = labelled_cases(data)[1]
        fingerprint, plan = Fingerprint.from_dict(state["fingerprint"]), Plan.from_dict(state["plan"])
        return [Prepared(cases, split, fingerprint, plan, state["model_kwargs"]) for split in splits]
    cases, fingerprint, plan, model_kwargs = plan_training(data, settings, progress)
    splits = []
    for fold in range(count):
        train_ids, val_ids = split_cases(cases, settings.val_fraction, f"{fold}/{count}", settings.seed)
        splits.append({"train": train_ids, "val": val_ids})
    if write:
        out.mkdir(parents=True, exist_ok=True)
        state = {"folds": count, "seed": settings.seed, "splits": splits}
        shared = {"fingerprint": fingerprint.to_dict(), "plan": plan.to_dict(), "model_kwargs": model_kwargs}
        write_json(saved, {**state, **shared})
    return [Prepared(cases, split, fingerprint, plan, model_kwargs) for split in splits]


def _with_fold(callback: Callable[[dict], None] | None, fold: int) -> Callable[[dict], None] | None:
    """`callback` receiving the fold's index in its stats as ``"fold"``."""
    if callback is None:
        return None
    return lambda stats: callback({**stats, "fold": fold})


def _list_finished(out: Path, count: int) -> dict[int, Path]:
    """Write `out`'s ensemble package listing every fold folder with a finished package; those folders."""
    finished = {k: fold_folder(out, k) for k in range(count) if is_finished(fold_folder(out, k))}
    if finished:
        save_ensemble(out, list(finished.values()), folds=count)
    return finished


def _ensemble_result(out: Path, finished: dict[int, Path], trained: dict[int, RunResult]) -> RunResult:
    folds = [
        trained.get(k) or _finished_result(finished[k]) for k in sorted(finished.keys() | trained.keys())
    ]
    scores = [fold.best_metric for fold in folds if fold.best_metric is not None]
    return RunResult(
        out,
        out,
        sum(scores) / len(scores) if scores else None,
        sum(fold.epochs for fold in folds),
        "max_time" if any(fold.stopped_by == "max_time" for fold in folds) else "epochs",
        trainable_parameters=max((fold.trainable_parameters for fold in folds), default=0),
        frozen_parameters=max((fold.frozen_parameters for fold in folds), default=0),
        folds=folds,
    )


def _finished_result(folder: Path) -> RunResult:
    """A finished fold's RunResult from what its package records (no history)."""
    training = read_config(folder).training
    return RunResult(
        folder,
        folder,
        training.get("best_metric"),
        int(training.get("epochs", 0)),
        str(training.get("stopped_by", "epochs")),
    )
