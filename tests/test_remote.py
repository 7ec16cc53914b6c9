"""The judge/worker channel on the CPU: values cross, code does not, the judge checks timings.

A tiny submission folder holds a task-1 file written for each test; a
:class:`harness.remote.Client` runs it in a worker, as the grader's judge does.
"""
from __future__ import annotations

import textwrap
import time

import pytest
import torch

from harness import channel, remote
from harness.shared_checks import call_reporting_error, mha_forward, narrowed_call, nn_multihead_attention
from harness.inputs import mha_weights, randn
from harness.tasks import REPO_ROOT
from harness.timing import bind_tail, compare_speed, compare_steps, time_function


def make_client(tmp_path, source: str, **kwargs) -> remote.Client:
    impl = tmp_path / "worker" / "submission"
    (impl / "task1").mkdir(parents=True)
    (impl / "task1" / "attention.py").write_text(textwrap.dedent(source))
    return remote.Client(tmp_path / "worker", impl, REPO_ROOT, **kwargs)


HELPERS = '''
import torch
from torch import nn

def add_one_(t):
    t.add_(1)
    return None

def fail(kind):
    raise {"value": ValueError, "type": TypeError, "custom": type("Mine", (Exception,), {})}[kind]("told to")

def non_contiguous(t):
    return t.is_contiguous(), tuple(t.stride())

def write_through_pointer(t):
    t.data.fill_(7)  # as a CUDA kernel writes: the tensor's version counter does not move

def write_then_refuse(t):
    t.data[0] = 1.0
    raise RuntimeError("bad input\\nsecond line")

def make(n):
    return torch.arange(n, dtype=torch.float32)

def double_(x, out, i):
    out[i] = 2 * x.sum()
    return out[i]
'''


def test_values_cross_and_in_place_changes_come_back(tmp_path):
    c = make_client(tmp_path, HELPERS)
    try:
        mod = c.import_module("task1.attention")
        t = torch.zeros(3, 4)
        # The judge's inputs are its own: a change the worker makes in place is ignored...
        assert mod.add_one_(t) is None and torch.equal(t, torch.zeros(3, 4))
        # ...unless the call declares that argument an output (a cache the kernel updates).
        assert mod.add_one_.call((t,), outputs=(0,)) is None and torch.equal(t, torch.ones(3, 4))
        assert mod.non_contiguous(torch.randn(4, 3).t()) == (False, (1, 3))
        with pytest.raises(ValueError, match="told to"):
            mod.fail("value")
        with pytest.raises(remote.RemoteError, match="Mine: told to"):
            mod.fail("custom")
        assert c.info["containment"].startswith(("landlock", "uncontained"))
    finally:
        c.close()


def test_outputs_views_errors_and_kept_objects(tmp_path, monkeypatch):
    """What task 5's checks rely on: declared outputs come back even when written through a
    pointer; views made in the worker keep their strides; an error and what was written before
    it both come back; an object kept in the worker is passed by handle and fetched as data."""
    c = make_client(tmp_path, HELPERS)
    monkeypatch.setattr(remote, "_client", c)
    monkeypatch.setenv(remote.ROLE_ENV, remote.JUDGE)
    try:
        mod = c.import_module("task1.attention")
        t = torch.zeros(3)
        remote.call(mod.write_through_pointer, t, outputs=(0,))
        assert torch.equal(t, torch.full((3,), 7.0))
        views = [(0, 1, 2, 3)]  # x.narrow(1, 2, 3) of a [4, 8] tensor: strides (8, 1)
        assert remote.on_worker(narrowed_call)(mod.non_contiguous, views, torch.randn(4, 8)) == (False, (8, 1))
        error, (after,) = remote.on_worker(call_reporting_error)(mod.write_then_refuse, [0], torch.zeros(2))
        assert error == "bad input" and after.tolist() == [1.0, 0.0]
        kept = remote.kept(mod.make, 5)
        assert remote.is_remote(kept) and torch.equal(remote.fetch(kept), torch.arange(5.0))
        out = remote.kept(mod.make, 4)
        steps = [(torch.full((2, 2), float(i)), out, i) for i in range(4)]
        cmp = compare_steps(mod.double_, mod.double_, steps, warmup=1)
        assert cmp.candidate.reps == 4 and cmp.distrust == []
        assert torch.equal(remote.fetch(out), torch.tensor([0.0, 8.0, 16.0, 24.0]))
        timing = time_function(remote.bound(mod.make), [(1000,)], min_reps=5, max_reps=5)
        assert timing.reps == 5 and timing.median_ms > 0
    finally:
        c.close()


