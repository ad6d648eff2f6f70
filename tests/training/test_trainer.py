"""The Trainer on tiny synthetic volumes: learning, logs, checkpoints, time limit, AMP and option checks."""

from __future__ import annotations

import csv
import time

import pytest
import torch
from monai.networks.nets import UNet
from training_data import augmented_dataset, dice_validator, loader, sphere_cases, tiny_unet

from medattn.device import needs_grad_scaler, resolve_amp
from medattn.errors import ConfigError, InputNotFoundError, MedattnError
from medattn.losses import DeepSupervisionLoss, create_loss
from medattn.training import (
    Trainer,
    TrainerConfig,
    create_optimizer,
    create_scheduler,
    load_checkpoint,
)


def _trainer(
    out_dir, network=None, epochs=3, steps=3, validate_fn=None, on_step=None, on_epoch_end=None, **config
):
    network = network or tiny_unet()
    optimizer = create_optimizer(network.parameters(), "adamw", lr=1e-2)
    scheduler = create_scheduler(optimizer, "poly", total_steps=epochs * steps)
    return Trainer(
        network,
        DeepSupervisionLoss(create_loss("dice_ce", num_classes=2)),
        optimizer,
        scheduler,
        config=TrainerConfig(out_dir=out_dir, epochs=epochs, steps_per_epoch=steps, **config),
        validate_fn=validate_fn,
        on_step=on_step,
        on_epoch_end=on_epoch_end,
    )


def test_training_learns_and_writes_logs_and_checkpoints(tmp_path):
    steps_seen, epochs_seen = [], []
    validate = dice_validator(sphere_cases(2, seed=9))
    untrained = validate(tiny_unet().eval())["val_dice"]
    trainer = _trainer(
        tmp_path,
        epochs=8,
        validate_fn=validate,
        validate_every=2,
        on_step=steps_seen.append,
        on_epoch_end=epochs_seen.append,
    )
    result = trainer.fit(loader(augmented_dataset()))

    losses = [row["train_loss"] for row in result.history]
    assert result.stopped_by == "epochs" and result.epochs == 8 and result.steps == 24
    assert losses[-1] < 0.8 * losses[0]
    assert result.best_metric > max(0.6, untrained + 0.3), (untrained, result.best_metric)  # it learned
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:7] == ["epoch", "step", "train_loss", "lr", "seconds", "val_dice", "val_voxels"]
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert [float(r["train_loss"]) for r in rows] == pytest.approx(losses)
    assert [r["val_dice"] != "" for r in rows] == [False, True] * 4  # every second epoch
    assert float(rows[1]["lr"]) > float(rows[-1]["lr"]) > 0  # poly decay

    last = load_checkpoint(result.last_checkpoint)
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert last["epoch"] == 8 and last["step"] == 24
    assert best["epoch"] == result.best_epoch and best["best_metric"] == result.best_metric
    assert result.best_metric == max(r["val_dice"] for r in result.history if "val_dice" in r)
    network = tiny_unet(seed=5)
    network.load_state_dict(last["model"])
    assert all(
        torch.equal(a, b)
        for a, b in zip(network.state_dict().values(), trainer.network.state_dict().values(), strict=True)
    )

    assert len(steps_seen) == 24 and steps_seen[-1]["step"] == 24 and steps_seen[-1]["steps_per_epoch"] == 3
    assert [e["epoch"] for e in epochs_seen] == list(range(1, 9))
    assert sum(e["is_best"] for e in epochs_seen) >= 1 and epochs_seen[-1]["epochs"] == 8


def test_max_time_stops_at_a_step_and_still_checkpoints(tmp_path):
    started = time.perf_counter()
    trainer = _trainer(
        tmp_path,
        epochs=50,
        max_time=1.0,
        on_step=lambda info: time.sleep(0.3),
        validate_fn=dice_validator(sphere_cases(1, seed=9)),
        validate_every=10,
    )
    result = trainer.fit(loader(augmented_dataset()))
    assert result.stopped_by == "max_time"
    assert time.perf_counter() - started < 20
    assert 1 <= result.steps <= 4  # every step takes >= 0.3 s, so the 4th ends past the limit
    state = load_checkpoint(result.last_checkpoint)
    assert (state["epoch"], state["step"]) == (result.epochs, result.steps)
    assert "val_dice" in result.history[-1]  # the cut-short epoch is still validated
    assert result.best_checkpoint is not None and result.best_checkpoint.exists()
    assert state["elapsed_seconds"] >= 1.0
    # The budget covers the whole run: resuming an exhausted run trains no further.
    again = _trainer(tmp_path, epochs=50, max_time=1.0, resume_from=result.last_checkpoint)
    assert again.fit(loader(augmented_dataset())).steps == result.steps


