"""Repeatability of a grading: the same submission graded several times, compared (issue 15).

    python scripts/grading_repeats.py OUT_1 OUT_2 ... [--tolerance 0.03]

Each OUT is a ``grader run --out`` folder of the same submission. Printed, one line per run:
its wall time (the grader's own ``execution_time``), each task's points and seconds, each
speedup's value and its ratio to the reference timed beside it; then, over the runs, whether
the points were identical and how far each speedup ratio strays from the median of the runs
(the issue asks for +-3 %), and the GPU time the reference's timed repetitions took in each
run (from the task reports' measurements: what grading a student costs on the reference's
side). Exit status 0 when the points repeat and every ratio is within the tolerance, else 1.

It reads only the grader's own files (raw.json, read as `grader collect` reads it, and the
pytest JSON reports it wrote). Run it from the repository root (or with the kit installed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from grader.class_results import DONE, read_result

#: The issue's bound: each speedup ratio within 3 % of the median of the runs.
DEFAULT_TOLERANCE = 0.03


def load_run(out: Path) -> dict:
    """One run's figures: points per task, seconds per task, speedups, the reference's timed ms."""
    result = read_result(out)  # the class tools' reader: a missing or broken folder says why
    if result.state != DONE:
        raise SystemExit(f"{out}: {result.state}: {result.detail}")
    raw = result.raw
    run = dict(out=str(out), seconds=raw.get("execution_time"), points={}, task_seconds={}, speedups={},
               reference_ms=0.0, reference_seconds=raw.get("reference_seconds"))
    for name, task in raw["tasks"].items():
        run["points"][name] = task.get("points")
        if task.get("bonus_max_points"):  # a bonus part's points repeat too, kept apart as they are paid
            run["points"][f"{name} bonus"] = task.get("bonus_points")
        run["task_seconds"][name] = sum((task.get("stage_seconds") or {}).values()) or None
        bonus_speedups = [s for part in task.get("bonus") or [] for s in part.get("speedups", [])]
        for s in (*task.get("speedups", []), *bonus_speedups):
            run["speedups"][f"{name}: {s['name']}"] = dict(value=s.get("value"), vs_reference=s.get("vs_reference"))
    for report in sorted((out / "logs").rglob("*-pytest.json")) if (out / "logs").is_dir() else []:
        run["reference_ms"] += reference_timed_ms(json.loads(report.read_text()))
    return run


def reference_timed_ms(report: dict) -> float:
    """The reference's timed repetitions (its kernel and its baseline) in one pytest JSON report."""
    total = 0.0
    for test in report.get("tests", []):
        for value in ((test.get("metadata") or {}).get("measurements") or {}).values():
            for m in value if isinstance(value, list) else [value]:
                ref = m.get("reference") if isinstance(m, dict) else None
                if isinstance(ref, dict):
                    total += sum(float((ref.get(side) or {}).get("total_ms") or 0.0) for side in ("candidate", "baseline"))
    return total


def summarize(runs: list[dict], tolerance: float = DEFAULT_TOLERANCE) -> tuple[list[str], bool]:
    """The printed lines and whether the runs repeat (same points, ratios within ``tolerance``)."""
    lines, ok = [], True
    for i, r in enumerate(runs, 1):
        pts = " ".join(f"{t}={p:g}" for t, p in r["points"].items())
        secs = " ".join(f"{t}={s:.0f}s" for t, s in r["task_seconds"].items() if s)
        spd = "; ".join(f"{k} {v['value']:.3g}x vs_reference {v['vs_reference']:.3f}" if v["vs_reference"] is not None
                        else f"{k} {v['value']}" for k, v in r["speedups"].items())
        total = f"{r['seconds']:.0f} s" if r["seconds"] is not None else "?"
        side = r.get("reference_seconds")
        side = f" (its whole side, set-up included: {side:.1f} s)" if side is not None else ""
        lines.append(f"run {i}: {total}; points {pts}; seconds {secs}; reference timed {r['reference_ms'] / 1e3:.1f} s"
                     + side + (f"; {spd}" if spd else ""))
    distinct = {json.dumps(r["points"], sort_keys=True) for r in runs}
    if len(distinct) == 1:
        lines.append(f"points: identical in all {len(runs)} runs ({sum(runs[0]['points'].values()):g} in all)")
    else:
        ok = False
        lines.append(f"points: NOT identical: {sorted(distinct)}")
    names = sorted({k for r in runs for k in r["speedups"]})
    for name in names:
        ratios = [r["speedups"].get(name, {}).get("vs_reference") for r in runs]
        if any(x is None for x in ratios):
            ok = False
            lines.append(f"{name}: a run has no ratio to the reference: {ratios}")
            continue
        med = statistics.median(ratios)
        worst = max(abs(x / med - 1.0) for x in ratios) if med else float("inf")
        within = worst <= tolerance
        ok &= within
        lines.append(f"{name}: vs_reference {', '.join(f'{x:.3f}' for x in ratios)}; median {med:.3f}; "
                     f"worst {worst * 100:.1f} % from it ({'within' if within else 'OUTSIDE'} +-{tolerance * 100:g} %)")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outs", nargs="+", type=Path, help="grader run --out folders of the same submission")
    ap.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    args = ap.parse_args(argv)
    lines, ok = summarize([load_run(o) for o in args.outs], args.tolerance)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
