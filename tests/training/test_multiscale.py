"""Multi-scale training: PraNet's sizes, label maps kept as class indices, one optimiser step per rate."""

from __future__ import annotations

import pytest
import torch

from medattn.errors import ConfigError
from medattn.losses import create_loss
from medattn.models import create, describe
from medattn.training import Trainer, TrainerConfig, create_optimizer, create_scheduler
from medattn.training.multiscale import MULTI_SCALE_RATES, rescale_batch, scaled_size


def test_sizes_are_pranets():
    """MyTrain.py: int(round(352 * rate / 32) * 32) for rates 0.75, 1, 1.25 = 256, 352, 448."""
    assert [scaled_size((352, 352), rate, 32) for rate in MULTI_SCALE_RATES] == [
        (256,) * 2,
        (352,) * 2,
        (448,) * 2,
    ]
    assert scaled_size((256, 96), 0.75, 32) == (192, 64)  # 72 / 32 = 2.25 -> 2
    assert scaled_size((40, 40), 0.1, 16) == (16, 16)  # never below one divisor
    with pytest.raises(ConfigError, match="rate"):
        scaled_size((32, 32), 0.0, 16)


def test_rescaled_batches_keep_labels_as_classes_and_corners_in_place():
    image = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    label = (torch.arange(64).view(1, 1, 8, 8) % 3).expand(2, 1, 8, 8).clone()
    small_image, small_label = rescale_batch(image, label, 0.5, size_divisor=2)
    assert small_image.shape == (2, 3, 4, 4) and small_label.shape == (2, 1, 4, 4)
    assert small_label.dtype == label.dtype and set(small_label.unique().tolist()) <= {0, 1, 2}
    # align_corners=True, as PraNet's F.upsample: the corner pixels keep their values.
    torch.testing.assert_close(small_image[..., 0, 0], image[..., 0, 0])
    torch.testing.assert_close(small_image[..., -1, -1], image[..., -1, -1])
    same_image, same_label = rescale_batch(image, label, 1.0, size_divisor=16)  # rate 1 never resizes
    assert same_image is image and same_label is label


def test_the_trainer_takes_one_optimiser_step_per_rate_and_one_schedule_step_per_batch(tmp_path):
    torch.manual_seed(0)
    network = create("pranet", 2, 3, 2, deep_supervision=False, **describe("pranet").tiny)
    sizes = []
    network.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[2:])))
    optimizer = create_optimizer(network.parameters(), "adamw", lr=1e-3)
    updates = []
    optimizer.register_step_post_hook(lambda *_: updates.append(1))
    scheduler = create_scheduler(optimizer, "poly", total_steps=2)
    trainer = Trainer(
        network,
        create_loss("dice_ce", num_classes=2),
        optimizer,
        scheduler,
        config=TrainerConfig(out_dir=tmp_path, epochs=1, steps_per_epoch=2, scale_rates=MULTI_SCALE_RATES),
    )
    generator = torch.Generator().manual_seed(1)
    batches = [
        {"image": torch.rand(2, 3, 96, 96, generator=generator), "label": torch.randint(0, 2, (2, 1, 96, 96))}
        for _ in range(2)
    ]
    result = trainer.fit(batches)
    # round(96 * rate / 32) * 32 at PraNet's divisor 32: 72 -> 64, 120 -> 128.
    assert sizes == [(64, 64), (96, 96), (128, 128)] * 2
    assert len(updates) == 6 and result.steps == 2 and scheduler.last_epoch == 2


def test_a_fixed_size_network_is_refused(tmp_path):
    network = create("sam", 2, 3, 1, variant="tiny")
    optimizer = create_optimizer([p for p in network.parameters() if p.requires_grad], "adamw")
    with pytest.raises(ConfigError, match="fixed input size"):
        Trainer(
            network,
            create_loss("structure", num_classes=1),
            optimizer,
            config=TrainerConfig(out_dir=tmp_path, scale_rates=MULTI_SCALE_RATES),
        )
    with pytest.raises(ConfigError, match="scale_rates"):
        TrainerConfig(out_dir=tmp_path, scale_rates=(1.0, -0.5))
