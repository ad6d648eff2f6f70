"""Optimisers and learning-rate schedules by name: AdamW or nnU-Net's SGD; poly or cosine decay per step."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from medattn.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine")

# Defaults per optimiser: (learning rate, weight decay). SGD's are nnU-Net's; AdamW's the common 1e-3 start
# with PyTorch's default decoupled decay.
_DEFAULTS = {"adamw": (1e-3, 1e-2), "sgd": (1e-2, 3e-5)}


def create_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    name: str = "adamw",
    lr: float | None = None,
    weight_decay: float | None = None,
) -> torch.optim.Optimizer:
    """Build an optimiser by name.

    Args:
        params: the network's parameters (or parameter groups).
        name: ``"adamw"`` or ``"sgd"`` (momentum 0.99, Nesterov, as nnU-Net).
        lr: initial learning rate; None = 1e-3 for AdamW, 1e-2 for SGD.
        weight_decay: None = 1e-2 for AdamW (decoupled), 3e-5 for SGD (nnU-Net).

    Returns:
        The optimiser.

    Raises:
        ConfigError: unknown name or a negative rate.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")
    default_lr, default_decay = _DEFAULTS[name]
    lr = default_lr if lr is None else float(lr)
    weight_decay = default_decay if weight_decay is None else float(weight_decay)
    if lr <= 0 or weight_decay < 0:
        raise ConfigError(f"the learning rate must be > 0 and weight decay >= 0, got {lr} and {weight_decay}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class LRFactor:
    """The factor on the initial learning rate after `step` optimiser steps (LambdaLR's lambda).

    A class rather than a closure so LambdaLR saves its settings in ``state_dict`` (plain numbers, loadable
    with ``weights_only=True``). Warm-up rises linearly to 1 over `warmup_steps`; then ``poly`` decays as
    (1 - progress)^exponent and ``cosine`` as (1 + cos(pi progress)) / 2, progress running 0 -> 1 over the
    remaining steps; past `total_steps` the factor stays 0.

    A run with a wall-time budget does not know its step count in advance: the Trainer then sets
    `time_progress` (the fraction of the budget spent) before every step, and the decay follows whichever
    is further along, steps or time. A run stopped by time therefore ends at the bottom of its schedule,
    like one that ran all its steps, instead of stopping at a high learning rate.
    """

    def __init__(self, name: str, total_steps: int, warmup_steps: int = 0, exponent: float = 0.9):
        self.name = name
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.exponent = float(exponent)
        self.time_progress = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        progress = max(progress, min(1.0, self.time_progress))
        if self.name == "poly":
            return (1.0 - progress) ** self.exponent
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "poly",
    *,
    total_steps: int,
    warmup_steps: int = 0,
    exponent: float = 0.9,
) -> LambdaLR:
    """A learning-rate schedule stepped once per optimiser step (not per epoch, as nnU-Net does).

    Per step is smoother and does not depend on the epoch length, so a run cut into more, shorter epochs
    follows the same curve. Give ``total_steps = epochs * steps_per_epoch``; the Trainer checks it.

    Args:
        optimizer: the optimiser whose learning rate it drives.
        name: ``"poly"`` (nnU-Net, exponent 0.9) or ``"cosine"``.
        total_steps: optimiser steps of the whole run, warm-up included.
        warmup_steps: steps of linear warm-up from lr/warmup_steps to lr.
        exponent: the poly exponent.

    Returns:
        A `LambdaLR` with an `LRFactor`; ``scheduler.lr_lambdas[0].total_steps`` says how far it reaches.

    Raises:
        ConfigError: unknown name or inconsistent step counts.
    """
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; available: {', '.join(SCHEDULES)}")
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ConfigError(
            f"the schedule needs total_steps >= 1 and 0 <= warmup_steps < total_steps, got {total_steps} "
            f"and {warmup_steps}"
        )
    return LambdaLR(optimizer, LRFactor(name, total_steps, warmup_steps, exponent))


def scheduled_steps(scheduler: object) -> int | None:
    """How many steps a scheduler from `create_scheduler` covers; None for other schedulers."""
    factors = getattr(scheduler, "lr_lambdas", None) or []
    totals = [f.total_steps for f in factors if isinstance(f, LRFactor)]
    return min(totals) if totals else None


def set_time_progress(scheduler: object, fraction: float) -> None:
    """Tell the schedules of `scheduler` that `fraction` (0..1) of the run's wall-time budget is spent."""
    for factor in getattr(scheduler, "lr_lambdas", None) or []:
        if isinstance(factor, LRFactor):
            factor.time_progress = float(fraction)
