"""Per-epoch seeding and batch feeding: an epoch's data order and augmentation depend on (seed, epoch) only.

This is what makes a resumed run equal an uninterrupted one: nothing random carries over from one epoch to
the next inside a process, so it does not matter how many epochs the current process has run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.data.utils import set_rnd
from monai.utils import set_determinism

from medattn.errors import ConfigError


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed for one epoch of one process, mixed from (seed, epoch, rank) by NumPy's SeedSequence.

    The rank enters so that DDP processes augment differently; their data shares come from the sampler.
    """
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_epoch(loader: Any, seed: int, *, deterministic: bool = False) -> None:
    """Set every random source an epoch draws from to `seed` before its loader iterator starts.

    - Python, NumPy and torch (CPU and all CUDA devices) through ``monai.utils.set_determinism``. torch's
      generator also decides the sampler's shuffle and, when the iterator starts, the seeds of DataLoader
      workers, from which MONAI's DataLoader reseeds each worker's random transforms.
    - The loader's own ``generator``, when it has one.
    - The random transforms of an in-process loader (``num_workers=0``), via MONAI's ``set_rnd``: they keep
      their own NumPy RandomState, which the global seeds do not reach.

    Args:
        loader: the training DataLoader (anything with ``dataset``/``num_workers``/``generator`` works).
        seed: this epoch's seed (`epoch_seed`).
        deterministic: keep the cuDNN flags ``set_determinism`` sets (deterministic, no benchmark); by
            default they are put back as they were, since deterministic cuDNN is slower.
    """
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    set_determinism(seed=seed)
    if not deterministic:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed)
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and getattr(loader, "num_workers", 0) == 0:
        set_rnd(dataset, seed)


def epoch_batches(loader: Any, epoch: int, steps: int) -> Iterator[Any]:
    """`steps` batches of epoch `epoch` (1-based), restarting the loader when a pass ends.

    Before each pass a sampler with ``set_epoch`` (DistributedSampler) gets a number unique to (epoch,
    pass), so every pass has a new order that depends only on the epoch.

    Raises:
        ConfigError: the loader yields nothing.
    """
    try:
        passes = math.ceil(steps / len(loader))
    except TypeError:  # no length: assume one pass is enough
        passes = 1
    produced, cycle = 0, 0
    while produced < steps:
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch((epoch - 1) * passes + cycle)
        empty = True
        for batch in loader:
            empty = False
            yield batch
            produced += 1
            if produced == steps:
                return
        if empty:
            raise ConfigError("the training loader yields no batch: the training set is empty or too small")
        cycle += 1