def test_validation_keeps_to_its_share_of_a_time_budget_and_the_closing_one_fits_in_it(tmp_path):
    """A validation that costs three steps' time may take 10 % of a timed run: most epochs go unvalidated,
    the last one is validated, and the time it takes is kept back, so the run still ends by max_time."""
    validate = dice_validator(sphere_cases(1, seed=9))

    def slow_validation(network):
        time.sleep(0.3)
        return validate(network)

    started = time.perf_counter()
    trainer = _trainer(
        tmp_path,
        epochs=1000,
        steps=1,
        max_time=4.0,
        on_step=lambda info: time.sleep(0.1),
        validate_fn=slow_validation,
    )
    result = trainer.fit(loader(augmented_dataset()))
    took = time.perf_counter() - started

    validated = [row for row in result.history if "val_dice" in row]
    spent = sum(row["validation_s"] for row in validated)
    assert result.stopped_by == "max_time"
    assert "val_dice" in result.history[-1] and len(validated) < len(result.history) / 3
    assert spent <= 0.1 * 4.0 + 0.3 + 0.3  # its share, the first validation and the closing one
    assert took < 4.0 + 0.5  # the closing validation was inside the budget, not after it
    assert all("validation_s" not in row for row in result.history if "val_dice" not in row)


def test_without_validation_there_is_no_best_checkpoint(tmp_path):
    result = _trainer(tmp_path, epochs=1, steps=2).fit(loader(augmented_dataset()))
    assert result.best_checkpoint is None and result.best_metric is None
    assert not (tmp_path / "checkpoint_best.pt").exists() and result.last_checkpoint.exists()


def test_options_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        _trainer(tmp_path, amp="bf16")
    with pytest.raises(ConfigError, match="unknown --amp"):
        _trainer(tmp_path, amp="fp8")
    with pytest.raises(ConfigError, match="must be >= 1, got 0, 1, None"):
        TrainerConfig(out_dir=tmp_path, epochs=0)
    with pytest.raises(ConfigError, match="positive number of seconds"):
        TrainerConfig(out_dir=tmp_path, max_time=0)
    with pytest.raises(ConfigError, match="key_metric_mode"):
        TrainerConfig(out_dir=tmp_path, key_metric_mode="best")
    network = tiny_unet()
    optimizer = create_optimizer(network.parameters())
    short = create_scheduler(optimizer, total_steps=5)
    config = TrainerConfig(out_dir=tmp_path, epochs=2)
    trainer = Trainer(network, create_loss(num_classes=2), optimizer, short, config=config)
    with pytest.raises(ConfigError, match="total_steps=6"):
        trainer.fit(loader(augmented_dataset()))  # 3 batches x 2 epochs
    wrong_key = _trainer(tmp_path, epochs=1, validate_fn=lambda net: {"dice": 1.0})
    with pytest.raises(ConfigError, match="key metric is 'val_dice'"):
        wrong_key.fit(loader(augmented_dataset()))
    with pytest.raises(InputNotFoundError):
        _trainer(tmp_path, resume_from=tmp_path / "missing.pt")
    _trainer(tmp_path / "small", epochs=1, steps=1).fit(loader(augmented_dataset()))
    bigger = UNet(
        spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16), strides=(2,), num_res_units=0
    )
    with pytest.raises(MedattnError, match="does not fit this network"):
        _trainer(tmp_path, network=bigger, resume_from=tmp_path / "small" / "checkpoint_last.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MedattnError, match="damaged"):
        load_checkpoint(tmp_path / "broken.pt")


def test_amp_modes_resolve_for_cuda():
    cuda = torch.device("cuda")
    assert resolve_amp("bf16", cuda) == torch.bfloat16 and not needs_grad_scaler(torch.bfloat16)
    assert resolve_amp("fp16", cuda) == torch.float16 and needs_grad_scaler(torch.float16)
    assert resolve_amp("off", cuda) is None
    assert resolve_amp("off", torch.device("cpu")) is None
    assert resolve_amp("auto", torch.device("cpu")) is None  # CPUs without bf16 units run float32
