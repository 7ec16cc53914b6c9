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
