"""Scoring speedups (grader/scoring.py) from made-up test reports: no credit by omission, and an
implausible speedup held for review unless the rubric says to pay it."""
from __future__ import annotations

import dataclasses

from grader import rubric as rubric_mod
from grader.runner import TestRun as Run  # (aliased: pytest would take TestRun for a test class)
from grader.scoring import score_task

CONFIGS = ["B4-S128-full", "B4-S128-causal", "B64-S4096-full", "B64-S4096-causal"]


def report(speedups: dict[str, float | None], skipped: tuple[str, ...] = (), beside: dict | None = None) -> Run:
    """Task 4's report: every correctness case passed; each timed configuration passed with its
    speedup, failed (None) or was skipped; ``beside``: per configuration, the fields the timed test
    records when the reference was timed beside it (harness.yardstick.SideBySide.record_fields)."""
    tests = [{"nodeid": "task4/test.py::test_attention_core[x]", "outcome": "passed", "call": {"outcome": "passed"}},
             {"nodeid": "task4/test.py::test_module[x]", "outcome": "passed", "call": {"outcome": "passed"}},
             {"nodeid": "task4/test.py::test_rejects_bad_inputs", "outcome": "passed", "call": {"outcome": "passed"}}]
    for cfg in CONFIGS:
        nodeid = f"task4/test.py::test_core_speed[{cfg}]"
        if cfg in skipped:
            tests.append({"nodeid": nodeid, "outcome": "skipped",
                          "setup": {"outcome": "skipped", "longrepr": "needs 45 GB of GPU memory"}})
        elif speedups.get(cfg) is None:
            tests.append({"nodeid": nodeid, "outcome": "failed",
                          "call": {"outcome": "failed", "longrepr": "RuntimeError: seq_len 4096 is not supported"}})
        else:
            m = {"core_speedup": {"speedup": speedups[cfg], "trusted": True, "distrust": [],
                                  **((beside or {}).get(cfg) or {})}}
            tests.append({"nodeid": nodeid, "outcome": "passed", "call": {"outcome": "passed"},
                          "metadata": {"measurements": m}})
    return Run(proc=None, report={"tests": tests}, problem=None)


def speed_of(run: Run, reference: float = 0.625, **grading):
    rubric = rubric_mod.load()
    if grading:
        rubric = dataclasses.replace(rubric, **grading)
    name = rubric.tasks["task4"].speedups[0].name
    score = score_task(rubric, rubric.tasks["task4"], run, {name: reference})
    return score.speedups[0], score.flags


def test_every_configuration_passing_earns_its_points():
    speed, flags = speed_of(report(dict.fromkeys(CONFIGS, 0.6)))
    assert speed.points == speed.max_points and not flags, speed.reason


def test_a_refused_configuration_earns_nothing():
    """A kernel that refuses the large timed configurations keeps a fast mean over the small ones:
    that mean is not paid, and the reason names what did not run."""
    fast_small = {"B4-S128-full": 2.0, "B4-S128-causal": 2.0, "B64-S4096-full": None, "B64-S4096-causal": None}
    speed, _ = speed_of(report(fast_small))
    assert speed.points == 0 and "every timed configuration must run" in speed.reason, speed.reason
    assert "test_core_speed[B64-S4096-full] failed (RuntimeError: seq_len 4096 is not supported)" in speed.reason
    skipped, _ = speed_of(report(dict.fromkeys(CONFIGS, 0.6), skipped=("B64-S4096-causal",)))
    assert skipped.points == 0 and "test_core_speed[B64-S4096-causal] did not run" in skipped.reason


def test_an_implausible_speedup_is_held_for_review():
    speed, flags = speed_of(report(dict.fromkeys(CONFIGS, 10.0)))
    assert speed.points == 0 and "held for review" in speed.reason, speed.reason
    assert any("implausible speedup" in f and "held" in f for f in flags), flags
    paid, flags = speed_of(report(dict.fromkeys(CONFIGS, 10.0)), pay_implausible_before_review=True)
    assert paid.points == paid.max_points and any("implausible speedup" in f for f in flags)


