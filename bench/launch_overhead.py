"""Why a launch-bound baseline can time slower in the grader's worker than in its judge.

    python bench/launch_overhead.py        # on a GPU node, from the repository root

At B4 S128 (hidden 4096, 32 heads) float32 SDPA takes about 50 us, near what it costs the CPU to
issue it, so where it is timed matters. This times that baseline, with harness.timing and the L2
flushed, in four places: this process alone (time_function, as the judge checks a worker's
baseline), this process interleaved with itself (compare_speed, as a worker times candidate and
baseline), and a grader worker (harness.remote) contained and uncontained. One line each, then
one JSON line (RESULT) with every median. The first two are timed again without the head start
(harness.timing.HEAD_START_MAX_MS = 0 in this process only): the events then also see how fast
the host queued the call.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness import remote, spawn  # noqa: E402
from harness.inputs import randn  # noqa: E402
from harness.shared_checks import sdpa_core  # noqa: E402
from harness.tasks import REPO_ROOT  # noqa: E402
from harness.compare import strict_float32  # noqa: E402
from harness import timing  # noqa: E402
from harness.timing import bind_tail, compare_speed, time_function  # noqa: E402

B, S, HIDDEN, HEADS = 4, 128, 4096, 32
REPS = 200


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    results: dict[str, float] = {}
    sets = [tuple(randn(B, S, HIDDEN, tag=f"launch/{n}{i}", device="cuda") for n in "qkv") for i in range(4)]
    fn = bind_tail(sdpa_core, HEADS, False)
    with torch.no_grad(), strict_float32():
        alone = time_function(fn, sets, warmup=3, min_reps=REPS, max_reps=REPS)
        pair = compare_speed(fn, fn, sets, warmup=3, min_reps=REPS, max_reps=REPS, budget_s=0.0)
    results["here, alone"] = alone.median_ms
    results["here, interleaved (candidate)"] = pair.candidate.median_ms
    results["here, interleaved (baseline)"] = pair.baseline.median_ms
    with_head_start, timing.HEAD_START_MAX_MS = timing.HEAD_START_MAX_MS, 0.0
    try:
        with torch.no_grad(), strict_float32():
            alone = time_function(fn, sets, warmup=3, min_reps=REPS, max_reps=REPS)
            pair = compare_speed(fn, fn, sets, warmup=3, min_reps=REPS, max_reps=REPS, budget_s=0.0)
    finally:
        timing.HEAD_START_MAX_MS = with_head_start
    results["here, alone, no head start"] = alone.median_ms
    results["here, interleaved (candidate), no head start"] = pair.candidate.median_ms
    os.environ[spawn.ROLE_ENV] = spawn.JUDGE
    for contain in ("auto", "none"):
        scratch = Path(tempfile.mkdtemp(prefix=f"launch-{contain}-"))
        (scratch / "submission").mkdir()
        client = remote.Client(scratch, scratch / "submission", REPO_ROOT, contain=contain)
        try:
            with remote.using(client):
                far = [tuple(remote.worker_randn(B, S, HIDDEN, tag=f"launch/{n}{i}", device="cuda") for n in "qkv")
                       for i in range(4)]
                bfn = remote.bound(sdpa_core, HEADS, False)
                with torch.no_grad():
                    cmp = compare_speed(bfn, bfn, far, warmup=3, min_reps=REPS, max_reps=REPS, budget_s=0.0)
                name = f"worker ({str(client.info.get('containment', contain)).split(';')[0]})"
                results[f"{name}, interleaved (candidate)"] = cmp.candidate.median_ms
                results[f"{name}, interleaved (baseline)"] = cmp.baseline.median_ms
        finally:
            client.close()
    for name, ms in results.items():
        print(f"{name:55s} {ms * 1e3:8.1f} us")
    print("RESULT " + json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
