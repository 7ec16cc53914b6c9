"""The reference solution timed beside the submission: the yardstick of a scored speed test.

A scored speed test times the student's kernel against a PyTorch baseline
(:func:`harness.timing.compare_speed` or ``compare_steps``). When the grader
asks for a yardstick (``ATTN_KIT_YARDSTICK_IMPL``, see :mod:`harness.remote`),
:func:`side_by_side` runs the same test code a second time in a second worker
that holds the kit's reference solution, on the same inputs (drawn from the same
seeds), and alternates the two in rounds: submission, reference, submission,
reference. The score then rests on the ratio of the two speedups measured
seconds apart, so clock and thermal drift between them cancel, and the
reference's correctness grid is never run while grading a student.

Why two workers, not the reference loaded beside the student's kernel in one:
in one process the submission could call the reference's kernel as its own (an
extension's function is invisible to the operator recorder). In its own worker
it is out of the submission's reach; the judge alone talks to both. Each ratio
is of speedups against the baseline timed in the same worker and block, so
whatever slows a block (another process on the GPU) slows its baseline too.

In a student's own run there is no yardstick: the test times the kernel alone.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from . import remote
from .timing import Comparison

#: Rounds of (submission block, reference block); each block gets its share of the repetitions.
ROUNDS = 2
#: No block has fewer repetitions than this (a large configuration's calls take a second each
#: and vary by well under 1 %: two give a steady median).
MIN_BLOCK_REPS = 2


@dataclass
class SideBySide:
    """The submission's timing, and (with a yardstick) the reference's and the ratio of their speedups."""

    submission: Comparison
    reference: Comparison | None = None
    #: The submission's speedup over the reference's: 1.0 is the reference's speed, 0.5 half of it.
    vs_reference: float | None = None
    rounds: list[float] = field(default_factory=list)  # the same ratio, round by round
    note: str = ""  # why there is no yardstick (empty where none was asked for, or it ran)
    #: Wall seconds the reference's side took (its set-up and its blocks): what the yardstick costs.
    reference_seconds: float = 0.0

    def record_fields(self) -> dict:
        """What the test records beside the submission's comparison (read by grader/scoring.py)."""
        if self.reference is None:
            return {"yardstick": self.note} if self.note else {}
        return dict(vs_reference=self.vs_reference, vs_reference_rounds=self.rounds,
                    reference_speedup=self.reference.speedup, reference=self.reference.as_dict(),
                    reference_seconds=round(self.reference_seconds, 3),
                    yardstick=f"the reference solution timed beside it, {len(self.rounds)} rounds")


def _per_block(options: dict, blocks: int) -> dict:
    """The timing options of one block: a share of the repetitions, budget and kept outputs."""
    out = dict(options)
    for key in ("min_reps", "max_reps"):
        if key in out:
            out[key] = max(math.ceil(out[key] / blocks), MIN_BLOCK_REPS)
    if "budget_s" in out:
        out["budget_s"] = out["budget_s"] / blocks
    if out.get("keep_outputs"):
        out["keep_outputs"] = max(1, math.ceil(out["keep_outputs"] / blocks))
    return out


def _short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _free_cached_memory() -> None:
    """Give a worker's cached GPU memory back (the other worker's block, or the next test, needs it:
    at B64 S4096 each worker's problem takes tens of GB)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def side_by_side(setup: Callable[[], Callable[..., Comparison]], *, rounds: int = ROUNDS,
                 first: Callable[..., Comparison] | None = None, **options) -> SideBySide:
    """Time the submission and, with a yardstick, the reference, in alternating blocks.

    ``setup()`` builds a test's timed problem in the current worker (its module, inputs and
    baseline, through harness.remote's helpers) and returns ``block(**options)``, which times
    it once and returns the Comparison. It is called once per worker; ``first``: the
    submission's block, already set up (the test used its objects for other timings), so
    ``setup`` runs only for the reference. ``options`` are the timing options of the whole
    test (warmup, min_reps, max_reps, budget_s, keep_outputs), shared out between the blocks.
    """
    yard = remote.yardstick_client()
    mine = first if first is not None else setup()
    theirs, note = None, ""

    def free(worker) -> None:
        """The other worker's cached memory back to the GPU before this one's turn (its releases go first)."""
        gc.collect()  # handles dropped in this process are released with the next request
        try:
            if worker is None:
                remote.on_worker(_free_cached_memory)()
            else:
                with remote.using(worker):
                    remote.on_worker(_free_cached_memory)()
        except Exception:  # noqa: BLE001 - a lost worker frees its memory anyway
            pass

    spent = 0.0  # the reference's side, in wall seconds
    if yard is not None:
        free(None)
        t0 = time.perf_counter()
        try:
            with remote.using(yard):
                theirs = setup()
        except Exception as exc:  # noqa: BLE001 - the reference failing is no fault of the submission
            note = f"the reference solution could not be set up beside it: {_short(exc)}"
        spent += time.perf_counter() - t0
    blocks = rounds if theirs is not None else 1
    opts = _per_block(options, blocks)
    # The reference's outputs are not re-checked, nor its baseline timed again by the judge: both
    # sides of its blocks are the kit's own code, checked by the kit's CI.
    ref_opts = {**opts, "check_baseline": False}
    if "keep_outputs" in opts:
        ref_opts["keep_outputs"] = 0
    own, ref = [], []
    try:
        for _ in range(blocks):
            if theirs is not None:
                free(yard)
            own.append(mine(**opts))
            if theirs is not None:
                free(None)
                t0 = time.perf_counter()
                try:
                    with remote.using(yard):
                        ref.append(theirs(**ref_opts))
                except Exception as exc:  # noqa: BLE001 - as above: scored without it, and said so
                    note, theirs = f"the reference solution failed while timed beside it: {_short(exc)}", None
                spent += time.perf_counter() - t0
    finally:
        theirs = None  # the reference's problem (its inputs, tens of GB) is released with the request below
        if yard is not None:
            free(yard)
    result = SideBySide(Comparison.merged(own), note=note, reference_seconds=spent)
    if not note and ref and len(ref) == len(own):
        result.reference = Comparison.merged(ref)
        if result.reference.speedup > 0:
            result.vs_reference = result.submission.speedup / result.reference.speedup
            result.rounds = [m.speedup / r.speedup for m, r in zip(own, ref) if r.speedup > 0]
    return result