def side_by_side(vs_reference: float, reference: float = 0.625) -> dict:
    return dict(vs_reference=vs_reference, reference_speedup=reference,
                yardstick="the reference solution timed beside it, 2 rounds")


def test_the_reference_timed_beside_sets_the_score():
    """With the reference timed beside the submission, the score rests on the ratio of the two
    speedups (full at full_at times the reference's speed, none at zero_at), not on a yardstick
    measured elsewhere: here the reference passed to the scorer is deliberately far off."""
    tr = rubric_mod.load().tasks["task4"].speedups[0]
    half_way = (tr.full_at + tr.zero_at) / 2
    run = report(dict.fromkeys(CONFIGS, 0.3), beside={c: side_by_side(half_way) for c in CONFIGS})
    speed, flags = speed_of(run, reference=99.0)
    assert abs(speed.points - speed.max_points / 2) < 1e-3, speed.reason
    assert speed.basis == "the reference solution, timed beside it" and abs(speed.vs_reference - half_way) < 1e-9
    assert speed.reference == 0.625 and "times the reference's" in speed.reason and not flags, (speed.reason, flags)


def test_a_yardstick_that_did_not_run_everywhere_holds_the_points():
    """The reference failed beside one configuration (a submission could make it, leaving no GPU
    memory for it): the speed points are held for review, not paid on the easier absolute
    thresholds, and a speed implausible against the references that were measured is flagged too.
    As in a class run, the scorer is given no reference of its own."""
    rubric = rubric_mod.load()
    beside = {c: side_by_side(1.0) for c in CONFIGS[:3]}
    beside[CONFIGS[3]] = {"yardstick": "the reference solution failed while timed beside it: out of memory"}
    for value in (0.6, 1000.0):
        score = score_task(rubric, rubric.tasks["task4"], report(dict.fromkeys(CONFIGS, value), beside=beside), {})
        speed, flags = score.speedups[0], score.flags
        assert speed.points == 0 and speed.flagged and "held for review" in speed.reason, speed.reason
        assert "out of memory" in speed.reason and speed.vs_reference is None, speed
        assert any("not timed beside every configuration" in f for f in flags), flags
        assert (value > 3 * 0.625) == any("implausible speedup" in f for f in flags), (value, flags)
    paid = score_task(dataclasses.replace(rubric, pay_implausible_before_review=True), rubric.tasks["task4"],
                      report(dict.fromkeys(CONFIGS, 0.6), beside=beside), {}).speedups[0]
    assert paid.points == paid.max_points and paid.flagged and "absolute" in paid.basis, paid


def test_an_unscored_check_that_fails_is_flagged_and_costs_nothing():
    """Task 4's causal-skip check is in no rubric entry: failing it costs no points, but staff see
    it among the flags, with its message; a stub's "not implemented" there is no news."""
    run = report(dict.fromkeys(CONFIGS, 0.6))
    run.report["tests"].append({"nodeid": "task4/test.py::test_causal_skips_key_tiles", "outcome": "failed",
                                "call": {"outcome": "failed", "longrepr": "CheckFailed: with causal=True, "
                                         "custom_flash_attention took 28.3 ms against 28.1 ms without the mask"}})
    speed, flags = speed_of(run)
    assert speed.points == speed.max_points, speed.reason
    assert [f for f in flags if "test_causal_skips_key_tiles failed (1 case(s); not scored by the rubric)" in f
            and "28.3 ms" in f], flags
    stub = report(dict.fromkeys(CONFIGS, 0.6))
    stub.report["tests"].append({"nodeid": "task4/test.py::test_causal_skips_key_tiles", "outcome": "failed",
                                 "call": {"outcome": "failed", "longrepr": "NotImplementedError: not implemented yet"}})
    assert not [f for f in speed_of(stub)[1] if "not scored" in f]
