"""Training: the Trainer loop and its config, checkpoints and exact resume, DDP helpers, optimisers and
schedules, logs, validation.

Example:
    >>> from medattn.training import Trainer, TrainerConfig, create_optimizer, create_scheduler
    >>> optimizer = create_optimizer(network.parameters(), "adamw")
    >>> scheduler = create_scheduler(optimizer, "poly", total_steps=epochs * len(loader))
    >>> config = TrainerConfig(out_dir="run", epochs=epochs)
    >>> result = Trainer(network, loss, optimizer, scheduler, config=config).fit(loader)
"""

from medattn.training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from medattn.training.config import TrainerConfig
from medattn.training.distributed import (
    DistributedContext,
    cleanup_distributed,
    distributed_sampler,
    init_distributed,
)
from medattn.training.logging import MetricsLogger
from medattn.training.schedules import LRFactor, create_optimizer, create_scheduler
from medattn.training.seeding import epoch_batches, epoch_seed, seed_epoch
from medattn.training.trainer import Trainer, TrainResult

__all__ = [
    "DistributedContext",
    "LRFactor",
    "MetricsLogger",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "capture_rng_state",
    "cleanup_distributed",
    "create_optimizer",
    "create_scheduler",
    "distributed_sampler",
    "epoch_batches",
    "epoch_seed",
    "init_distributed",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "seed_epoch",
    "unwrap_model",
]