def test_a_hung_worker_is_stopped_and_ends_the_run(tmp_path):
    c = make_client(tmp_path, "import time\ndef hang():\n    time.sleep(600)\n",
                    call_timeout_s=3)
    try:
        mod = c.import_module("task1.attention")
        start = time.monotonic()
        with pytest.raises(remote.WorkerFailed, match="no answer within 3 s"):
            mod.hang()
        assert time.monotonic() - start < 20
        with pytest.raises(remote.WorkerFailed, match="not run: the worker was lost"):
            c.import_module("task1.attention")  # each further hang would cost the limit again
    finally:
        c.close()


def test_the_judge_refuses_malformed_frames():
    import os

    r, w = os.pipe()
    os.write(w, (10**12).to_bytes(8, "big"))
    with pytest.raises(channel.ProtocolError, match="header"):
        channel.read_message(r, time.monotonic() + 5)
    header = b'{"__tensors__": [{"dtype": "float32", "shape": [2], "nbytes": 99999999999999}]}'
    os.write(w, len(header).to_bytes(8, "big") + header)
    with pytest.raises(channel.ProtocolError, match="limit"):
        channel.read_message(r, time.monotonic() + 5)
    with pytest.raises(channel.ProtocolError):
        channel.decode({"__pickle__": "x"}, [], lambda h: None)


SLOW_BASELINE = '''
import time, torch
_real = time.perf_counter
_calls = [0]
def _lying_clock():
    # Every other reading jumps ahead: the baseline (timed second in each pair on a CPU) looks slow.
    _calls[0] += 1
    return _real() + (0.05 if _calls[0] % 4 == 2 else 0.0)
time.perf_counter = _lying_clock

def fast(x):
    return x * 2
'''


def time_in_judge(tmp_path, monkeypatch, source: str, hidden: int, batch: int, seq: int):
    """``fast`` of ``source`` (in a worker) against nn.MultiheadAttention, timed as the judge times it."""
    c = make_client(tmp_path, source)
    monkeypatch.setattr(remote, "_client", c)
    monkeypatch.setenv(remote.ROLE_ENV, remote.JUDGE)
    try:
        mod = c.import_module("task1.attention")
        weights = mha_weights(hidden, tag="t/w")
        x = randn(batch, seq, hidden, tag="t/x")
        mha_here = nn_multihead_attention(weights, hidden, 4, "cpu")
        mha = remote.on_worker(nn_multihead_attention)(weights, hidden, 4, "cpu")
        return compare_speed(remote.bound(mod.fast), remote.bound(mha_forward, mha, False), [(x,)],
                             min_reps=20, max_reps=40, budget_s=0.5,
                             judge_baseline=(bind_tail(mha_forward, mha_here, False), [(x,)]))
    finally:
        c.close()


def test_a_patched_timer_is_not_believed(tmp_path, monkeypatch):
    """The worker's clock is the submission's: the judge re-times the baseline and compares."""
    cmp = time_in_judge(tmp_path, monkeypatch, SLOW_BASELINE, hidden=64, batch=2, seq=16)
    assert cmp.distrust, cmp
    assert "judge timed it itself" in cmp.distrust[0] or "timer was tampered" in cmp.distrust[0]
    assert cmp.as_dict()["trusted"] is False


def test_an_honest_timing_is_believed(tmp_path, monkeypatch):
    cmp = time_in_judge(tmp_path, monkeypatch, "def fast(x):\n    return x * 2\n", hidden=256, batch=4, seq=128)
    assert cmp.distrust == [], cmp.distrust
    assert cmp.speedup > 1


#: A submission that rewrites the kit's timer in its own process: the worker's clock reads a
#: fiftieth of the time that passes, so its kernel (and the baseline) look 50x faster on paper.
TIMER_REWRITTEN = '''
import time
from harness import timing

STEP_S = 0.15
_real = time.perf_counter

class _SlowClock:
    def __getattr__(self, name):
        return getattr(time, name)

    def perf_counter(self):
        return _real() / 50

def patch():
    timing.time = _SlowClock()

def work(x):
    time.sleep(STEP_S)
    return x
'''


