"""The Trainer's settings: the scalars of a run, checked when made (the objects it trains are arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from medattn.errors import ConfigError


@dataclass
class TrainerConfig:
    """How `medattn.training.Trainer` runs; the network, loss, optimiser, scheduler and callbacks are the
    Trainer's own arguments.

    Attributes:
        out_dir: the run folder (checkpoints, metrics.csv, TensorBoard events).
        device: where to train.
        amp: ``"auto"``, ``"bf16"``, ``"fp16"`` (with a GradScaler) or ``"off"``; bf16/fp16 on CUDA
            only (`medattn.device.resolve_amp`).
        seed: the run's seed.
        epochs: epochs of the whole run.
        steps_per_epoch: optimiser steps per epoch; None = one pass over the loader. More than one pass
            restarts the loader within the epoch.
        max_time: wall-time budget in seconds of the time spent in `fit` (training, validation, saving),
            resumed sessions included (the elapsed time is saved in the checkpoint). Checked after every
            step and epoch. The closing validation is budgeted too: training stops when the time left is what
            the previous validation took, so the run ends within about one step and one save of the limit,
            and the learning-rate schedule reaches its end at that stop.
        validate_every: validate every this many epochs, and always after the last epoch.
        validation_share: with `max_time`, the largest share of the elapsed time that validation may have
            taken: an epoch end whose validation (at the cost of the previous one) would exceed it is not
            validated, so a slow validation never eats the training budget. The last epoch is always
            validated.
        grad_clip: maximum gradient norm (nnU-Net: 12); None or 0 to not clip.
        key_metric: the validation metric that decides the best checkpoint.
        key_metric_mode: ``"max"`` (Dice) or ``"min"`` (a loss).
        resume_from: a checkpoint to continue from (same as calling `Trainer.resume`).
        tensorboard: also log to TensorBoard when it is installed.
        deterministic: keep cuDNN in deterministic mode (slower); by default cuDNN's benchmark flags are
            left as they were.
        find_unused_parameters: passed to DistributedDataParallel, for networks whose train-mode forward
            skips some parameters.
        scale_rates: multi-scale training (`medattn.training.multiscale`, PraNet's 0.75, 1, 1.25): every
            batch is trained at each of these rates of its size, one optimiser step per rate; a step of
            the run (``steps_per_epoch``, the learning-rate schedule) is still one batch. Empty: off.

    Raises:
        ConfigError: a count below 1, a time budget that is not positive, an unknown key_metric_mode, or a
            scale rate that is not positive.
    """

    out_dir: Path  # a str is taken as a path
    device: str | torch.device = "cpu"
    amp: str = "off"
    seed: int = 0
    epochs: int = 1
    steps_per_epoch: int | None = None
    max_time: float | None = None
    validate_every: int = 1
    validation_share: float = 0.1
    grad_clip: float | None = 12.0
    key_metric: str = "val_dice"
    key_metric_mode: str = "max"
    resume_from: str | Path | None = None
    tensorboard: bool = True
    deterministic: bool = False
    find_unused_parameters: bool = False
    scale_rates: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.out_dir, self.seed = Path(self.out_dir), int(self.seed)
        self.scale_rates = tuple(float(rate) for rate in self.scale_rates)
        if any(rate <= 0 for rate in self.scale_rates):
            raise ConfigError(f"scale_rates must be positive factors, got {self.scale_rates}")
        steps = self.steps_per_epoch
        if self.epochs < 1 or self.validate_every < 1 or (steps is not None and steps < 1):
            raise ConfigError(
                f"epochs, validate_every and steps_per_epoch must be >= 1, got {self.epochs}, "
                f"{self.validate_every}, {steps}"
            )
        if self.max_time is not None and self.max_time <= 0:
            raise ConfigError(f"max_time must be a positive number of seconds, got {self.max_time}")
        if self.key_metric_mode not in ("max", "min"):
            raise ConfigError(f"key_metric_mode must be 'max' or 'min', got {self.key_metric_mode!r}")
