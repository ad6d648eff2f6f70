"""What a training run trains from: its cases, their split, the fingerprint, the plan, the network's options.

Computed once from every labelled case and saved as the run's plan.json, then read back on resume so nothing
drifts; k-fold training (`medattn.pipelines.train_folds`) plans once and gives each fold its own split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from medattn.errors import ConfigError
from medattn.io import discover
from medattn.io.atomic import atomic_path
from medattn.io.discovery import Case, Dataset
from medattn.models.backbones import package_options
from medattn.models.registry import network_defaults
from medattn.pipelines.train_options import TrainOptions, parse_fold
from medattn.plan import Fingerprint, Plan, fingerprint_dataset, make_plan


class Prepared(NamedTuple):
    """What a run trains from, saved as its plan.json: the cases, the split, fingerprint, plan and the
    network's options."""

    cases: list[Case]
    split: dict[str, list[str]]
    fingerprint: Fingerprint
    plan: Plan
    model_kwargs: dict[str, Any]

    def save(self, path: Path) -> None:
        state = {"split": self.split, "fingerprint": self.fingerprint.to_dict(), "plan": self.plan.to_dict()}
        write_json(path, {**state, "model_kwargs": self.model_kwargs})


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON at `path`, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def split_cases(
    cases: list[Case], val_fraction: float, fold: str | None, seed: int
) -> tuple[list[str], list[str]]:
    """Train/validation ids: a seeded shuffle, then either the last fraction or fold K of N (`fold` "K/N").

    The folds of one seed are disjoint and together hold every case: fold K validates on every N-th case of
    the shuffle from the K-th, so their sizes differ by at most one.
    """
    ids = sorted(case.id for case in cases)
    order = list(np.random.default_rng(seed).permutation(len(ids)))
    shuffled = [ids[i] for i in order]
    if fold:
        k, n = parse_fold(fold)
        if n > len(ids):
            raise ConfigError(
                f"{n} folds but {len(ids)} training cases: each fold validates on at least one case, so "
                f"choose at most {len(ids)} folds"
            )
        val = shuffled[k::n]
    else:
        count = max(1, round(len(ids) * val_fraction)) if len(ids) > 1 and val_fraction > 0 else 0
        val = shuffled[len(ids) - count :]
    return [i for i in ids if i not in val], sorted(val)


def labelled_cases(data: Path) -> tuple[Dataset, list[Case]]:
    """The discovered dataset and its labelled training cases (a test subset is not trained on)."""
    dataset = discover(data)
    cases = [case for case in dataset if case.label is not None and case.subset != "test"]
    if not cases:
        raise ConfigError(
            "no labelled training cases found (need imagesTr+labelsTr or images/+labels/)", data
        )
    return dataset, cases


def prepare(data: Path, out: Path, options: TrainOptions, progress, write: bool = True) -> Prepared:
    """Split, fingerprint, plan and network options — computed once, then read back on resume so nothing
    drifts (a run resumed on another device keeps the network it started with)."""
    saved = out / "plan.json"
    if options.resume and saved.is_file():
        state = json.loads(saved.read_text())
        return Prepared(
            labelled_cases(data)[1],
            state["split"],
            Fingerprint.from_dict(state["fingerprint"]),
            Plan.from_dict(state["plan"]),
            state.get("model_kwargs", options.model_kwargs),
        )
    cases, fingerprint, plan, model_kwargs = plan_training(data, options, progress)
    train_ids, val_ids = split_cases(cases, options.val_fraction, options.fold, options.seed)
    prepared = Prepared(cases, {"train": train_ids, "val": val_ids}, fingerprint, plan, model_kwargs)
    if write:
        prepared.save(saved)
    return prepared


def plan_training(
    data: Path, options: TrainOptions, progress
) -> tuple[list[Case], Fingerprint, Plan, dict[str, Any]]:
    """The cases to train on, their fingerprint, the plan and the network's options, from every labelled
    case under `data` (cases the fingerprint excludes as unreadable or off-grid are left out)."""
    dataset, cases = labelled_cases(data)
    fingerprint = fingerprint_dataset(cases, progress=progress, seed=options.seed)
    cases = [case for case in cases if case.id not in fingerprint.excluded]
    from medattn.device import resolve_device
    from medattn.models import create

    # Patch sides must be multiples of the network's down-sampling factor: ask a throwaway instance.
    device_type = resolve_device(options.device).type
    pretrained = options.model_kwargs.get("backbone_weights") is not None
    model_kwargs = {**network_defaults(options.model, device_type, pretrained), **options.model_kwargs}
    # (without pretrained weights: only the shape of the network matters here)
    probe = create(
        options.model, fingerprint.spatial_dims, fingerprint.channels, 2, **package_options(model_kwargs)
    )
    plan = make_plan(
        fingerprint,
        labels=dataset.labels,
        device=device_type,
        divisor=int(getattr(probe, "size_divisor", 16)),
        spacing=options.spacing,
        patch_size=options.patch,
        batch_size=options.batch,
        preset=options.preset,
    )
    return cases, fingerprint, plan, model_kwargs
