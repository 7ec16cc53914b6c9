"""Honest timings: the one module every task test and benchmark times with.

What it does, and why:

* **CUDA events** around each repetition: GPU work is asynchronous, so a host
  clock without a synchronisation measures the launch, not the work.
* **Warm-up** first, so one-time costs (module load, the allocator, cuBLAS
  handles, lazy extension loading) stay out of the numbers.
* **An L2 flush** (a write over a buffer larger than the L2) before each
  repetition, so no repetition finds its inputs already in the cache.
* **A head start**: before each repetition the GPU spins for a moment (twice what the host
  took to queue the call lately), so the host has queued the whole repetition before the GPU
  reaches it and the events time the GPU's work, not how fast this process launches. Without
  it a launch-bound call (float32 SDPA at B4 S128, about 50 us) times up to 1.9x apart in two
  processes (bench/launch_overhead.py). Host work slower than the head start is still timed.
* **Several input sets**, used in turn, so nothing can be cached between
  repetitions, not even by a submission that remembers its last answer.
* **Many repetitions** (adaptive: as many as fit in ``budget_s``, within
  ``min_reps``..``max_reps``); the **median** and the interquartile range.
* **Side by side**: :func:`compare_speed` interleaves candidate and baseline
  repetitions in one process, so clock changes and other load hit both alike,
  and reports the median of the per-pair ratios with its spread.
* **Timed outputs kept for a re-check** (``keep_outputs``): the outputs of a few
  timed repetitions, drawn at random once the timing starts, are kept (batch item 0)
  for the test to check against float64, so a kernel that is right only when it is
  not being timed (one that counts its calls, or leaves its work on a side stream
  the events do not see) is caught.

Without a GPU the same API runs with a wall clock (``time.perf_counter``) and says so
in ``Timing.clock``.
"""
from __future__ import annotations

import math
import random
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

CUDA_CLOCK = "CUDA events"
WALL_CLOCK = "wall clock (CPU)"
#: The flush buffer is this many times the L2 size (and at least MIN_FLUSH_BYTES).
FLUSH_L2_MULTIPLE = 2
MIN_FLUSH_BYTES = 64 << 20
DEFAULT_WARMUP = 3
DEFAULT_MIN_REPS = 10
DEFAULT_MAX_REPS = 200
DEFAULT_BUDGET_S = 1.0
#: The head start (see the module docstring): HEAD_START_FACTOR times the median host enqueue
#: time of the last HEAD_START_WINDOW calls, within HEAD_START_MIN_MS..HEAD_START_MAX_MS (the
#: largest spin a repetition may add: the judge allows no more than this per run).
HEAD_START_FACTOR = 2.0
HEAD_START_MIN_MS = 0.1
HEAD_START_MAX_MS = 2.0
HEAD_START_WINDOW = 5
#: Spin length used once per device to learn how many spin cycles make a millisecond.
SLEEP_CALIBRATION_CYCLES = 1_000_000


