"""Training: the Trainer loop, checkpoints and exact resume, DDP helpers, optimisers and schedules, logs.

Example:
    >>> from medattn.training import Trainer, create_optimizer, create_scheduler
    >>> optimizer = create_optimizer(network.parameters(), "adamw")
    >>> scheduler = create_scheduler(optimizer, "poly", total_steps=epochs * len(loader))
    >>> result = Trainer(network, loss, optimizer, scheduler, out_dir="run", epochs=epochs).fit(loader)
"""

from medattn.training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from medattn.training.distributed import (
    DistributedContext,
    cleanup_distributed,
    distributed_sampler,
    init_distributed,
)
from medattn.training.logging import MetricsLogger
from medattn.training.schedules import LRFactor, create_optimizer, create_scheduler
from medattn.training.seeding import epoch_batches, epoch_seed, seed_epoch
from medattn.training.trainer import Trainer, TrainResult, resolve_amp

__all__ = [
    "DistributedContext",
    "LRFactor",
    "MetricsLogger",
    "TrainResult",
    "Trainer",
    "capture_rng_state",
    "cleanup_distributed",
    "create_optimizer",
    "create_scheduler",
    "distributed_sampler",
    "epoch_batches",
    "epoch_seed",
    "init_distributed",
    "load_checkpoint",
    "resolve_amp",
    "restore_rng_state",
    "save_checkpoint",
    "seed_epoch",
    "unwrap_model",
]
