"""DDP on CPU: 2 processes with Gloo on loopback train one model, and only rank 0 writes or displays: the
Trainer alone, and `medattn.train` end to end."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import ddp_worker
import pytest
import torch
from tiny_package import TINY_TRAINING, write_sphere_dataset

import medattn
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


def fork_two_ranks(target, *args, timeout_s: float = 180) -> None:
    """`target(rank, port, *args)` in two processes forked from this one, as torchrun's two ranks on one
    machine (forked, so they need not import torch and MONAI again: a few seconds); both must exit 0."""
    # Building the first optimiser imports torch._dynamo (~5 s); do it once here, not in each child.
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    context = multiprocessing.get_context("fork")
    port = _free_port()
    processes = [context.Process(target=target, args=(r, port, *args)) for r in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=timeout_s)
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    assert not alive and [p.exitcode for p in processes] == [0, 0]


def test_ddp_two_forked_processes(tmp_path):
    fork_two_ranks(_forked_rank, tmp_path, timeout_s=120)
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


class _RecordingSampler:
    """The trainer's real sampler, with the indices of every pass over it kept in `passes`."""

    def __init__(self, sampler, passes: list):
        self.sampler, self.passes = sampler, passes

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        indices = [int(i) for i in self.sampler]
        self.passes.append(indices)
        return iter(indices)


def _pipeline_rank(rank: int, port: int, data: Path, out: Path, records: Path) -> None:
    """One process of the run: torchrun's variables, then `medattn.train` with its sampler and its writes
    of the run's JSON files and the package recorded (the real ones still run)."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    import medattn.pipelines.train as train_module
    import medattn.pipelines.train_plan as plan_module
    import medattn.training as training

    passes, writes = [], []
    real_sampler = training.distributed_sampler
    training.distributed_sampler = lambda *a, **k: _RecordingSampler(real_sampler(*a, **k), passes)
    for module in (train_module, plan_module):
        real_write = module.write_json
        module.write_json = lambda path, data, write=real_write: (
            writes.append(Path(path).name),
            write(path, data),
        )
    real_save = train_module.save_package
    train_module.save_package = lambda folder, *a: (writes.append("package"), real_save(folder, *a))[1]
    result = medattn.train(data, out=out, epochs=2, **TINY_TRAINING)
    training.cleanup_distributed()
    record = {"passes": passes, "writes": writes, "epochs": result.epochs}
    (records / f"rank{rank}.json").write_text(json.dumps(record))


def test_train_under_ddp_rank_0_alone_writes_and_the_ranks_see_disjoint_cases(tmp_path):
    """`medattn.train` as `torchrun --nproc_per_node 2` runs it: on 5 labelled cases (4 to train on, 2 per
    process, 1 to validate on) the processes' sampler passes are disjoint halves, and rank 0 alone writes
    the run's JSON files and the package."""
    dataset = write_sphere_dataset(tmp_path / "data", cases=5)
    out, records = tmp_path / "run", tmp_path / "records"
    records.mkdir()
    fork_two_ranks(_pipeline_rank, dataset, out, records)
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["writes"] == ["train_options.json", "plan.json", "package"] and ranks[1]["writes"] == []
    assert [r["epochs"] for r in ranks] == [2, 2]
    train_ids = json.loads((out / "plan.json").read_text())["split"]["train"]
    assert len(train_ids) == 4
    first, second = (r["passes"] for r in ranks)
    assert len(first) == len(second) >= 2  # at least one pass per epoch, in step
    for mine, theirs in zip(first, second, strict=True):
        assert len(mine) == len(theirs) == 2 and not set(mine) & set(theirs)  # disjoint halves
        assert sorted(mine + theirs) == [0, 1, 2, 3]  # together every training case
    assert len({tuple(p) for p in first}) > 1  # reshuffled from pass to pass
    predictor = medattn.load_model(out, device="cpu")  # the package rank 0 wrote is whole
    assert predictor.config.training["epochs"] == 2