@dataclass
class Timing:
    """Statistics of repeated runs, in milliseconds."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    max_ms: float
    reps: int
    clock: str
    l2_flushed: bool
    input_sets: int
    total_ms: float = 0.0  # every timed repetition together (the judge checks it against its own clock)
    head_start_ms: float = 0.0  # the GPU's spin before the timed repetitions, together (not timed)
    samples_ms: list[float] = field(default_factory=list)  # every repetition (blocks merge exactly)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return (self.p75_ms - self.p25_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def summary(self) -> str:
        flush = ", L2 flushed" if self.l2_flushed else ""
        return (
            f"{self.median_ms:.4g} ms (median of {self.reps}; IQR {self.p25_ms:.4g}-"
            f"{self.p75_ms:.4g} ms; {self.clock}{flush}; {self.input_sets} input sets)"
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Comparison:
    """A candidate timed against a baseline in the same process; speedup = baseline / candidate."""

    candidate: Timing
    baseline: Timing
    speedup: float
    speedup_p25: float
    speedup_p75: float
    #: Why the judge does not believe these numbers (empty: it does). See compare_speed.
    distrust: list[str] = field(default_factory=list)
    #: ``keep_outputs``: which input set (compare_speed) or step (compare_steps) each kept
    #: output came from, and the outputs themselves (batch item 0; tensors, not in as_dict).
    sampled_sets: list[int] = field(default_factory=list)
    samples: list = field(default_factory=list, repr=False)
    #: The per-pair (or per-step) ratios baseline/candidate the speedup is the median of.
    ratios: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"speedup {self.speedup:.3g}x (IQR {self.speedup_p25:.3g}-{self.speedup_p75:.3g}x): "
            f"{self.candidate.median_ms:.4g} ms vs baseline {self.baseline.median_ms:.4g} ms "
            f"({self.candidate.reps} interleaved reps, {self.candidate.clock})"
        )

    def as_dict(self) -> dict:
        return {
            "speedup": self.speedup,
            "speedup_p25": self.speedup_p25,
            "speedup_p75": self.speedup_p75,
            "candidate": self.candidate.as_dict(),
            "baseline": self.baseline.as_dict(),
            "trusted": not self.distrust,
            "distrust": list(self.distrust),
            "sampled_sets": list(self.sampled_sets),
            "ratios": list(self.ratios),
        }

    def sampled_outputs(self) -> list:
        """The kept outputs (what the judge fetches from the worker after the timing)."""
        return list(self.samples)

    @classmethod
    def from_dict(cls, d: dict) -> "Comparison":
        return cls(Timing(**d["candidate"]), Timing(**d["baseline"]), float(d["speedup"]),
                   float(d["speedup_p25"]), float(d["speedup_p75"]), list(d.get("distrust", [])),
                   [int(i) for i in d.get("sampled_sets", [])], [], [float(r) for r in d.get("ratios", [])])

    @classmethod
    def merged(cls, blocks: Sequence["Comparison"]) -> "Comparison":
        """One comparison from several timed blocks of the same problem (their repetitions pooled)."""
        if len(blocks) == 1:
            return blocks[0]
        c, b = blocks[0].candidate, blocks[0].baseline
        ratios = [r for blk in blocks for r in blk.ratios]
        return cls(
            candidate=_stats([x for blk in blocks for x in blk.candidate.samples_ms], c.clock, c.l2_flushed, c.input_sets,
                             sum(blk.candidate.head_start_ms for blk in blocks)),
            baseline=_stats([x for blk in blocks for x in blk.baseline.samples_ms], b.clock, b.l2_flushed, b.input_sets,
                            sum(blk.baseline.head_start_ms for blk in blocks)),
            speedup=statistics.median(ratios), speedup_p25=_quantile(ratios, 0.25), speedup_p75=_quantile(ratios, 0.75),
            distrust=[d for blk in blocks for d in blk.distrust],
            sampled_sets=[i for blk in blocks for i in blk.sampled_sets],
            samples=[o for blk in blocks for o in blk.samples],
            ratios=ratios,
        )


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _stats(samples: list[float], clock: str, flushed: bool, n_sets: int, head_start_ms: float = 0.0) -> Timing:
    return Timing(
        head_start_ms=head_start_ms,
        median_ms=statistics.median(samples),
        p25_ms=_quantile(samples, 0.25),
        p75_ms=_quantile(samples, 0.75),
        min_ms=min(samples),
        max_ms=max(samples),
        total_ms=sum(samples),
        samples_ms=[float(x) for x in samples],
        reps=len(samples),
        clock=clock,
        l2_flushed=flushed,
        input_sets=n_sets,
    )


def _device_of(input_sets: Sequence[Sequence]) -> torch.device:
    for args in input_sets:
        for a in args:
            if isinstance(a, torch.Tensor):
                return a.device
            if isinstance(a, (tuple, list)):
                for b in a:
                    if isinstance(b, torch.Tensor):
                        return b.device
    return torch.device("cpu")


class L2Flusher:
    """Evicts the GPU's L2 cache by writing over a buffer larger than it."""

    def __init__(self, device: torch.device):
        props = torch.cuda.get_device_properties(device)
        l2 = getattr(props, "L2_cache_size", 0) or (50 << 20)
        nbytes = max(FLUSH_L2_MULTIPLE * l2, MIN_FLUSH_BYTES)
        self.buffer = torch.empty(nbytes // 4, dtype=torch.int32, device=device)

    def flush(self) -> None:
        self.buffer.zero_()


_SLEEP_CYCLES_PER_MS: dict[int, float] = {}


def _sleep_cycles_per_ms(device: torch.device) -> float:
    """How many ``torch.cuda._sleep`` cycles make a millisecond on ``device`` (measured once)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SLEEP_CYCLES_PER_MS:
        with torch.cuda.device(index):
            torch.cuda._sleep(SLEEP_CALIBRATION_CYCLES)  # the first launch loads the kernel
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.cuda._sleep(SLEEP_CALIBRATION_CYCLES)
            end.record()
            end.synchronize()
            _SLEEP_CYCLES_PER_MS[index] = SLEEP_CALIBRATION_CYCLES / max(start.elapsed_time(end), 1e-3)
    return _SLEEP_CYCLES_PER_MS[index]


class _Runner:
    """Times one callable on rotating inputs, with the chosen clock."""

    def __init__(self, fn: Callable, input_sets: Sequence[Sequence], device: torch.device, flush: bool):
        if not input_sets:
            raise ValueError("time_function needs at least one input set")
        self.fn, self.input_sets, self.device = fn, list(input_sets), device
        self.cuda = device.type == "cuda"
        self.flusher = L2Flusher(device) if (self.cuda and flush) else None
        self.i = 0
        self.pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.samples: list[float] = []
        self.enqueue_ms: deque[float] = deque(maxlen=HEAD_START_WINDOW)
        self.cycles_per_ms = _sleep_cycles_per_ms(device) if self.cuda and hasattr(torch.cuda, "_sleep") else 0.0
        self.head_start_ms = 0.0  # of the next repetition
        self.head_start_total_ms = 0.0  # of the repetitions in ``samples`` and ``pending``

    def _queue(self, args):
        """``fn(*args)``, with the host's time to queue it noted for the next head start."""
        t0 = time.perf_counter()
        out = self.fn(*args)
        self.enqueue_ms.append((time.perf_counter() - t0) * 1e3)
        if self.cycles_per_ms:
            wanted = HEAD_START_FACTOR * statistics.median(self.enqueue_ms)
            self.head_start_ms = min(max(wanted, HEAD_START_MIN_MS), HEAD_START_MAX_MS)
        return out

    def warm(self, args):
        """An untimed call (a warm-up step), which still teaches the head start."""
        return self._queue(args)

    def run_once(self):
        """One timed repetition; returns what ``fn`` returned (for :func:`_sample_of`)."""
        args = self.input_sets[self.i % len(self.input_sets)]
        self.i += 1
        if self.cuda:
            if self.head_start_ms:
                torch.cuda._sleep(int(self.head_start_ms * self.cycles_per_ms))
                self.head_start_total_ms += self.head_start_ms
            if self.flusher is not None:
                self.flusher.flush()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self._queue(args)
            end.record()
            self.pending.append((start, end))
        else:
            t0 = time.perf_counter()
            out = self.fn(*args)
            self.samples.append((time.perf_counter() - t0) * 1e3)
        return out

    def collect(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.samples.extend(s.elapsed_time(e) for s, e in self.pending)
            self.pending.clear()
        return self.samples

    def discard(self) -> None:
        """Forget the repetitions so far (the warm-up's)."""
        self.collect()
        self.samples.clear()
        self.head_start_total_ms = 0.0

    def timing(self, n_sets: int) -> Timing:
        """The statistics of every repetition since the last :meth:`discard`."""
        return _stats(self.collect(), self.clock, self.flusher is not None, n_sets, self.head_start_total_ms)

    @property
    def clock(self) -> str:
        return CUDA_CLOCK if self.cuda else WALL_CLOCK


def _sample_of(out):
    """Batch item 0 of an output (the first tensor of a tuple), copied: what a kept output holds.

    The copy is queued on the current stream after the repetition's end event, so it is not
    timed, and it copies what the output holds by then: work left running on another stream
    has not reached it."""
    if isinstance(out, (tuple, list)):
        out = next((o for o in out if isinstance(o, torch.Tensor)), None)
    if not isinstance(out, torch.Tensor):
        return out
    return (out[:1] if out.dim() > 0 else out).clone()


def _chosen_reps(reps: int, keep: int) -> set[int]:
    """Which timed repetitions keep their output: drawn when the timing starts, from the
    operating system's randomness (no seed a submission could derive them from)."""
    return set(random.SystemRandom().sample(range(reps), min(max(keep, 0), reps)))


def _plan_reps(runners: list[_Runner], warmup: int, min_reps: int, max_reps: int, budget_s: float) -> int:
    """Warm up every runner, then pick how many repetitions fit in the time budget."""
    for r in runners:
        for _ in range(max(warmup, 1)):
            r.run_once()
        r.collect()
    per_round = sum(statistics.median(r.samples) for r in runners) / 1e3
    for r in runners:
        r.discard()
    if per_round <= 0:
        return max_reps
    return int(min(max(budget_s / per_round, min_reps), max_reps))


def time_function(
    fn: Callable,
    input_sets: Sequence[Sequence],
    *,
    warmup: int = DEFAULT_WARMUP,
    min_reps: int = DEFAULT_MIN_REPS,
    max_reps: int = DEFAULT_MAX_REPS,
    budget_s: float = DEFAULT_BUDGET_S,
    flush_l2: bool = True,
) -> Timing:
    """Time ``fn(*input_sets[i % n])`` over many repetitions; see the module docstring.

    In the judge (``fn`` in the worker) the timing runs there and the judge checks its clock;
    a clock that reports more than passed fails the check (no number is better than a forged one).
    """
    from .remote import is_remote

    if is_remote(fn):
        data, wall_ms = _in_worker(time_function, (fn, input_sets),
                                   dict(warmup=warmup, min_reps=min_reps, max_reps=max_reps, budget_s=budget_s,
                                        flush_l2=flush_l2))
        timing = Timing(**data)
        distrust = _wall_distrust(timing.total_ms, wall_ms)
        if distrust:
            from .compare import CheckFailed

            raise CheckFailed(distrust[0])
        return timing
    device = _device_of(input_sets)
    runner = _Runner(fn, input_sets, device, flush_l2)
    reps = _plan_reps([runner], warmup, min_reps, max_reps, budget_s)
    for _ in range(reps):
        runner.run_once()
    return runner.timing(len(input_sets))


def compare_speed(
    candidate: Callable,
    baseline: Callable,
    input_sets: Sequence[Sequence],
    *,
    baseline_input_sets: Sequence[Sequence] | None = None,
    warmup: int = DEFAULT_WARMUP,
    min_reps: int = DEFAULT_MIN_REPS,
    max_reps: int = DEFAULT_MAX_REPS,
    budget_s: float = 2 * DEFAULT_BUDGET_S,
    flush_l2: bool = True,
    judge_baseline: tuple[Callable, Sequence[Sequence]] | None = None,
    check_baseline: bool = True,
    keep_outputs: int = 0,
) -> Comparison:
    """Time ``candidate`` and ``baseline`` interleaved on the same inputs; speedup = baseline/candidate.

    ``keep_outputs``: keep the candidate's output (batch item 0) of that many timed
    repetitions drawn at random, with the index of the input set each one used
    (``Comparison.samples``, ``sampled_sets``): the test checks them against float64.

    ``baseline_input_sets`` lets the baseline take its arguments in its own form
    (say, a module instead of raw weights); they must describe the same problem.

    In the grader's judge, ``candidate`` lives in the worker (harness.remote): kernels
    are timed in the process that launches them, so the comparison runs there, and
    the judge then checks the numbers it gets back (see :func:`_judge_timing`);
    ``judge_baseline`` (a function and input sets of the judge's own) lets it time the
    baseline itself; ``check_baseline=False`` skips that (the reference's worker of
    harness.yardstick, where both sides are the kit's code).
    """
    from .remote import is_remote

    if is_remote(candidate):
        return _judge_timing(candidate, baseline, input_sets, baseline_input_sets,
                             judge_baseline if check_baseline else None,
                             dict(warmup=warmup, min_reps=min_reps, max_reps=max_reps, budget_s=budget_s,
                                  flush_l2=flush_l2, keep_outputs=keep_outputs))
    device = _device_of(input_sets)
    cand = _Runner(candidate, input_sets, device, flush_l2)
    base = _Runner(baseline, baseline_input_sets or input_sets, device, flush_l2)
    reps = _plan_reps([cand, base], warmup, min_reps, max_reps, budget_s)
    chosen, sampled_sets, samples = _chosen_reps(reps, keep_outputs), [], []
    for i in range(reps):
        for runner in ((cand, base) if i % 2 == 0 else (base, cand)):
            out = runner.run_once()
            if runner is cand and i in chosen:
                sampled_sets.append((cand.i - 1) % len(cand.input_sets))
                samples.append(_sample_of(out))
            del out  # a large output is freed before the next repetition
    return _comparison(cand, base, len(input_sets), len(baseline_input_sets or input_sets), sampled_sets, samples)


def _comparison(cand: "_Runner", base: "_Runner", cand_sets: int, base_sets: int, sampled: list,
                samples: list) -> Comparison:
    """The Comparison of two runners that took turns (compare_speed, compare_steps): each side's
    statistics, and the speedup as the median (and quartiles) of the per-repetition ratios."""
    c, b = cand.timing(cand_sets), base.timing(base_sets)
    ratios = [bi / ci for bi, ci in zip(b.samples_ms, c.samples_ms) if ci > 0]
    return Comparison(
        candidate=c,
        baseline=b,
        speedup=statistics.median(ratios),
        speedup_p25=_quantile(ratios, 0.25),
        speedup_p75=_quantile(ratios, 0.75),
        sampled_sets=sampled,
        samples=samples,
        ratios=ratios,
    )


def bind_tail(fn: Callable, *tail, **kwargs) -> Callable:
    """``lambda *inputs: fn(*inputs, *tail, **kwargs)``: what is timed, built where it runs."""
    def bound_fn(*inputs):
        return fn(*inputs, *tail, **kwargs)

    return bound_fn


#: How far the worker's baseline median may be above the judge's own before the numbers are not
#: believed (CUDA events are steady; a wall clock on a shared CPU is not). Only a slower baseline
#: helps a submission; a faster one (the judge's own launches queued behind its Python) costs it.
BASELINE_AGREEMENT = {CUDA_CLOCK: 1.5, WALL_CLOCK: 3.0}
#: Warm-up and repetitions of the judge's own baseline timing: as many as the worker's block timed,
#: within these bounds (at B64 S4096 a baseline call takes 0.4 s: twenty repetitions there cost
#: 8 s a block for a check that needs the median within BASELINE_AGREEMENT, not 1 %).
JUDGE_BASELINE_WARMUP = 3
JUDGE_BASELINE_MIN_REPS = 2
JUDGE_BASELINE_REPS = 20


def _in_worker(func: Callable, args: tuple, kwargs: dict, *, with_result: bool = False):
    """Run the kit's timing function ``func`` in the worker; its result as a dict, and the
    milliseconds the judge's own clock saw around the request (after a device-wide sync);
    ``with_result``: also the handle of the result, still in the worker."""
    from .remote import on_worker

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = on_worker(func).call(args, kwargs, keep=True)
    data = result.as_dict()
    wall_ms = (time.perf_counter() - start) * 1e3
    return (data, wall_ms, result) if with_result else (data, wall_ms)


def _wall_distrust(reported_ms: float, wall_ms: float) -> list[str]:
    """The worker's clock may not report more timed work than passed on the judge's clock."""
    if reported_ms > wall_ms * 1.01 + 1.0:
        return [f"the worker reported {reported_ms:.1f} ms of timed work in {wall_ms:.1f} ms of the "
                "judge's clock: its timer was tampered with"]
    return []


#: What the judge's clock may see around a timed block beyond the time the worker reported,
#: before the difference counts as work hidden from the timed events (a side stream, a timer
#: rewritten to read less): a fixed slack for the request and lazy set-up (a library handle
#: made on the first call), a per-run allowance (the L2 flush, events, Python), and a share
#: of the reported time for jitter. Warm-up runs are allowed at twice their reported median,
#: and each run its head start (the worker's count, but never more than HEAD_START_MAX_MS a run).
HIDDEN_WORK_SLACK_MS = 2000.0
HIDDEN_WORK_PER_RUN_MS = 1.0
HIDDEN_WORK_SHARE = 0.25


def _head_starts(timing: Timing) -> float:
    """The GPU's spin before a side's timed runs, as the worker reported it, within what it could be."""
    return min(max(timing.head_start_ms, 0.0), HEAD_START_MAX_MS * timing.reps)


def _hidden_work_distrust(cmp: "Comparison", wall_ms: float, warmup: int) -> list[str]:
    """The judge's clock around the whole block gives a floor on the time the work took: a
    candidate that reports far less time than passed, with nothing else to explain it, hid work."""
    c, b = cmp.candidate, cmp.baseline
    reported = c.total_ms + b.total_ms
    warmups = max(warmup, 1)
    allowed = (HIDDEN_WORK_SLACK_MS + HIDDEN_WORK_PER_RUN_MS * (c.reps + b.reps + 2 * warmups)
               + 2 * warmups * (c.median_ms + b.median_ms) + HIDDEN_WORK_SHARE * reported
               + _head_starts(c) + _head_starts(b) + 2 * warmups * HEAD_START_MAX_MS)
    unaccounted = wall_ms - reported
    if unaccounted > allowed:
        return [f"the timed block took {wall_ms:.0f} ms on the judge's clock, but the worker reported "
                f"{reported:.0f} ms of work in it: {unaccounted:.0f} ms are unaccounted for (more than the "
                f"{allowed:.0f} ms overheads could take), as when work runs outside the timed events (a side "
                "stream) or the timer was rewritten"]
    return []


def _baseline_distrust(worker_ms: float, own: Timing) -> list[str]:
    ratio = worker_ms / own.median_ms if own.median_ms > 0 else math.inf
    if ratio > BASELINE_AGREEMENT[own.clock]:
        return [f"the baseline took {worker_ms:.4g} ms in the worker but {own.median_ms:.4g} ms when the "
                f"judge timed it itself ({ratio:.2f}x): the submission slowed the baseline or rewrote the timer"]
    return []


def _judge_timing(candidate, baseline, input_sets, baseline_input_sets, judge_baseline, options) -> Comparison:
    """Run :func:`compare_speed` in the worker, then check it against what the judge sees itself.

    * The worker's clock may not report more time than passed on the judge's clock
      around the whole request (a patched timer that slows the baseline on paper).
    * The baseline is the kit's code on the kit's inputs: the judge times it again in
      its own process (``judge_baseline``), and a worker median more than
      :data:`BASELINE_AGREEMENT` times above it means the worker's baseline was
      slowed down or its timer rewritten.
    Numbers that fail a check come back with ``distrust`` set, and the grader gives
    them no credit.
    """
    def own_timing(worker_reps: int) -> Timing:
        fn, sets = judge_baseline
        reps = min(max(worker_reps, JUDGE_BASELINE_MIN_REPS), JUDGE_BASELINE_REPS)
        warmup = min(max(options["warmup"], 1), JUDGE_BASELINE_WARMUP)
        return time_function(fn, sets, warmup=warmup, min_reps=reps, max_reps=reps, flush_l2=options["flush_l2"])

    return _judged(compare_speed, (candidate, baseline, input_sets),
                   dict(options, baseline_input_sets=baseline_input_sets), own_timing if judge_baseline else None)


def _judged(func: Callable, args: tuple, kwargs: dict, own_timing: Callable[[int], Timing] | None) -> Comparison:
    """``func`` (compare_speed or compare_steps) run in the worker, with the judge's checks: its
    own clock around the request (no more time reported than passed, and no large share of the
    time that passed unreported), and (``own_timing(reps)``, given the repetitions the worker's
    baseline ran) its own timing of the baseline."""
    data, wall_ms, result = _in_worker(func, args, kwargs, with_result=True)
    cmp = Comparison.from_dict(data)
    if cmp.sampled_sets:  # the kept outputs, fetched after the judge's clock stopped
        cmp.samples = result.sampled_outputs()
    cmp.distrust += _wall_distrust(cmp.candidate.total_ms + cmp.baseline.total_ms, wall_ms)
    cmp.distrust += _hidden_work_distrust(cmp, wall_ms, kwargs.get("warmup", DEFAULT_WARMUP))
    if own_timing is not None:
        cmp.distrust += _baseline_distrust(cmp.baseline.median_ms, own_timing(cmp.baseline.reps))
    return cmp


def _time_steps(runners: list[_Runner], steps_per_runner: list[Sequence[Sequence]], warmup: int,
                keep_outputs: int = 0) -> tuple[list[int], list]:
    """Warm-up steps, then every step once per runner, alternating which goes first; the
    steps and outputs (batch item 0) of ``keep_outputs`` timed steps of ``runners[0]``."""
    for t in range(min(warmup, len(steps_per_runner[0]))):
        for r, steps in zip(runners, steps_per_runner):
            r.warm(steps[t])
    chosen, sampled_steps, samples = _chosen_reps(len(steps_per_runner[0]), keep_outputs), [], []
    for t in range(len(steps_per_runner[0])):
        order = list(zip(runners, steps_per_runner))
        for r, steps in (order if t % 2 == 0 else order[::-1]):
            r.input_sets, r.i = [steps[t]], 0
            out = r.run_once()
            if r is runners[0] and t in chosen:
                sampled_steps.append(t)
                samples.append(_sample_of(out))
            del out
    return sampled_steps, samples


def time_steps(fn: Callable, steps: Sequence[Sequence], *, warmup: int = DEFAULT_WARMUP,
               flush_l2: bool = True) -> Timing:
    """Time a stateful loop on its own: ``fn(*steps[t])`` for every t in order, each step timed
    with CUDA events after an L2 flush (the first ``warmup`` steps run once untimed first, as in
    :func:`compare_steps`, whose step timer this is). For benchmarks: the graded tests compare."""
    if not steps:
        raise ValueError("time_steps needs at least one step")
    runner = _Runner(fn, steps[:1], _device_of(steps), flush_l2)
    _time_steps([runner], [steps], warmup)
    return runner.timing(len(steps))


def compare_steps(
    candidate: Callable,
    baseline: Callable,
    steps: Sequence[Sequence],
    *,
    baseline_steps: Sequence[Sequence] | None = None,
    warmup: int = DEFAULT_WARMUP,
    flush_l2: bool = True,
    judge_baseline: tuple[Callable, Sequence[Sequence]] | None = None,
    check_baseline: bool = True,
    keep_outputs: int = 0,
) -> Comparison:
    """Time a stateful loop (decode steps that must run in order): ``candidate(*steps[t])`` and
    ``baseline(*baseline_steps[t])`` alternate step by step, each step timed on its own (an L2
    flush before each); speedup = the median of the per-step ratios baseline/candidate.

    The first ``warmup`` steps run once untimed first, then every step is timed from the
    start: a step must give the same state when it runs again (a decode step rewrites its
    own cache row). In the judge, as :func:`compare_speed`: the loop runs in the worker and
    the judge checks its clock and times ``judge_baseline`` (a function and steps of its own).
    """
    from .remote import is_remote

    if is_remote(candidate):
        def own_timing(_reps: int) -> Timing:  # every step once, as the worker's
            fn, own_steps = judge_baseline
            runner = _Runner(fn, own_steps[:1], _device_of(own_steps), flush_l2)
            _time_steps([runner], [own_steps], warmup)
            return runner.timing(len(own_steps))

        return _judged(compare_steps, (candidate, baseline, steps),
                       dict(baseline_steps=baseline_steps, warmup=warmup, flush_l2=flush_l2,
                            keep_outputs=keep_outputs),
                       own_timing if judge_baseline and check_baseline else None)
    baseline_steps = baseline_steps or steps
    if len(baseline_steps) != len(steps) or not steps:
        raise ValueError("compare_steps needs the same number of steps (at least one) for both")
    device = _device_of(steps)
    cand = _Runner(candidate, steps[:1], device, flush_l2)
    base = _Runner(baseline, baseline_steps[:1], device, flush_l2)
    base.flusher = cand.flusher or base.flusher
    sampled_steps, samples = _time_steps([cand, base], [steps, baseline_steps], warmup, keep_outputs)
    return _comparison(cand, base, len(steps), len(baseline_steps), sampled_steps, samples)


#: Size of the copy that measures memory bandwidth: far larger than any L2.
COPY_BANDWIDTH_BYTES = 1 << 30


def time_copy(nbytes: int = COPY_BANDWIDTH_BYTES, device="cuda", **options) -> Timing:
    """A device-to-device copy of ``nbytes``, timed as :func:`time_function` times anything
    (``options``: its warm-up and repetitions). The copy streams far more than any L2 holds,
    so there is nothing for a flush to evict: none is done."""
    src = torch.empty(nbytes // 4, device=device).uniform_()
    dst = torch.empty_like(src)
    timing = time_function(lambda d, s: d.copy_(s), [(dst, src)], flush_l2=False, **options)
    del src, dst
    return timing


def copy_bandwidth(nbytes: int = COPY_BANDWIDTH_BYTES, reps: int = 20, device="cuda") -> float:
    """The practical ceiling of GPU memory, in bytes/s: a large device-to-device copy,
    counting bytes read plus bytes written (median of ``reps``, CUDA events)."""
    timing = time_copy(nbytes, device, warmup=3, min_reps=reps, max_reps=reps)
    return 2 * nbytes / (timing.median_ms / 1e3)
