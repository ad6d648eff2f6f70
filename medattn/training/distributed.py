"""Multi-process training with torchrun: process-group set-up, samplers, and the few collectives we need.

Launch with ``torchrun --nproc_per_node N ...``; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT, which `init_distributed` reads. Without them everything here is a single-process no-op, so the
same code runs with and without DDP.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from monai.data import DistributedSampler
from torch.utils.data import Dataset, RandomSampler, Sampler, SequentialSampler

from medattn.errors import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global index of this process, 0 for the one that writes files.
        world_size: number of processes.
        local_rank: index on this machine; selects the GPU.
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and logs and calls the display callbacks."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={value!r} is not an integer (set by torchrun)"
        ) from None


def init_distributed(device: str | torch.device | None = None, timeout_s: float = 1800) -> DistributedContext:
    """Join the process group torchrun describes, or return a single-process context.

    The backend is NCCL when training on CUDA (each process takes GPU ``LOCAL_RANK``), else Gloo, which is
    what runs on CPU. Calling it again returns the existing group's context.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available). Under torchrun a CUDA device is always
            ``cuda:LOCAL_RANK``.
        timeout_s: how long collectives wait for the slowest process (seconds); validation runs on rank 0
            only, so it must finish within this.

    Returns:
        The context: rank, world size, local rank, device.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    wanted = torch.device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() if wanted is None else wanted.type == "cuda"
    if world_size <= 1:
        chosen = wanted or torch.device("cuda" if use_cuda else "cpu")
        return DistributedContext(device=chosen)
    if use_cuda:
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Number of processes in the current group (1 without DDP)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without DDP)."""
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every process (no-op without DDP)."""
    if world_size() > 1:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over processes (`value` itself without DDP); `value` is not modified."""
    if world_size() <= 1:
        return value
    reduced = value.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / world_size()


def max_over_processes(value: float, device: torch.device) -> float:
    """The largest `value` over processes (`value` itself without DDP), so all processes act on one number.

    The Trainer uses it for the share of the time budget spent: every process then stops at the same step
    (a lone process leaving early would leave the others waiting in the next gradient all-reduce) and sets
    the same learning rate.
    """
    if world_size() <= 1:
        return value
    tensor = torch.tensor([float(value)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def distributed_sampler(dataset: Dataset, shuffle: bool = True, seed: int = 0) -> Sampler:
    """The training sampler: each process gets its own share of `dataset` under DDP.

    Under DDP: MONAI's `DistributedSampler` (shuffled with `seed` + epoch; the Trainer calls ``set_epoch``
    before every pass, so each epoch has a new order that does not depend on how the run was resumed).
    Without DDP: a `RandomSampler` or `SequentialSampler`; RandomSampler draws its order from torch's global
    generator, which the Trainer reseeds from (seed, epoch) at each epoch start, so it is just as
    reproducible. Pass it as ``DataLoader(dataset, sampler=..., shuffle=False)``.

    Args:
        dataset: the training dataset.
        shuffle: shuffle every epoch.
        seed: the run's seed (DDP order).

    Returns:
        The sampler.
    """
    if world_size() > 1:
        return DistributedSampler(dataset, shuffle=shuffle, seed=seed, num_replicas=world_size(), rank=rank())
    return RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
