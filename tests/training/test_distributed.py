"""DDP on CPU: 2 processes with Gloo on loopback train one model, and only rank 0 writes or displays."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import ddp_worker
import pytest
import torch

from medattn.training import distributed_sampler, init_distributed, load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")


def _check_run(out_dir: Path) -> None:
    ranks = [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # 8 cases, batch 2, split over 2 processes: 2 batches per process per epoch.
    assert [r["batches_per_epoch"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [4, 4]
    # Gradients were averaged: the two processes end with identical weights despite different inits.
    first, second = ranks[0]["parameters"], ranks[1]["parameters"]
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    # The logged loss is the mean over processes, so both report the same numbers.
    assert ranks[0]["train_loss"] == ranks[1]["train_loss"]
    # Only rank 0 calls the display callbacks and writes files, and it saves the bare network's weights.
    assert [r["callback_steps"] for r in ranks] == [4, 0]
    checkpoint = load_checkpoint(out_dir / "run" / "checkpoint_last.pt")
    assert checkpoint["epoch"] == 2 and "val_dice" in checkpoint["history"][-1]
    assert all(torch.equal(checkpoint["model"][k], first[k]) for k in first)
    written = sorted(p.name for p in (out_dir / "run").iterdir() if p.suffix in (".pt", ".csv"))
    assert written == ["checkpoint_best.pt", "checkpoint_last.pt", "metrics.csv"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _forked_rank(rank: int, port: int, out_dir: Path) -> None:
    # The variables torchrun would set; init_distributed reads them.
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    ddp_worker.main(out_dir)


def test_ddp_two_forked_processes(tmp_path):
    """Forked from this process so the workers need not import torch and MONAI again (a few seconds)."""
    # Building the first optimiser imports torch._dynamo (~5 s); do it once here, not in each child.
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    context = multiprocessing.get_context("fork")
    port = _free_port()
    processes = [context.Process(target=_forked_rank, args=(r, port, tmp_path)) for r in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    assert not alive and [p.exitcode for p in processes] == [0, 0]
    _check_run(tmp_path)


@pytest.mark.slow
def test_ddp_launched_by_torchrun(tmp_path):
    """The way users launch it; about 25 s on 2 busy cores, most of it importing torch and MONAI twice."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _check_run(tmp_path)


def test_without_torchrun_everything_is_single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert (context.rank, context.world_size, context.is_main, context.enabled) == (0, 1, True, False)
    assert isinstance(distributed_sampler(list(range(4)), shuffle=True), torch.utils.data.RandomSampler)
    assert list(distributed_sampler(list(range(4)), shuffle=False)) == [0, 1, 2, 3]
