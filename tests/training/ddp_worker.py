"""Run by test_distributed.py under torchrun: 2 CPU processes train a tiny network with Gloo.

Usage: torchrun --nproc_per_node 2 ddp_worker.py OUT_DIR, or `main(OUT_DIR)` in forked processes that set
torchrun's environment variables. Each process writes OUT_DIR/rank<R>.pt: its final parameters and what
fit() returned.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from training_data import augmented_dataset, dice_validator, loader, sphere_cases, tiny_unet

from medattn.losses import create_loss
from medattn.training import (
    Trainer,
    TrainerConfig,
    cleanup_distributed,
    create_optimizer,
    create_scheduler,
    distributed_sampler,
    init_distributed,
)


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    context = init_distributed("cpu")
    dataset = augmented_dataset(count=8)
    train_loader = loader(dataset, sampler=distributed_sampler(dataset, shuffle=True, seed=3))
    network = tiny_unet(seed=context.rank)  # different on each rank: DDP must start from rank 0's
    optimizer = create_optimizer(network.parameters(), "adamw", lr=1e-2)
    epochs = 2
    scheduler = create_scheduler(optimizer, "poly", total_steps=epochs * len(train_loader))
    steps = []
    trainer = Trainer(
        network,
        create_loss("dice_ce", num_classes=2),
        optimizer,
        scheduler,
        config=TrainerConfig(out_dir=out_dir / "run", device=context.device, epochs=epochs, seed=3),
        validate_fn=dice_validator(sphere_cases(1, seed=9)),
        on_step=steps.append,
    )
    result = trainer.fit(train_loader)
    torch.save(
        {
            "world_size": context.world_size,
            "parameters": {name: p.detach().clone() for name, p in network.named_parameters()},
            "epochs": result.epochs,
            "steps": result.steps,
            "train_loss": [row["train_loss"] for row in result.history],
            "callback_steps": len(steps),
            "batches_per_epoch": len(train_loader),
        },
        out_dir / f"rank{context.rank}.pt",
    )
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
