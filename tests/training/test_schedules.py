"""Optimisers and learning-rate schedules: nnU-Net's settings and poly/cosine curves per step."""

from __future__ import annotations

import math

import pytest
import torch

from medattn.errors import ConfigError
from medattn.training import create_optimizer, create_scheduler


def _parameters():
    return [torch.nn.Parameter(torch.zeros(3))]


def _rates(scheduler, optimizer, steps):
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_sgd_is_nnunet_and_adamw_has_defaults():
    sgd = create_optimizer(_parameters(), "sgd")
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        1e-2,
        0.99,
        True,
        3e-5,
    )
    adamw = create_optimizer(_parameters(), "adamw", lr=5e-4, weight_decay=0.0)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 5e-4
    with pytest.raises(ConfigError, match="unknown optimizer"):
        create_optimizer(_parameters(), "adam")


def test_poly_decays_with_exponent_0_9_per_step():
    optimizer = create_optimizer(_parameters(), "sgd", lr=0.1)
    rates = _rates(create_scheduler(optimizer, "poly", total_steps=10), optimizer, 10)
    assert rates == pytest.approx([0.1 * (1 - k / 10) ** 0.9 for k in range(10)])


def test_cosine_with_warmup():
    optimizer = create_optimizer(_parameters(), "adamw", lr=1.0)
    rates = _rates(create_scheduler(optimizer, "cosine", total_steps=12, warmup_steps=2), optimizer, 14)
    assert rates[:2] == pytest.approx([0.5, 1.0])
    assert rates[2:12] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(10)])
    assert rates[12:] == [0.0, 0.0]


def test_scheduler_state_survives_weights_only_round_trip(tmp_path):
    optimizer = create_optimizer(_parameters(), "sgd", lr=0.1)
    scheduler = create_scheduler(optimizer, "poly", total_steps=20, warmup_steps=3)
    _rates(scheduler, optimizer, 7)
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    fresh_optimizer = create_optimizer(_parameters(), "sgd", lr=0.1)
    fresh = create_scheduler(fresh_optimizer, "cosine", total_steps=5)  # settings come from the state
    fresh_optimizer.load_state_dict(state["optimizer"])
    fresh.load_state_dict(state["scheduler"])
    assert _rates(fresh, fresh_optimizer, 5) == pytest.approx(_rates(scheduler, optimizer, 5))


def test_bad_schedules_are_refused():
    optimizer = create_optimizer(_parameters())
    with pytest.raises(ConfigError, match="unknown schedule"):
        create_scheduler(optimizer, "step", total_steps=10)
    with pytest.raises(ConfigError, match="warmup_steps < total_steps"):
        create_scheduler(optimizer, "poly", total_steps=10, warmup_steps=10)


def test_time_progress_moves_the_schedule_when_time_is_further_along_than_steps():
    from medattn.training.schedules import set_time_progress

    optimizer = create_optimizer(_parameters(), "sgd", lr=1.0)
    scheduler = create_scheduler(optimizer, "poly", total_steps=1000)
    set_time_progress(scheduler, 0.5)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5**0.9)
    set_time_progress(scheduler, 1.2)  # past the budget: the bottom of the schedule, never negative
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_a_run_stopped_by_its_time_budget_decays_the_learning_rate_to_the_end(tmp_path):
    """`--max-time` with a large epoch count: the learning rate follows time, not the unreachable steps."""
    from training_data import augmented_dataset, loader, tiny_unet

    from medattn.losses import create_loss
    from medattn.training import Trainer, TrainerConfig

    class OneSecondPerStep(Trainer):
        def elapsed(self) -> float:
            return float(self.step)

    network = tiny_unet(seed=0)
    optimizer = create_optimizer(network.parameters(), "sgd", lr=0.1)
    epochs, steps = 1000, 3
    scheduler = create_scheduler(optimizer, "poly", total_steps=epochs * steps)
    rates = []
    trainer = OneSecondPerStep(
        network,
        create_loss("dice_ce", num_classes=2),
        optimizer,
        scheduler,
        config=TrainerConfig(out_dir=tmp_path, epochs=epochs, max_time=8),
        on_step=lambda info: rates.append(info["lr"]),
    )
    result = trainer.fit(loader(augmented_dataset()))
    assert result.stopped_by == "max_time" and result.steps == 8
    # Step k starts after k-1 seconds of 8: the rate set for the next step is 0.1 * (1 - (k-1)/8)^0.9, where
    # the step-based schedule alone would still be at 0.1 * (1 - k/3000)^0.9.
    expected = [0.1 * (1 - max((k - 1) / 8, k / (epochs * steps))) ** 0.9 for k in range(1, 9)]
    assert rates == pytest.approx(expected)
    assert rates[-1] < 0.02
