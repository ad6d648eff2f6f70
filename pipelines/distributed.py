"""`predict --ray`: the cases of a run predicted by a pool of Ray workers, each holding the package.

The cases become a Ray Dataset (`ray.data.from_items`, one row per case description) mapped by an actor
pool (`map_batches` with the callable class `CaseWorker`, one case per batch). Each worker loads the package
once (`load_case_stages`, as a run in one process does) and runs its cases through the same stages:
reading, preprocessing, inference and writing happen where the worker runs, so OUTPUT must be on a
filesystem every worker sees. The process that called `predict` records each result as it arrives, into
volumes.csv, components.csv and predict.json rewritten atomically, as a run in one process does
(`medattn.pipelines.predict`): one row per case, whichever worker predicted it.

Failures: an error on a case is that case's result, as in one process. A worker that dies (killed, out of
memory, its node lost) is restarted by Ray (``max_restarts=-1``) and the cases it held are tried again, up to
`max_retries` times each (``max_task_retries``); a case whose worker died every time is reported failed
and the others go on (Ray Data's ``max_errored_blocks``). A full disk stops the run, as in one process.

Ray is imported here only, and only when a run asks for it, so `medattn` works (and starts fast) without
the ``ray`` extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from medattn.errors import ConfigError, DiskFullError, MedattnError, MissingDependencyError
from medattn.io.discovery import Case
from medattn.pipelines.predict_case import load_case_stages
from medattn.pipelines.predict_report import CaseResult, predictor_device


@dataclass(frozen=True)
class WorkerShape:
    """How many workers a run starts and what each takes from the cluster."""

    workers: int
    cpus_per_worker: int
    gpus_per_worker: float


def worker_shape(resources: dict, options, local: bool = False) -> WorkerShape:
    """The workers for `options` on a cluster with `resources` (`ray.cluster_resources()`): one per GPU, or
    without GPUs one per `cpus_per_worker` CPUs (default 1), each with the CPUs shared evenly.

    Args:
        resources: the cluster's resources ("CPU", "GPU" counts).
        options: PredictOptions (workers, gpus_per_worker, cpus_per_worker, device).
        local: the cluster is the one this run started, so what it lacks now it will always lack (a joined
            cluster may grow, e.g. under KubeRay's autoscaler).

    Raises:
        ConfigError: GPUs asked for where the cluster has none; more than a local cluster holds.
    """
    cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_gpu = options.gpus_per_worker
    if per_gpu is None:
        per_gpu = 1.0 if gpus and options.device != "cpu" else 0.0
    if per_gpu > 0 and not gpus and local:
        raise ConfigError(f"--gpus-per-worker {per_gpu:g}: this machine has no GPU Ray can use; leave it out")
    if options.workers:
        workers = options.workers
    elif per_gpu > 0:
        workers = max(1, int(gpus // per_gpu))
    else:
        workers = max(1, cpus // (options.cpus_per_worker or 1))
    shape = WorkerShape(workers, options.cpus_per_worker or max(1, cpus // workers), per_gpu)
    if local and (shape.workers * shape.cpus_per_worker > cpus or shape.workers * per_gpu > gpus):
        raise ConfigError(
            f"{shape.workers} workers x {shape.cpus_per_worker} CPUs, {per_gpu:g} GPUs each do not fit this "
            f"machine's {cpus} CPUs and {gpus:g} GPUs: give fewer --workers or --cpus-per-worker"
        )
    return shape


def import_ray():
    """The `ray` module with Ray Data, or MissingDependencyError naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part of Ray used here
    except ImportError as error:
        raise MissingDependencyError(
            f"--ray needs Ray with Ray Data, which is not installed ({error}): pip install 'medattn[ray]'"
        ) from error
    return ray


def _connect(ray, address: str) -> bool:
    """Join or start the cluster `address` names; True when this run must shut it down (or leave it) after.
    A process already connected (a Python API user's own `ray.init`) keeps its cluster."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except ConnectionError as error:
        raise ConfigError(
            f"--ray {address}: no Ray cluster found there ({error}); start one with `ray start --head` or "
            "use --ray local"
        ) from error
    return True


def _case_row(case: Case) -> dict:
    """A case as a row of the dataset: its description as JSON text (paths as text)."""
    described = asdict(case)
    described["images"] = [str(path) for path in case.images]
    described["label"] = None if case.label is None else str(case.label)
    return {"case": json.dumps(described)}


def _case_from_row(text: str) -> Case:
    described = json.loads(text)
    described["images"] = [Path(path) for path in described["images"]]
    described["label"] = None if described["label"] is None else Path(described["label"])
    described["patient_tokens"] = tuple(described["patient_tokens"])
    return Case(**described)


class CaseWorker:
    """A Ray Data actor: loads the package once, then runs each batch of cases through predict's stages.

    Args:
        members: the model packages (`medattn.package.package_members`).
        out: the output folder, on a filesystem shared with the driver.
        options: PredictOptions.
        threads: torch's CPU threads (the CPUs the worker holds), or None for torch's default.
    """

    def __init__(self, members: list[str], out: str, options, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.stages = load_case_stages([Path(m) for m in members], Path(out), options)
        self.runs = {**predictor_device(self.stages.predictor), "pipelined": self.stages.pipelined}

    def __call__(self, batch: dict) -> dict:
        """Each case of `batch` (column "case": descriptions) -> column "result": JSON of its CaseResult and
        how it ran, or of the full disk that stopped it."""
        rows = []
        cases = [_case_from_row(text) for text in batch["case"]]
        try:
            self.stages.run(cases, on_result=lambda result, index: rows.append({"result": asdict(result)}))
        except DiskFullError as error:  # every later case would fail the same way: the driver stops
            rows.append({"disk_full": str(error)})
        texts = [json.dumps({**row, "runs": self.runs}, default=_plain) for row in rows]
        return {"result": np.array(texts, dtype=object)}


def _plain(value):
    """NumPy scalars in a result (voxel counts, volumes) as the Python numbers JSON holds."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def predict_on_ray(
    cases: list[Case],
    members: list[Path],
    out: Path,
    options,
    *,
    on_result: Callable[[CaseResult, int], None],
    settings: dict,
) -> None:
    """Predict `cases` on the Ray cluster `options.ray` names; `on_result(result, index)` as each finishes.

    Args:
        cases: the cases to predict (those not done yet).
        members: the model packages.
        out: the output folder, seen by every worker.
        options: PredictOptions (ray, workers, gpus_per_worker, cpus_per_worker, max_retries, ...).
        on_result: records a result (the reports), in the order the cases finish.
        settings: predict.json's header; gets "ray" (the address and the workers' shape) and the workers'
            "device", "amp" and pipelining.

    Raises:
        MissingDependencyError: Ray is not installed.
        ConfigError: no cluster at the address; workers that do not fit a local cluster.
        DiskFullError: a worker found the disk full.
        MedattnError: the run stopped (e.g. no worker could load the package).
    """
    ray = import_ray()
    from ray import data as ray_data

    started = _connect(ray, options.ray)
    try:
        shape = worker_shape(ray.cluster_resources(), options, local=started and options.ray == "local")
        shape = replace(shape, workers=min(shape.workers, len(cases)))  # no idle worker loading the package
        settings["ray"] = {"address": options.ray, **asdict(shape)}
        with _quiet_ray_data(ray_data), warnings.catch_warnings():
            # The actor's restart and retry counts have no named parameter of map_batches yet (Ray 2.60): they
            # go as Ray remote arguments, which Ray 2.60 marks deprecated.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            extra = {"num_gpus": shape.gpus_per_worker} if shape.gpus_per_worker else {}
            dataset = ray_data.from_items([_case_row(case) for case in cases]).map_batches(
                CaseWorker,
                fn_constructor_kwargs={
                    "members": [str(m) for m in members],
                    "out": str(out),
                    "options": options,
                    "threads": shape.cpus_per_worker,
                },
                batch_size=1,  # a case at a time: progress, retries and failures per case
                compute=ray_data.ActorPoolStrategy(size=shape.workers),
                num_cpus=shape.cpus_per_worker,
                max_restarts=-1,
                max_task_retries=options.max_retries,
                **extra,
            )
            seen: set[str] = set()
            for row in _rows(dataset):
                if "disk_full" in row:
                    raise DiskFullError(row["disk_full"])
                result = CaseResult(**row["result"])
                if result.case in seen:
                    continue  # retried after its first result arrived: recorded once
                if not seen:
                    settings.update(device=row["runs"]["device"], amp=row["runs"]["amp"])
                    settings["options"]["pipelined"] = row["runs"]["pipelined"]
                seen.add(result.case)
                on_result(result, len(seen) - 1)
        for case in cases:
            if case.id not in seen:
                seen.add(case.id)
                error = (
                    f"its Ray worker died on it {options.max_retries + 1} times (out of memory? a crash? see "
                    "the Ray logs, /tmp/ray/session_latest/logs)"
                )
                on_result(CaseResult(case.id, "failed", error=error), len(seen) - 1)
    finally:
        if started:
            ray.shutdown()


def _rows(dataset) -> Iterator[dict]:
    """The dataset's results as they arrive; an error that stops Ray Data becomes a MedattnError (one CLI
    line) carrying the first line of the cause."""
    rows = iter(dataset.iter_rows())
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - Ray wraps the workers' errors in its own types
            cause = getattr(error, "cause", None) or error
            if isinstance(cause, MedattnError):
                raise cause from error
            first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise MedattnError(f"the Ray run stopped: {type(cause).__name__}: {first_line}") from error
        yield json.loads(row["result"])


@contextlib.contextmanager
def _quiet_ray_data(ray_data):
    """Ray Data set for a run of cases: a case whose worker died every time is dropped (and reported
    failed), not the end of the run; no progress bars or log lines of its own (the CLI shows one)."""
    context = ray_data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = (context.max_errored_blocks, context.enable_progress_bars, logger.level)
    context.max_errored_blocks, context.enable_progress_bars = -1, False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved[:2]
        logger.setLevel(saved[2])