@pytest.mark.parametrize("rewritten", [False, True], ids=["honest", "timer-rewritten"])
def test_time_the_worker_hides_is_seen_on_the_judges_clock(rewritten, tmp_path, monkeypatch):
    """The judge's clock around the timed block is a floor on the work done in it: a rewritten
    timer (or work on a side stream) that reports far less time than passed gets no credit,
    and an honest block passes."""
    c = make_client(tmp_path, TIMER_REWRITTEN)
    monkeypatch.setattr(remote, "_client", c)
    monkeypatch.setenv(remote.ROLE_ENV, remote.JUDGE)
    try:
        mod = c.import_module("task1.attention")
        if rewritten:
            mod.patch()
        cmp = compare_speed(mod.work, mod.work, [(torch.ones(1),)], warmup=1, min_reps=10, max_reps=10)
        if rewritten:
            assert any("unaccounted for" in d for d in cmp.distrust), cmp.distrust
        else:
            assert cmp.distrust == [], cmp.distrust
    finally:
        c.close()


#: A kernel that is right for its first calls (the correctness checks) and then returns zeros,
#: fast: only its timed repetitions see the zeros.
RIGHT_UNTIL_TIMED = '''
import torch
_calls = [0]

def kernel(x):  # right in its warm-up call only: every timed repetition is wrong, whichever are drawn
    _calls[0] += 1
    return x * 2 if _calls[0] <= 1 else torch.zeros_like(x)

def honest(x):
    return x * 2
'''


@pytest.mark.parametrize("name", ["honest", "kernel"])
def test_timed_outputs_drawn_at_random_come_back_to_the_judge(name, tmp_path, monkeypatch):
    """``keep_outputs``: the worker keeps the outputs of timed repetitions drawn at random, with
    the input set each used, and the judge checks them against float64 itself: a kernel that is
    right only when it is not timed fails, and an honest one passes."""
    from harness.compare import CheckFailed
    from harness.shared_checks import check_timed_samples

    c = make_client(tmp_path, RIGHT_UNTIL_TIMED)
    monkeypatch.setattr(remote, "_client", c)
    monkeypatch.setenv(remote.ROLE_ENV, remote.JUDGE)
    try:
        mod = c.import_module("task1.attention")
        sets = [(torch.full((2, 3, 4), float(i + 1)),) for i in range(3)]
        cmp = compare_speed(getattr(mod, name), mod.honest, sets, warmup=1, min_reps=12, max_reps=12, keep_outputs=2)
        assert len(cmp.samples) == 2 and len(cmp.sampled_sets) == 2, cmp
        assert all(tuple(o.shape) == (1, 3, 4) for o in cmp.samples)  # batch item 0, as data in the judge

        def reference_for(i):
            want = (2 * sets[i][0][:1]).double()
            return want, want.float()

        if name == "honest":
            check_timed_samples(cmp, reference_for, "timed output")
        else:
            with pytest.raises(CheckFailed, match="a timed repetition drawn at random"):
                check_timed_samples(cmp, reference_for, "timed output")
    finally:
        c.close()


#: The timed problem of a toy speed test, written once and run in whichever worker is current:
#: ``kernel`` sleeps STEP_S times its module's SLOWDOWN, the baseline STEP_S.
SPEED_TOY = '''
import time
import torch

STEP_S = 0.004
SLOWDOWN = {slowdown}

def kernel(x):
    time.sleep(STEP_S * SLOWDOWN)
    return x * 2

def baseline(x):
    time.sleep(STEP_S)
    return x * 2
'''


def test_the_reference_is_timed_beside_the_submission_in_its_own_worker(tmp_path, monkeypatch):
    """harness.yardstick.side_by_side runs the same test code in the submission's worker and in a
    second worker that holds the reference, in alternating blocks: a submission half as fast as the
    reference scores a ratio near 0.5, measured round by round, each against its own baseline."""
    from harness import yardstick

    student = make_client(tmp_path / "student", SPEED_TOY.format(slowdown=2.0))
    reference = make_client(tmp_path / "reference", SPEED_TOY.format(slowdown=1.0))
    monkeypatch.setattr(remote, "_client", student)
    monkeypatch.setattr(remote, "_yardstick", reference)
    monkeypatch.setenv(remote.ROLE_ENV, remote.JUDGE)
    monkeypatch.setenv(remote.YARDSTICK_IMPL_ENV, str(reference.impl))
    monkeypatch.setenv(remote.YARDSTICK_DIR_ENV, str(reference.scratch))
    workers = []
    try:
        def setup():
            mod = remote.client().import_module("task1.attention")
            workers.append(remote.client())
            x = remote.worker_randn(4, tag="toy/x")

            def block(**timing):
                return compare_speed(mod.kernel, mod.baseline, [(x,)], **timing)

            return block

        timed = yardstick.side_by_side(setup, warmup=1, min_reps=10, max_reps=10, budget_s=1.0)
    finally:
        student.close()
        reference.close()
    assert workers == [student, reference]  # set up once in each worker, the submission's first
    assert timed.reference is not None and len(timed.rounds) == yardstick.ROUNDS, timed
    assert 0.3 < timed.vs_reference < 0.8, (timed.vs_reference, timed.rounds)
    assert timed.submission.candidate.reps == 2 * 5  # the repetitions shared out between the rounds
    fields = timed.record_fields()
    assert fields["vs_reference"] == timed.vs_reference and "timed beside it" in fields["yardstick"]
    assert remote._client is student  # routing restored after each reference block


