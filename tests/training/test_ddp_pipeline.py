"""`medattn.train` under DDP, as `torchrun --nproc_per_node 2` runs it: two CPU processes (Gloo) train one
model on disjoint shares of the cases, and only rank 0 writes the run folder and the package."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path

import pytest
import torch
from tiny_package import TINY_TRAINING, write_sphere_dataset

import medattn


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


def _rank(rank: int, port: int, data: Path, out: Path, records: Path) -> None:
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dataset(tmp_path):
    """5 labelled cases: 4 to train on (2 per process), 1 to validate on."""
    return write_sphere_dataset(tmp_path / "data", cases=5)


def test_train_under_ddp_rank_0_alone_writes_and_the_ranks_see_disjoint_cases(dataset, tmp_path):
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo once, not per child
    out, records = tmp_path / "run", tmp_path / "records"
    records.mkdir()
    context = multiprocessing.get_context("fork")
    port = _free_port()
    processes = [context.Process(target=_rank, args=(r, port, dataset, out, records)) for r in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    assert not alive and [p.exitcode for p in processes] == [0, 0]
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
