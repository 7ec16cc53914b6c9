"""The timer's statistics are sane (on the CPU here; the same code path uses CUDA events on a GPU)."""
import time

import pytest
import torch

from harness.timing import WALL_CLOCK, compare_speed, time_function, time_steps

SLEEP_S = 0.002


def sleeper(seconds):
    def fn(*_):
        time.sleep(seconds)

    return fn


def test_median_and_spread_of_a_known_duration():
    t = time_function(sleeper(SLEEP_S), [(torch.ones(1),)], min_reps=15, budget_s=0.1)
    assert t.clock == WALL_CLOCK
    assert t.reps >= 15
    assert SLEEP_S * 1e3 <= t.median_ms < SLEEP_S * 1e3 + 5
    assert t.min_ms <= t.p25_ms <= t.median_ms <= t.p75_ms <= t.max_ms
    assert t.spread >= 0


def test_repetitions_are_capped():
    t = time_function(lambda x: x, [(torch.ones(1),)], min_reps=3, max_reps=7, budget_s=10)
    assert t.reps == 7


def test_input_sets_rotate():
    seen = []
    sets = [(torch.full((1,), float(i)),) for i in range(4)]
    time_function(lambda x: seen.append(int(x)), sets, warmup=1, min_reps=8, max_reps=8)
    assert set(seen) == {0, 1, 2, 3}


def test_side_by_side_speedup():
    cmp = compare_speed(sleeper(SLEEP_S), sleeper(3 * SLEEP_S), [(torch.ones(1),)], min_reps=10, budget_s=0.3)
    assert 2.0 < cmp.speedup < 3.6
    assert cmp.speedup_p25 <= cmp.speedup <= cmp.speedup_p75
    assert cmp.candidate.reps == cmp.baseline.reps


def test_no_inputs_is_an_error():
    with pytest.raises(ValueError):
        time_function(lambda: None, [])


def test_steps_are_timed_in_order_each_once():
    """The step timer (task 6's decode loop in bench/): every step once, in order, after warm-up."""
    seen = []

    def step(t):
        seen.append(int(t))
        time.sleep(SLEEP_S)

    t = time_steps(step, [(torch.tensor(i),) for i in range(6)], warmup=2)
    assert seen == [0, 1, 0, 1, 2, 3, 4, 5]
    assert t.reps == 6 and t.input_sets == 6 and SLEEP_S * 1e3 <= t.median_ms < SLEEP_S * 1e3 + 5
    with pytest.raises(ValueError):
        time_steps(step, [])


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the head start is a GPU spin")
#: A host delay before a tiny launch: far above the kernel's time, below the largest head start.
HOST_DELAY_S = 0.0004


def slow_to_launch(host_delay_s):
    """A call whose cost is its host side: a wait, then one tiny kernel."""
    def fn(x):
        time.sleep(host_delay_s)
        return x.add_(1)

    return fn


@needs_gpu
def test_events_time_the_gpu_not_the_host_queueing_it():
    """With the head start the GPU is still busy when the host queues the call, so a call whose
    host side is slow but whose kernel is tiny times as the kernel: a launch-bound baseline then
    times alike in the worker and in the judge. Without it, the events would see the wait."""
    from harness import timing

    x = torch.zeros(1024, device="cuda")
    t = time_function(slow_to_launch(HOST_DELAY_S), [(x,)], warmup=3, min_reps=20, max_reps=20)
    assert t.median_ms < HOST_DELAY_S * 1e3 / 4, t.summary()
    assert 0 < t.head_start_ms <= timing.HEAD_START_MAX_MS * t.reps


@needs_gpu
def test_host_work_beyond_the_largest_head_start_is_still_timed():
    """A submission cannot hide real work on the host behind the head start: it is capped."""
    from harness import timing

    delay_s = 3 * timing.HEAD_START_MAX_MS / 1e3
    x = torch.zeros(1024, device="cuda")
    t = time_function(slow_to_launch(delay_s), [(x,)], warmup=2, min_reps=10, max_reps=10)
    assert t.median_ms > delay_s * 1e3 - 1.5 * timing.HEAD_START_MAX_MS, t.summary()
