"""A run killed after epoch 2 and resumed reaches exactly the weights and losses of an uninterrupted run."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from training_data import augmented_dataset, dice_validator, loader, sphere_cases, tiny_unet

from medattn.losses import create_loss
from medattn.training import (
    Trainer,
    TrainerConfig,
    capture_rng_state,
    create_optimizer,
    create_scheduler,
    restore_rng_state,
)

EPOCHS, STEPS = 4, 3


class Killed(Exception):
    """Stands in for SIGKILL after a checkpoint was written."""


def _run(out_dir, network, resume_from=None, kill_after=None, workers=0):
    optimizer = create_optimizer(network.parameters(), "sgd", lr=0.05)
    scheduler = create_scheduler(optimizer, "poly", total_steps=EPOCHS * STEPS, warmup_steps=2)

    def on_epoch_end(info):
        if info["epoch"] == kill_after:
            raise Killed

    trainer = Trainer(
        network,
        create_loss("dice_ce", num_classes=2),
        optimizer,
        scheduler,
        config=TrainerConfig(out_dir=out_dir, seed=7, epochs=EPOCHS, resume_from=resume_from),
        validate_fn=dice_validator(sphere_cases(2, seed=9)),
        on_epoch_end=on_epoch_end,
    )
    # A fresh loader each time, like a new process: its transforms start from MONAI's construction seed.
    return trainer, trainer.fit(loader(augmented_dataset(), num_workers=workers))


# With workers, each worker's transforms are seeded from torch's generator when the epoch's iterator starts.
@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, workers):
    _, full = _run(tmp_path / "full", tiny_unet(seed=0), workers=workers)

    with pytest.raises(Killed):
        _run(tmp_path / "cut", tiny_unet(seed=0), kill_after=2, workers=workers)
    random.random(), np.random.rand(), torch.rand(3)  # the new process's RNGs are elsewhere
    resumed_trainer, resumed = _run(
        tmp_path / "cut",
        tiny_unet(seed=123),
        resume_from=tmp_path / "cut" / "checkpoint_last.pt",
        workers=workers,
    )

    assert resumed.epochs == full.epochs == EPOCHS and resumed.steps == full.steps == EPOCHS * STEPS
    full_state = torch.load(full.last_checkpoint, weights_only=True)["model"]
    resumed_state = resumed_trainer.network.state_dict()
    assert full_state.keys() == resumed_state.keys()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
    for key in ("train_loss", "lr", "val_dice"):
        assert [row[key] for row in resumed.history] == [row[key] for row in full.history]
    assert (resumed.best_metric, resumed.best_epoch) == (full.best_metric, full.best_epoch)
    # The epochs really differ from each other (augmentation and order changed), so equality means something.
    assert len({row["train_loss"] for row in full.history}) == EPOCHS


def test_rng_states_round_trip_through_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # leaves a cached Gaussian in NumPy's state
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.normal(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.random(), np.random.normal(), torch.rand(2))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])
