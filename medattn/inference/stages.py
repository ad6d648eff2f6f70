"""The one way a case goes through prediction: read -> preprocess -> infer -> finish -> write.

`Stages` names the five steps; `run_stages` runs a stream of items (cases of a folder, frames of a video)
through them, in input order, by the same code in both schedules:

- in turn (`pipelined=False`): the next item is read on a background thread while the current one runs
  preprocess, infer, finish and write on the calling thread. On a CPU the network's own threads use every
  core, so more threads would only contend for them.
- pipelined: the background reader also preprocesses, the calling thread only infers, and a writer thread
  finishes (probabilities back onto the input grid) and writes the previous item meanwhile, so a GPU waits
  for neither. Up to three items are in flight.

`Predictor` (`medattn.inference.predictor`) supplies preprocess, infer and finish; the caller supplies read
and write (files and reports are the pipeline's business) and, for a batch, a `guard` that turns one item's
error into its result so the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

_END = object()


@dataclass
class Stages:
    """The five steps of one item; each but `read` takes what the step before returned."""

    read: Callable[[Any], Any]
    preprocess: Callable[[Any], Any]
    infer: Callable[[Any], Any]
    finish: Callable[[Any], Any]
    write: Callable[[Any], Any]


@dataclass
class _Failed:
    result: Any


Guard = Callable[[Any, Exception, float], Any]


def _run(steps: list[Callable], value: Any, item: Any, started: float, guard: Guard | None) -> Any:
    """`value` through `steps`; with a guard, an error becomes `_Failed(guard(item, error, started))`."""
    try:
        for step in steps:
            value = step(value)
        return value
    except Exception as error:  # noqa: BLE001 - the guard decides; without one, it propagates
        if guard is None:
            raise
        return _Failed(guard(item, error, started))


def run_stages(
    items: Iterable,
    stages: Stages,
    *,
    pipelined: bool,
    on_result: Callable[[Any, int], None],
    guard: Guard | None = None,
) -> None:
    """Run every item through `stages` (see the module docstring); `on_result(result, index)` in order.

    Args:
        items: what `stages.read` takes, one at a time; an iterator is consumed on the reader thread, one
            item ahead (a video decodes its next frame while the current one is segmented).
        stages: the steps.
        pipelined: the three-thread schedule instead of the two-thread one.
        on_result: called on the calling thread with what `write` (or `guard`) returned and the item's index.
        guard: `guard(item, error, started)` -> the result of an item whose step raised (`started`: its
            `time.perf_counter()` when its reading began); None, or a guard that raises, lets the error
            end the run.
    """
    ahead = [stages.read, stages.preprocess] if pipelined else [stages.read]
    main = [stages.infer] if pipelined else [stages.preprocess, stages.infer, stages.finish, stages.write]
    behind = [stages.finish, stages.write] if pipelined else []
    source = iter(items)

    def read_next() -> tuple[Any, Any, float]:
        started = time.perf_counter()
        item = next(source, _END)
        if item is _END:
            return _END, None, started
        return item, _run(ahead, item, item, started, guard), started

    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future = reader.submit(read_next)
        writing: tuple[int, Future] | None = None

        def collect_written() -> None:
            nonlocal writing
            if writing is not None:
                index, future = writing
                writing = None
                outcome = future.result()
                on_result(outcome.result if isinstance(outcome, _Failed) else outcome, index)

        index = 0
        while True:
            item, value, started = pending.result()
            if item is _END:
                break
            pending = reader.submit(read_next)
            if not isinstance(value, _Failed):
                value = _run(main, value, item, started, guard)
            if behind and not isinstance(value, _Failed):
                collect_written()
                writing = (index, writer.submit(_run, behind, value, item, started, guard))
                value = None  # the writer holds it now; freed as soon as it is written
            else:
                collect_written()
                on_result(value.result if isinstance(value, _Failed) else value, index)
            index += 1
        collect_written()
