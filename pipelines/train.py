"""Train a model on a folder of labelled scans and leave a model package behind.

discover -> split, fingerprint and plan (saved; `medattn.pipelines.train_plan`) -> MONAI CacheDataset
(files read once) with class- and size-aware patch sampling -> Trainer (Dice + CE with deep supervision,
AdamW/SGD, poly or cosine) with sliding-window validation every epoch -> model package in the run folder.
Every choice is saved in the run folder; `resume=True` continues from the last checkpoint with the saved
plan and split. k-fold training (`folds=N`, `fold="K/N"`) runs this once per fold:
`medattn.pipelines.train_folds`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from medattn.errors import ConfigError
from medattn.io.discovery import Case
from medattn.package import PackageConfig, save_package
from medattn.pipelines.train_options import TrainOptions
from medattn.pipelines.train_plan import Prepared, prepare, write_json
from medattn.plan import default_steps_per_epoch, lesion_labels


@dataclass
class RunResult:
    """What a training run produced: the package folder and the best validation score.

    For k-fold training, the ensemble: `run` and `package` are OUT, `folds` holds one RunResult per fold
    the ensemble package lists (in fold order), `best_metric` is the mean of their best validation Dice
    (the cross-validation score), `epochs` their epochs added up, `stopped_by` "max_time" if any fold
    stopped by it; a fold found finished (resume, or trained by another job) has the epochs, best metric
    and stop reason its package records, and no history.
    """

    run: Path
    package: Path
    best_metric: float | None
    epochs: int
    stopped_by: str
    history: list[dict] = field(default_factory=list)
    trainable_parameters: int = 0
    frozen_parameters: int = 0  # e.g. a SAM encoder kept fixed while adapters train
    folds: list[RunResult] = field(default_factory=list)


def _items(cases: list[Case], ids: list[str]) -> list[dict]:
    chosen = {case.id: case for case in cases}
    items = []
    for case_id in ids:
        case = chosen[case_id]
        image = case.images if case.dicom or len(case.images) > 1 else case.images[0]
        items.append({"image": image, "label": case.label, "id": case_id})
    return items


def default_workers(device_type: str) -> int:
    """Data-loader processes that prepare batches beside the training step.

    On CUDA the step runs on the GPU, so the cores can all prepare batches: one fewer than the cores, at
    most 8. On CPU the step itself wants every core, and augmenting a patch is small beside a step: a worker
    there mostly competes with the step's threads and slows it on 2 cores (BENCHMARKS.md, training
    steps/s). So CPU gets one worker per 4 cores, at most 4: none on a 2-core laptop.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device_type == "cuda":
        return max(0, min(8, cores - 1))
    return min(4, cores // 4)


def _dataset(items: list[dict], transform, cache: str, cache_dir: Path, num_workers: int | None):
    from monai.data import CacheDataset, Dataset, PersistentDataset

    if cache == "memory":
        return CacheDataset(
            items, transform, cache_rate=1.0, num_workers=max(num_workers or 0, 1), progress=False
        )
    if cache == "disk":
        return PersistentDataset(items, transform, cache_dir=cache_dir)
    if cache == "none":
        return Dataset(items, transform)
    raise ConfigError(f"unknown --cache {cache!r}; use memory, disk or none")


def train(
    data: str | Path,
    model: str | None = None,
    out: str | Path = "runs/medattn",
    *,
    options: TrainOptions | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    progress: Callable | None = None,
    **changes: Any,
) -> RunResult:
    """Train `model` on the labelled cases under `data`; the run folder ends as a model package.

    Args:
        data: a folder in any layout `medattn.io.discover` knows, with labels.
        model: a registry name (`medattn.models.available()`); default: the options' (agunet).
        out: the run folder: plan.json, train_options.json, metrics.csv, checkpoints, model.pt,
            medattn.json (the last two make it a model package). With ``folds=N`` or ``fold="K/N"``, an
            ensemble package: plan.json shared by the folds, one run folder per fold (fold_0, ...) and a
            medattn.json listing the finished folds (`medattn.pipelines.train_folds`).
        on_step, on_epoch_end: display callbacks (the CLI's progress bar); nothing is printed otherwise.
            In k-fold training their stats also hold ``"fold"``.
        progress: wraps the fingerprinting loop to show progress.
        options: the settings (`medattn.pipelines.train_options.TrainOptions`, where each field's help says
            what it does); default: TrainOptions().
        **changes: fields of TrainOptions as keyword arguments, applied over `options` (``epochs=10``).

    Returns:
        The run's RunResult; for k-fold training the ensemble's, with one RunResult per fold in `folds`.

    Example:
        >>> result = medattn.train("Dataset001", out="runs/cv", folds=5, max_time=3600)  # doctest: +SKIP
        >>> [fold.package.name for fold in result.folds]  # doctest: +SKIP
        ['fold_0', 'fold_1', 'fold_2', 'fold_3', 'fold_4']
    """
    started = time.perf_counter()
    if model is not None:
        changes["model"] = model
    settings = TrainOptions(**changes) if options is None else replace(options, **changes)
    if settings.folds is not None or settings.fold is not None:
        from medattn.pipelines.train_folds import train_folds

        callbacks = {"on_step": on_step, "on_epoch_end": on_epoch_end}
        return train_folds(Path(data), Path(out), settings, started=started, progress=progress, **callbacks)
    from medattn.device import resolve_device
    from medattn.training import init_distributed

    out = Path(out)
    # Under torchrun every process trains on its share; only rank 0 writes files (the Trainer agrees).
    write = init_distributed(resolve_device(settings.device)).is_main
    if write:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_options.json", asdict(settings))
    prepared = prepare(Path(data), out, settings, progress, write=write)
    return train_prepared(
        prepared, out, settings, started=started, on_step=on_step, on_epoch_end=on_epoch_end
    )


def train_prepared(
    prepared: Prepared,
    out: Path,
    settings: TrainOptions,
    *,
    started: float,
    on_step: Callable[[dict], None] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> RunResult:
    """Train from a prepared split and plan in `out` (its train_options.json and plan.json written) and
    leave a model package there; `started` (`time.perf_counter()`) is when `settings.max_time` began."""
    import torch
    from monai.data import DataLoader
    from monai.transforms import Compose
    from torch.utils.data import RandomSampler

    from medattn.device import resolve_amp, resolve_device
    from medattn.models import create, describe
    from medattn.models.backbones import package_options
    from medattn.models.base import compiled
    from medattn.training import (
        Trainer,
        TrainerConfig,
        create_optimizer,
        create_scheduler,
        distributed_sampler,
        init_distributed,
    )
    from medattn.training.checkpoint import load_checkpoint
    from medattn.training.validation import make_prompted_validate_fn, make_validate_fn
    from medattn.transforms import augmentation, preprocessing

    context = init_distributed(resolve_device(settings.device))  # the group `train` joined
    device = context.device
    cases, split, fingerprint, plan, model_kwargs = prepared
    spec = describe(settings.model)
    deep_supervision = settings.deep_supervision and spec.deep_supervision
    torch.manual_seed(settings.seed)  # the same seed gives the same initial weights, hence the same run
    network = create(
        settings.model,
        plan.spatial_dims,
        plan.in_channels,
        plan.num_classes,
        deep_supervision=deep_supervision,
        **model_kwargs,
    )
    pre = preprocessing(plan)
    lesion_values = lesion_labels(plan, fingerprint.label_volumes_ml)
    sampling = augmentation(plan, settings.seed, lesion_values, settings.lesion_patches)
    train_set = _dataset(
        _items(cases, split["train"]),
        Compose(pre + sampling),
        settings.cache,
        out / "cache",
        settings.num_workers,
    )
    workers = default_workers(device.type) if settings.num_workers is None else settings.num_workers
    # Under DDP each process passes over its share; one pass is at most len(train_set) // world batches.
    share = len(train_set) // (context.world_size if context.enabled else 1)
    steps = settings.steps_per_epoch or default_steps_per_epoch(max(1, share // plan.batch_size), device.type)
    if context.enabled:
        sampler = distributed_sampler(train_set, shuffle=True, seed=settings.seed)
    else:
        # One pass of the loader is one epoch (cases drawn with replacement, as nnU-Net samples): worker
        # processes start once per epoch, not once per pass over a small training set.
        sampler = RandomSampler(train_set, replacement=True, num_samples=steps * plan.batch_size)
    loader = DataLoader(
        train_set,
        batch_size=plan.batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=len(train_set) >= plan.batch_size,
    )
    val_items = [Compose(pre)(item) for item in _items(cases, split["val"])]
    amp_dtype = resolve_amp(settings.amp, device)
    validate = (
        make_validate_fn(
            val_items,
            plan,
            lesion_values,
            device=device,
            amp_dtype=amp_dtype,
        )
        if val_items
        else None
    )
    if val_items and getattr(network, "accepts_prompts", False):
        # The SAM family is scored as it is used: with box prompts (here from the reference masks).
        validate = make_prompted_validate_fn(val_items, plan, device=device, amp_dtype=amp_dtype)
    loss = training_loss(settings, network, plan.num_classes, lesion_values, deep_supervision)
    optimizer = create_optimizer(network.parameters(), settings.optimizer, lr=settings.lr)
    scheduler = create_scheduler(optimizer, settings.schedule, total_steps=steps * settings.epochs)
    trainer = Trainer(
        # The Trainer saves and validates the module inside; batches keep one shape (drop_last, fixed
        # patches), so the steps compile once.
        compiled(network, settings.compile),
        loss,
        optimizer,
        scheduler,
        config=TrainerConfig(
            out_dir=out,
            device=device,
            amp=settings.amp,
            seed=settings.seed,
            epochs=settings.epochs,
            steps_per_epoch=steps,
            max_time=_training_budget(settings.max_time, time.perf_counter() - started, out),
            key_metric="val_dice",
            scale_rates=training_scales(settings),
        ),
        validate_fn=validate,
        on_step=on_step,
        on_epoch_end=on_epoch_end,
    )
    last = out / "checkpoint_last.pt"
    if settings.resume and last.is_file():
        trainer.resume(last)
    result = trainer.fit(loader)
    use_best = settings.weights == "best" and result.best_checkpoint is not None
    chosen = Path(result.best_checkpoint if use_best else result.last_checkpoint)
    weights = load_checkpoint(chosen)["model"]
    # model.pt holds every weight: the package must not point at the pretrained files it started from
    # (SAM's checkpoint, a backbone's), and ccsam's text embedding is stored as its numbers, not a file path.
    package_kwargs = package_options(model_kwargs)
    if isinstance(package_kwargs.get("text_embedding"), str):
        package_kwargs["text_embedding"] = network.text_embedding.flatten().tolist()
    package_kwargs["deep_supervision"] = False
    config = PackageConfig(
        model=settings.model,
        model_kwargs=package_kwargs,
        plan=plan,
        fingerprint=fingerprint.to_dict(),
        training={
            "epochs": result.epochs,
            "best_metric": result.best_metric,
            "stopped_by": result.stopped_by,
            "weights": "best" if use_best else "final",
            "seed": settings.seed,
            "device": str(device),
            "split": split,
        },
    )
    if context.is_main:
        save_package(out, _without_deep_supervision_heads(weights, config), config)
    trainable = network.parameter_count(trainable_only=True)
    return RunResult(
        out,
        out,
        result.best_metric,
        result.epochs,
        result.stopped_by,
        list(result.history),
        trainable_parameters=trainable,
        frozen_parameters=network.parameter_count() - trainable,
    )


def training_loss(
    settings: TrainOptions,
    network: Any,
    num_classes: int,
    lesion_values: list[int],
    deep_supervision: bool,
) -> Any:
    """The loss `train` optimises: ``--loss``, else the model's registered loss (dice_ce_blob where that is
    dice_ce), wrapped for deep supervision; a network with regions of its own (ratunet's `loss_regions`)
    gives them to the focal region loss after each forward."""
    from medattn.losses import DeepSupervisionLoss, create_loss
    from medattn.models import describe

    spec = describe(settings.model)
    name = settings.loss or ("dice_ce_blob" if spec.loss == "dice_ce" else spec.loss)
    loss = create_loss(
        name,
        num_classes=num_classes,
        lesion_values=lesion_values,
        regions=getattr(network, "loss_regions", None),
    )
    return DeepSupervisionLoss(loss, weights=spec.head_weights) if deep_supervision else loss


def training_scales(settings: TrainOptions) -> tuple[float, ...]:
    """The scale rates each batch is trained at: PraNet's with ``--multi-scale`` (by default for models
    registered with multi-scale training), else none."""
    from medattn.models import describe
    from medattn.training.multiscale import MULTI_SCALE_RATES

    on = describe(settings.model).multi_scale if settings.multi_scale is None else settings.multi_scale
    return MULTI_SCALE_RATES if on else ()


def _training_budget(max_time: float | None, prepared: float, out: Path) -> float | None:
    """What is left of `--max-time` for the Trainer once reading, fingerprinting and caching took `prepared`
    seconds: the budget is the whole run's, as a user timing the command would count it."""
    if max_time is None:
        return None
    if prepared >= max_time:
        raise ConfigError(
            f"--max-time {max_time:g} s was spent before training began (reading and caching the cases took "
            f"{prepared:.0f} s); give more time, or --cache disk to read the cases once across runs",
            out,
        )
    return max_time - prepared


def _without_deep_supervision_heads(weights: dict, config: PackageConfig) -> dict:
    """Keep only the weights the prediction network (deep supervision off) has."""
    from medattn.package import build_network

    wanted = build_network(config).state_dict().keys()
    return {k: v for k, v in weights.items() if k in wanted}