def test_without_a_yardstick_the_submission_is_timed_alone(tmp_path, monkeypatch):
    """In a student's own run (or a grader run without the reference) nothing else is timed."""
    from harness import yardstick

    monkeypatch.delenv(remote.YARDSTICK_IMPL_ENV, raising=False)
    calls = []

    def setup():
        calls.append(1)
        return lambda **timing: compare_speed(lambda x: x, lambda x: x, [(torch.ones(2),)], **timing)

    timed = yardstick.side_by_side(setup, warmup=1, min_reps=4, max_reps=4, budget_s=0.1)
    assert calls == [1] and timed.reference is None and timed.vs_reference is None and timed.record_fields() == {}
    assert timed.submission.candidate.reps == 4


def test_operator_counts_from_a_worker_are_only_bounded_whole_numbers():
    """A worker's op_counts reach a check as data: anything but names with whole counts from 0
    to MAX_OP_COUNT is dropped (a bool, a float, a negative, a huge count, a list)."""
    from harness.remote import MAX_OP_COUNT, _op_counts

    assert _op_counts({"bmm": 3, "mm": 0}) == {"bmm": 3, "mm": 0}
    assert _op_counts({"a": True, "b": 1.5, "c": -1, "d": 10**400, "e": MAX_OP_COUNT + 1, "f": "7"}) == {}
    assert _op_counts([("bmm", 3)]) == {} and _op_counts(None) == {}


def test_the_operators_a_worker_call_ran_come_back_named_and_counted(tmp_path):
    """The operator recorder runs in the worker around the call: the judge gets each operator once
    by name (what assert_own_kernel checks the CUDA tasks' rule with) and, asked, how often it ran."""
    from harness.compare import CheckFailed
    from harness.op_recorder import assert_own_kernel, ops_called, ops_counted

    c = make_client(tmp_path, HELPERS + "\ndef two_products(a):\n    return (a @ a) @ a\n")
    try:
        mod = c.import_module("task1.attention")
        a = torch.randn(4, 4)
        _, names = ops_called(mod.two_products, a)
        _, counts = ops_counted(mod.two_products, a)
        assert "mm" in names and names == sorted(set(names)), names
        assert counts["mm"] == 2 and set(counts) == set(names), counts
        with pytest.raises(CheckFailed, match="called PyTorch's mm"):
            assert_own_kernel(mod.two_products, a)
    finally:
        c.close()


def test_the_judge_starts_the_yardstick_worker_early_and_its_client_adopts_it(tmp_path, monkeypatch):
    """spawn.start_early (the judge's conftest) starts the yardstick's worker too, while pytest
    imports; the yardstick's client then uses that process instead of starting one in the first
    timed test (about 20 s there on the H200). A worker nobody adopts ends with the run."""
    from harness import spawn

    for name in ("student", "reference"):
        (tmp_path / name / "submission" / "task1").mkdir(parents=True)
        (tmp_path / name / "submission" / "task1" / "attention.py").write_text("def answer():\n    return 42\n")
    monkeypatch.setenv(remote.ROLE_ENV, remote.JUDGE)
    monkeypatch.setenv(remote.WORKER_DIR_ENV, str(tmp_path / "student"))
    monkeypatch.setenv(remote.YARDSTICK_IMPL_ENV, str(tmp_path / "reference" / "submission"))
    monkeypatch.setenv(remote.YARDSTICK_DIR_ENV, str(tmp_path / "reference"))
    monkeypatch.setenv(remote.CONTAIN_ENV, "none")
    monkeypatch.setattr(remote, "_yardstick", None)
    monkeypatch.setattr(spawn, "_early", {})
    spawn.start_early()
    early = dict(spawn._early)
    assert set(early) == {tmp_path / "student", tmp_path / "reference"}
    yard = remote.yardstick_client()
    try:
        assert yard.import_module("task1.attention").answer() == 42
        assert yard.info["pid"] == early[tmp_path / "reference"].proc.pid  # adopted, not started anew
        assert set(spawn._early) == {tmp_path / "student"}
    finally:
        remote.shutdown()
    assert spawn._early == {} and early[tmp_path / "student"].stopped  # not adopted: stopped with the run
