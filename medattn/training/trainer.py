"""The training loop: mixed precision, clipping, validation, checkpoints, exact resume, DDP, time limit."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from medattn.device import autocast, needs_grad_scaler, resolve_amp
from medattn.errors import ConfigError, MedattnError
from medattn.training import distributed
from medattn.training.checkpoint import (
    capture_rng_state,
    copy_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from medattn.training.config import TrainerConfig
from medattn.training.logging import MetricsLogger
from medattn.training.multiscale import rescale_batch
from medattn.training.schedules import scheduled_steps, set_time_progress
from medattn.training.seeding import epoch_batches, epoch_seed, seed_epoch

LAST_CHECKPOINT = "checkpoint_last.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"


@dataclass
class TrainResult:
    """What `Trainer.fit` did, counted over the whole run (resumed sessions included).

    Attributes:
        epochs: epochs run; one cut short by `max_time` counts.
        steps: optimiser steps.
        best_metric: best value of the key metric, None when no validation ran.
        best_epoch: the epoch it was reached.
        best_checkpoint: ``checkpoint_best.pt``, None when no validation ran.
        last_checkpoint: ``checkpoint_last.pt``.
        history: one dict per epoch, as in ``metrics.csv``.
        stopped_by: ``"epochs"`` or ``"max_time"``.
        seconds: wall time of the run (seconds).
    """

    epochs: int
    steps: int
    best_metric: float | None
    best_epoch: int | None
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str = "epochs"
    seconds: float = 0.0


class Trainer:
    """Train a segmentation network on batches ``{"image": (B, C, *sp), "label": (B, 1, *sp)}``.

    Reproducibility and resume: at the start of every epoch Python's, NumPy's and torch's generators
    (``monai.utils.set_determinism``), the MONAI random transforms of an in-process loader
    (``num_workers=0``, via ``set_rnd``), the loader's own generator and the sampler's epoch are all set
    from (seed, epoch, rank) (see `medattn.training.seeding`). Data order and augmentation therefore
    depend only on the epoch, not on how many epochs this process has run, and a run resumed from
    ``checkpoint_last.pt`` reaches bit-identical weights on CPU (on CUDA as far as the kernels are
    deterministic). DataLoader workers derive their seeds from torch's generator when the epoch's iterator
    starts, and MONAI's DataLoader reseeds each worker's transforms from it; use ``monai.data.DataLoader``
    and keep ``persistent_workers=False`` (persistent workers carry their random state across epochs, so a
    resumed run would differ). The checkpoint also stores every RNG state, and `resume` restores them.

    Checkpoints (only the process of rank 0 writes files and calls the callbacks): ``checkpoint_last.pt``
    after every epoch and ``checkpoint_best.pt`` when the key metric improves, both atomic and loadable with
    ``torch.load(..., weights_only=True)``; the model weights are those of the bare network (no
    ``module.`` prefix). ``metrics.csv`` and TensorBoard events are written beside them.

    Args:
        network: the model; in train mode it may return a list of deep-supervision logits. It is moved to
            the device and wrapped in DistributedDataParallel when the process group has several processes.
            A network with ``training_prompts(labels)`` (the SAM family) is called as
            ``network(image, **training_prompts(labels))``, e.g. with boxes from each label patch.
        loss: called as ``loss(outputs, labels)``; a network's ``auxiliary_loss()`` (MSGA) is added to it.
        optimizer: built on the network's parameters.
        scheduler: stepped after every optimiser step, or None.
        config: the run's settings (out_dir, device, amp, epochs, max_time...; see `TrainerConfig`).
        validate_fn: called as ``validate_fn(network)`` with the bare network in eval mode under
            ``torch.no_grad()`` on rank 0; returns metric name -> value (e.g. ``{"val_dice": 0.8}``).
        on_step: display callback after every step (rank 0): epoch, epochs, step, epoch_step,
            steps_per_epoch, loss, lr, elapsed (seconds).
        on_epoch_end: display callback after every epoch (rank 0): the epoch's row plus epochs, elapsed,
            best_metric and is_best.
    """

    def __init__(
        self,
        network: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        config: TrainerConfig,
        validate_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.config = config
        self.device = torch.device(config.device)
        self.autocast_dtype = resolve_amp(config.amp, self.device)
        # `model` runs the forward (it may be torch.compile'd); `network` is the bare module that is saved,
        # validated and asked for attention maps or auxiliary losses.
        self.model: nn.Module = network.to(self.device)
        self.network = unwrap_model(network)
        if distributed.world_size() > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = torch.amp.GradScaler("cuda") if needs_grad_scaler(self.autocast_dtype) else None
        self.validate_fn = validate_fn
        self.on_step = on_step
        self.on_epoch_end = on_epoch_end
        self.is_main = distributed.rank() == 0
        if config.scale_rates and getattr(self.network, "fixed_input_size", None) is not None:
            raise ConfigError(
                f"multi-scale training resizes the patch, but {type(self.network).__name__} has a fixed "
                f"input size {tuple(self.network.fixed_input_size)}; train it without scale rates "
                "(--no-multi-scale)"
            )
        # Counters of the whole run; `resume` restores them.
        self.epoch = 0
        self.step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        # Seconds spent validating so far, and what the last validation took: the time kept back for the
        # closing validation under `max_time`.
        self.validation_seconds = 0.0
        self.last_validation_seconds = 0.0
        self._session_start = time.perf_counter()
        if config.resume_from is not None:
            self.resume(config.resume_from)

    @property
    def last_checkpoint(self) -> Path:
        """``out_dir/checkpoint_last.pt``, written after every epoch."""
        return self.config.out_dir / LAST_CHECKPOINT

    @property
    def best_checkpoint(self) -> Path:
        """``out_dir/checkpoint_best.pt``, written when the key metric improves."""
        return self.config.out_dir / BEST_CHECKPOINT

    def elapsed(self) -> float:
        """Wall time of the run so far (seconds), earlier sessions included."""
        return self.elapsed_before + time.perf_counter() - self._session_start

    def resume(self, path: str | Path) -> Trainer:
        """Continue from a checkpoint: weights, optimiser, scheduler, scaler, counters, history and RNGs."""
        state = load_checkpoint(path)
        try:
            self.network.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise MedattnError(
                f"the checkpoint does not fit this network or optimiser ({str(error).splitlines()[0]}); "
                "resume with the model, options and optimiser the run started with",
                path,
            ) from error
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_metric, self.best_epoch = state.get("best_metric"), state.get("best_epoch")
        self.history = [dict(row) for row in state.get("history", [])]
        self.elapsed_before = float(state.get("elapsed_seconds", 0.0))
        self.validation_seconds = float(state.get("validation_seconds", 0.0))
        self.last_validation_seconds = float(state.get("last_validation_seconds", 0.0))
        restore_rng_state(state["rng"])
        return self

    def fit(self, train_loader: Any) -> TrainResult:
        """Train until `epochs` (or `max_time`), validating and checkpointing; see the class docstring."""
        steps = self._steps_per_epoch(train_loader)
        covered, epochs = scheduled_steps(self.scheduler), self.config.epochs
        if covered is not None and covered < epochs * steps:
            raise ConfigError(
                f"the learning-rate schedule covers {covered} steps but the run has {epochs} epochs x "
                f"{steps} steps = {epochs * steps}; create it with total_steps={epochs * steps} "
                "(a resumed run keeps the schedule it started with: resume with the same epochs)"
            )
        logger = None
        if self.is_main:
            out_dir = self.config.out_dir
            out_dir.mkdir(parents=True, exist_ok=True)
            purge_step = self.epoch + 1 if self.epoch else None
            logger = MetricsLogger(out_dir, self.config.tensorboard, purge_step=purge_step)
        stopped_by = "epochs"
        self._session_start = time.perf_counter()
        try:
            # A resumed run whose budget is spent trains no further; within this call, time is checked
            # after every step and epoch, so the epoch that uses it up is always validated and saved.
            if self.epoch < self.config.epochs and self._out_of_time():
                stopped_by = "max_time"
            while self.epoch < self.config.epochs and stopped_by == "epochs":
                started = time.perf_counter()
                epoch = self.epoch + 1
                seed_epoch(
                    train_loader,
                    epoch_seed(self.config.seed, epoch, distributed.rank()),
                    deterministic=self.config.deterministic,
                )
                lr = float(self.optimizer.param_groups[0]["lr"])
                train_loss, out_of_time = self._train_epoch(train_loader, epoch, steps)
                out_of_time = out_of_time or self._out_of_time()
                if not math.isfinite(train_loss) and self.scaler is None:
                    raise MedattnError(
                        f"training diverged in epoch {epoch}: the mean loss is {train_loss}; lower the "
                        "learning rate or turn off mixed precision",
                        self.config.out_dir,
                    )
                self.epoch = epoch
                row: dict[str, Any] = {"epoch": epoch, "step": self.step, "train_loss": train_loss, "lr": lr}
                last = epoch == self.config.epochs or out_of_time
                due = epoch % self.config.validate_every == 0 and self._validation_affordable()
                metrics = self._validate() if (due or last) else {}
                row["seconds"] = round(time.perf_counter() - started, 3)
                row.update(metrics)
                if metrics:
                    row["validation_s"] = round(self.last_validation_seconds, 3)
                self.history.append(row)
                is_best = self._update_best(metrics, epoch)
                if self.is_main:
                    self._write(logger, is_best)
                    if self.on_epoch_end is not None:
                        info = {"epochs": self.config.epochs, "elapsed": self.elapsed(), "is_best": is_best}
                        self.on_epoch_end({**row, **info, "best_metric": self.best_metric})
                if out_of_time:
                    stopped_by = "max_time"
        finally:
            if logger is not None:
                logger.close()
        distributed.barrier()  # not on errors: the other processes may be waiting in a collective
        return TrainResult(
            epochs=self.epoch,
            steps=self.step,
            best_metric=self.best_metric,
            best_epoch=self.best_epoch,
            best_checkpoint=self.best_checkpoint if self.best_epoch is not None else None,
            last_checkpoint=self.last_checkpoint if self.last_checkpoint.exists() else None,
            history=list(self.history),
            stopped_by=stopped_by,
            seconds=self.elapsed(),
        )

    # -- one epoch ---------------------------------------------------------------------------------------

    def _steps_per_epoch(self, loader: Any) -> int:
        if self.config.steps_per_epoch is not None:
            return self.config.steps_per_epoch
        try:
            length = len(loader)
        except TypeError:
            raise ConfigError("the training loader has no length; give steps_per_epoch") from None
        if length < 1:
            raise ConfigError("the training loader yields no batch: the training set is empty or too small")
        return length

    def _time_fraction(self) -> float:
        """The share of the wall-time budget spent (0 without one), counting the time kept back for the
        closing validation; the same number on every process."""
        if self.config.max_time is None:
            return 0.0
        spent = self.elapsed() + self.last_validation_seconds
        return distributed.max_over_processes(spent / self.config.max_time, self.device)

    def _validation_affordable(self) -> bool:
        """Whether validating now (at the last validation's cost) keeps validation within its share of the
        elapsed time; always without a time budget."""
        if self.config.max_time is None or self.validate_fn is None:
            return True
        expected = self.validation_seconds + self.last_validation_seconds
        too_costly = float(expected > self.config.validation_share * self.elapsed())  # only rank 0 validates
        return distributed.max_over_processes(too_costly, self.device) == 0.0

    def _out_of_time(self) -> bool:
        return self.config.max_time is not None and self._time_fraction() >= 1.0

    def _train_epoch(self, loader: Any, epoch: int, steps: int) -> tuple[float, bool]:
        """Train one epoch; returns the mean loss over steps and processes, and whether time ran out."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        done, out_of_time = 0, False
        for batch in epoch_batches(loader, epoch, steps):
            loss = self._train_step(batch)
            loss_sum += loss
            done += 1
            self.step += 1
            if self.on_step is not None and self.is_main:
                lr = float(self.optimizer.param_groups[0]["lr"])
                info = {"epoch": epoch, "epochs": self.config.epochs, "step": self.step, "epoch_step": done}
                self.on_step(
                    {
                        **info,
                        "steps_per_epoch": steps,
                        "loss": loss.item(),
                        "lr": lr,
                        "elapsed": self.elapsed(),
                    }
                )
            if self.config.max_time is not None:
                # Once per step (a collective under DDP): the stop below and the next step's learning rate.
                spent = self._time_fraction()
                if self.scheduler is not None:
                    set_time_progress(self.scheduler, spent)
                if done < steps and spent >= 1.0:
                    out_of_time = True
                    break
        return float(distributed.all_reduce_mean(loss_sum / done).item()), out_of_time

    def _train_step(self, batch: Any) -> torch.Tensor:
        """One batch: one optimiser step, or one per scale rate (multi-scale); returns the mean loss."""
        image, label = self._tensors(batch)
        divisor = getattr(self.network, "size_divisor", 1)
        losses = [
            self._optimiser_step(*rescale_batch(image, label, rate, divisor))
            for rate in self.config.scale_rates or (1.0,)
        ]
        if self.scheduler is not None:
            self.scheduler.step()
        return losses[0] if len(losses) == 1 else torch.stack(losses).mean()

    def _optimiser_step(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        # Prompted models (the SAM family) train with prompts made from each label patch (MedSAM's boxes).
        make_prompts = getattr(self.network, "training_prompts", None)
        prompts = make_prompts(label) if callable(make_prompts) else {}
        with autocast(self.device, self.autocast_dtype):
            outputs = self.model(image, **prompts)
            loss = self.loss(outputs, label)
            auxiliary = getattr(self.network, "auxiliary_loss", None)
            extra = auxiliary() if callable(auxiliary) else None
            if extra is not None:
                loss = loss + extra
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self._clip()
            self.optimizer.step()
        return loss.detach().float()

    def _clip(self) -> None:
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)

    def _tensors(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Image and label of a batch as plain tensors on the device (MetaTensor bookkeeping costs time)."""
        if not isinstance(batch, dict) or "image" not in batch or "label" not in batch:
            keys = list(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ConfigError(f"training batches must be dicts with 'image' and 'label'; got {keys}")
        tensors = []
        for key in ("image", "label"):
            value = batch[key]
            if isinstance(value, MetaTensor):
                value = value.as_tensor()
            tensors.append(value.to(self.device, non_blocking=True))
        return tensors[0], tensors[1]

    # -- validation and checkpoints ----------------------------------------------------------------------

    def _validate(self) -> dict[str, float]:
        """Run `validate_fn` on rank 0; other processes wait at a barrier."""
        metrics: dict[str, float] = {}
        if self.validate_fn is not None and self.is_main:
            started = time.perf_counter()
            self.network.eval()
            with torch.no_grad():
                metrics = {str(k): float(v) for k, v in self.validate_fn(self.network).items()}
            self.network.train()
            key = self.config.key_metric
            if key not in metrics:
                raise ConfigError(
                    f"validation returned {sorted(metrics)} but the key metric is {key!r}; "
                    "return it or choose one of those as key_metric"
                )
            self.last_validation_seconds = time.perf_counter() - started
            self.validation_seconds += self.last_validation_seconds
        distributed.barrier()
        return metrics

    def _update_best(self, metrics: dict[str, float], epoch: int) -> bool:
        value = metrics.get(self.config.key_metric)
        if value is None or not math.isfinite(value):
            return False
        better = self.best_metric is None or (
            value > self.best_metric if self.config.key_metric_mode == "max" else value < self.best_metric
        )
        if better:
            self.best_metric, self.best_epoch = value, epoch
        return better

    def _write(self, logger: MetricsLogger | None, is_best: bool) -> None:
        save_checkpoint(self._state(), self.last_checkpoint)
        if is_best:
            copy_checkpoint(self.last_checkpoint, self.best_checkpoint)
        if logger is not None:
            logger.write(self.history)

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "key_metric": self.config.key_metric,
            "history": self.history,
            "elapsed_seconds": self.elapsed(),
            "validation_seconds": self.validation_seconds,
            "last_validation_seconds": self.last_validation_seconds,
            "seed": self.config.seed,
            "rng": capture_rng_state(),
        }
