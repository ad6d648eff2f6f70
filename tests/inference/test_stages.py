"""The stage runner every prediction goes through: order, threads, failures, memory in flight."""

import threading

import pytest

from medattn.inference.stages import Stages, run_stages

STAGES = ("read", "preprocess", "infer", "finish", "write")


def _recording_stages(fail_at: tuple[str, int] | None = None):
    """Stages that pass an item's trail along, record which stage ran on the main thread, and raise at
    `fail_at` (stage, item)."""
    on_main = {stage: set() for stage in STAGES}

    def step(stage):
        def run(value):
            on_main[stage].add(threading.current_thread() is threading.main_thread())
            item = value if stage == "read" else value[0]
            if fail_at == (stage, item):
                raise ValueError(f"{stage} broke on {item}")
            return (item, [stage]) if stage == "read" else (item, value[1] + [stage])

        return run

    stages = Stages(*(step(stage) for stage in STAGES))
    return stages, on_main


@pytest.mark.parametrize("pipelined", [False, True])
def test_every_item_runs_every_stage_in_order_and_results_keep_input_order(pipelined):
    stages, on_main = _recording_stages()
    results = []
    run_stages(range(5), stages, pipelined=pipelined, on_result=lambda r, i: results.append((i, r)))
    assert [index for index, _ in results] == list(range(5))
    assert [result for _, result in results] == [(item, list(STAGES)) for item in range(5)]
    # in turn: only reading leaves the main thread; pipelined: the main thread only infers
    expected = {"read": {False}, "infer": {True}}
    for stage in ("preprocess", "finish", "write"):
        expected[stage] = {not pipelined}
    assert on_main == expected


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("stage", STAGES)
def test_a_failing_item_becomes_its_guarded_result_and_the_others_go_on(pipelined, stage):
    stages, _ = _recording_stages(fail_at=(stage, 1))
    results = []
    run_stages(
        range(3),
        stages,
        pipelined=pipelined,
        on_result=lambda r, i: results.append(r),
        guard=lambda item, error, started: ("failed", item, str(error)),
    )
    assert results == [(0, list(STAGES)), ("failed", 1, f"{stage} broke on 1"), (2, list(STAGES))]


def test_without_a_guard_the_error_ends_the_run():
    stages, _ = _recording_stages(fail_at=("infer", 1))
    results = []
    with pytest.raises(ValueError, match="infer broke on 1"):
        run_stages(range(3), stages, pipelined=False, on_result=lambda r, i: results.append(r))
    assert results == [(0, list(STAGES))]


def test_an_iterator_is_consumed_lazily_one_item_ahead():
    """A video's frames are decoded as they are needed: never more than the item in hand and the next."""
    produced = []

    def frames():
        for index in range(6):
            produced.append(index)
            yield index

    stages, _ = _recording_stages()
    ahead = []
    run_stages(frames(), stages, pipelined=False, on_result=lambda r, i: ahead.append(len(produced) - i - 1))
    assert max(ahead) <= 1
