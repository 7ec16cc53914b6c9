"""Stage 4: turn a task's test report into points, following the rubric.

Scores rest only on what the pristine tests recorded in the JSON report:
outcomes and measurements. Nothing a submission prints is read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .rubric import BonusPart, Check, Rubric, Speedup, TaskRubric
from .runner import TestRun

NOT_IMPLEMENTED = "not implemented yet"
#: How many failing cases a check lists in the report.
MAX_MESSAGES_PER_CHECK = 5


@dataclass
class Case:
    nodeid: str
    function: str
    outcome: str  # passed, failed, skipped, error
    message: str
    measurements: dict

    @property
    def not_implemented(self) -> bool:
        return self.outcome in ("failed", "error") and NOT_IMPLEMENTED in self.message.lower()


@dataclass
class CheckResult:
    name: str
    points: float
    max_points: float
    passed: int
    ran: int
    skipped: int
    status: str  # passed, failed, skipped
    messages: list[str] = field(default_factory=list)
    skip_reason: str = ""  # why cases were skipped (the most common reason), e.g. no GPU


def _skip_reason(cases: list[Case]) -> str:
    """The most common reason among skipped cases, its first clause ("needs a CUDA GPU, ...")."""
    reasons = [c.message.split(" (")[0].strip() for c in cases if c.outcome == "skipped" and c.message]
    return max(set(reasons), key=reasons.count) if reasons else ""


@dataclass
class SpeedupResult:
    name: str
    points: float
    max_points: float
    status: str  # passed, failed, skipped
    value: float | None = None  # geometric mean over configurations
    reference: float | None = None
    basis: str = ""
    configs: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    #: On the leaderboards (Gradescope's and grader collect's): measured on every timed
    #: configuration, each output right, every correctness check passed.
    ranked: bool = False
    #: Implausibly fast: on the leaderboard only as "flagged for review".
    flagged: bool = False
    #: The submission's speed over the reference's, timed beside it (harness.yardstick), and per config.
    vs_reference: float | None = None
    vs_reference_configs: dict[str, float] = field(default_factory=dict)


@dataclass
class BonusResult:
    """A bonus part's score (grader/rubric.py's BonusPart): extra points, outside the task's."""

    name: str
    points: float
    max_points: float
    checks: list[CheckResult]
    speedups: list[SpeedupResult]
    reason: str = ""


@dataclass
class TaskScore:
    points: float
    max_points: float
    status: str
    reason: str
    checks: list[CheckResult]
    speedups: list[SpeedupResult]
    flags: list[str]
    #: The task's bonus parts: never in ``points`` (nor in the assignment's total).
    bonus: list[BonusResult] = field(default_factory=list)

    @property
    def bonus_points(self) -> float:
        return round(sum(b.points for b in self.bonus), 4)

    @property
    def bonus_max_points(self) -> float:
        return sum(b.max_points for b in self.bonus)


def _message(test: dict) -> str:
    for stage in ("call", "setup", "teardown"):
        part = test.get(stage) or {}
        if part.get("outcome") in ("failed", "skipped") or part.get("longrepr"):
            text = part.get("longrepr") or ""
            if part.get("outcome") == "skipped" and text.startswith("("):
                text = text.rsplit("Skipped: ", 1)[-1].rstrip("')\"")
            if text:
                return str(text)
            crash = part.get("crash") or {}
            if crash.get("message"):
                return str(crash["message"])
    return ""


def cases_of(run: TestRun) -> list[Case]:
    cases = []
    for test in run.tests:
        nodeid = test.get("nodeid", "")
        function = nodeid.split("::")[-1].split("[")[0]
        # Anything but passed or skipped is a failure: errors, xpasses, and the kit's own
        # "not implemented" category (see harness.pytest_plugin) among them.
        outcome = test.get("outcome", "error")
        if outcome not in ("passed", "skipped"):
            outcome = "failed"
        measurements = (test.get("metadata") or {}).get("measurements") or {}
        cases.append(Case(nodeid, function, outcome, _message(test) if outcome != "passed" else "", measurements))
    return cases


def score_check(check: Check, cases: list[Case]) -> CheckResult:
    mine = [c for c in cases if c.function in check.tests]
    ran = [c for c in mine if c.outcome != "skipped"]
    passed = [c for c in ran if c.outcome == "passed"]
    skipped = len(mine) - len(ran)
    if not mine:
        return CheckResult(check.name, 0.0, check.points, 0, 0, 0, "failed",
                           [f"no test named {', '.join(check.tests)} ran (were they collected?)"])
    if not ran:
        reason = next((c.message for c in mine if c.message), "skipped")
        return CheckResult(check.name, 0.0, check.points, 0, 0, skipped, "skipped", [reason], _skip_reason(mine))
    fraction = len(passed) / len(ran)
    if check.all_or_nothing and fraction < 1:
        fraction = 0.0
    failing = [c for c in ran if c.outcome != "passed"]
    # The same message from many cases (an unimplemented stub) is shown once, with a count.
    grouped: dict[str, list[Case]] = {}
    for c in failing:
        grouped.setdefault(c.message.strip(), []).append(c)
    messages = []
    for text, group in list(grouped.items())[:MAX_MESSAGES_PER_CHECK]:
        first = group[0].nodeid.split("::")[-1]
        more = f" (and {len(group) - 1} more case(s) with the same message)" if len(group) > 1 else ""
        messages.append(f"{first}{more}: {text}")
    if len(grouped) > MAX_MESSAGES_PER_CHECK:
        messages.append(f"... and {len(grouped) - MAX_MESSAGES_PER_CHECK} more distinct failure(s)")
    return CheckResult(check.name, round(check.points * fraction, 4), check.points, len(passed), len(ran),
                       skipped, "passed" if not failing else "failed", messages, _skip_reason(mine))


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def measured_speedups(speedup: Speedup, cases: list[Case]) -> tuple[dict[str, float], list[Case]]:
    mine = [c for c in cases if c.function == speedup.test]
    values = {}
    for c in mine:
        m = c.measurements.get(speedup.measurement)
        if c.outcome == "passed" and isinstance(m, dict) and isinstance(m.get("speedup"), (int, float)):
            if m["speedup"] > 0:
                values[c.nodeid.split("::")[-1]] = float(m["speedup"])
    return values, mine


def side_by_side_ratios(speedup: Speedup, cases: list[Case]) -> tuple[dict[str, float], dict[str, float]]:
    """Per timed configuration that recorded one: the submission's speedup over the reference
    solution's, timed beside it (harness.yardstick), and the reference's own speedup."""
    ratios, references = {}, {}
    for c in cases:
        m = c.measurements.get(speedup.measurement)
        if c.function == speedup.test and c.outcome == "passed" and isinstance(m, dict):
            ratio, ref = m.get("vs_reference"), m.get("reference_speedup")
            if isinstance(ratio, (int, float)) and ratio > 0 and isinstance(ref, (int, float)) and ref > 0:
                name = c.nodeid.split("::")[-1]
                ratios[name], references[name] = float(ratio), float(ref)
    return ratios, references


def distrusted_timings(speedup: Speedup, cases: list[Case]) -> list[str]:
    """The judge's reasons not to believe a timing (harness.timing.compare_speed), per configuration."""
    out = []
    for c in cases:
        m = c.measurements.get(speedup.measurement)
        if c.function == speedup.test and isinstance(m, dict) and m.get("trusted") is False:
            out += [f"{c.nodeid.split('::')[-1]}: {why}" for why in m.get("distrust") or ["not trusted"]]
    return out


def missing_configurations(speedup: Speedup, cases: list[Case], configs: dict[str, float]) -> list[str]:
    """The timed configurations of ``speedup`` that did not run, failed their output check or
    recorded no speedup: a speedup counts only when every one of them did (no credit by omission)."""
    out = []
    for c in cases:
        name = c.nodeid.split("::")[-1]
        if c.function != speedup.test or name in configs:
            continue
        why = (c.message.strip().splitlines() or [""])[0][:200]
        state = {"skipped": "did not run", "failed": "failed"}.get(c.outcome, "recorded no speedup")
        out.append(f"{name} {state}" + (f" ({why})" if why else ""))
    return out


def score_speedup(speedup: Speedup, cases: list[Case], gate_open: bool, reference: float | None,
                  implausible_factor: float, flags: list[str], pay_implausible: bool = False) -> SpeedupResult:
    result = SpeedupResult(speedup.name, 0.0, speedup.points, "failed")
    configs, mine = measured_speedups(speedup, cases)
    result.configs = configs
    distrust = distrusted_timings(speedup, cases)
    if distrust:
        result.reason = "no credit for speed: " + "; ".join(distrust)
        flags.append(f"'{speedup.name}': the judge did not believe the worker's timings; flagged for review")
        return result
    if mine and all(c.outcome == "skipped" for c in mine):
        result.status, result.reason = "skipped", mine[0].message or "skipped"
        return result
    if not configs:
        failing = [c for c in mine if c.outcome != "passed"]
        result.reason = (failing[0].message.strip().splitlines() or ["no measurement"])[0] if failing else (
            f"the test {speedup.test} recorded no '{speedup.measurement}' measurement")
        return result
    result.value = geometric_mean(list(configs.values()))
    missing = missing_configurations(speedup, cases, configs)
    if missing:
        result.reason = ("no credit for speed: every timed configuration must run and pass its output check; "
                         + "; ".join(missing))
        return result
    held, held_why = False, ""
    beside, beside_refs = side_by_side_ratios(speedup, cases)
    notes = sorted({m.get("yardstick") for c in mine if isinstance(m := c.measurements.get(speedup.measurement), dict)
                    and isinstance(m.get("yardstick"), str) and m.get("vs_reference") is None})
    # What is compared with the thresholds: the speedup itself, or (timed beside the reference)
    # its ratio to the reference's, against thresholds relative to the reference.
    compared = result.value
    if beside and set(beside) == set(configs):
        reference = geometric_mean(list(beside_refs.values()))
        compared = result.vs_reference = geometric_mean(list(beside.values()))
        result.vs_reference_configs = beside
        result.reference, result.basis = reference, "the reference solution, timed beside it"
        full, zero = speedup.full_at, speedup.zero_at
    elif reference:
        result.reference, result.basis = reference, "reference"
        full, zero = speedup.full_at * reference, speedup.zero_at * reference
    else:
        if beside_refs:  # measured beside some configurations: still the yardstick for plausibility
            reference = geometric_mean(list(beside_refs.values()))
        result.basis = "absolute (no reference solution in this run)"
        full, zero = speedup.absolute_full_at, speedup.absolute_zero_at
    if notes:
        # A yardstick was asked for and did not run beside every configuration (a submission could
        # make that happen, e.g. by leaving no GPU memory for it): not scored on the easier absolute
        # thresholds unreviewed.
        result.basis = "absolute (the reference did not run beside every configuration)"
        held_why = (f"the reference solution was not timed beside every configuration ({'; '.join(notes)}): "
                    "held for review" + ("" if pay_implausible else " (rubric: pay_implausible_before_review = false)"))
        flags.append(f"'{speedup.name}': {held_why}")
        held, result.flagged = not pay_implausible, True
    if reference and result.value > implausible_factor * reference:
        flags.append(
            f"implausible speedup for '{speedup.name}': {result.value:.3g}x against the reference "
            f"solution's {reference:.3g}x on the same GPU; flagged for review"
            + ("" if pay_implausible else " (its points are held until then)")
        )
        held = held or not pay_implausible
        held_why = held_why or (f"{result.value:.3g}x is more than {implausible_factor:g}x the reference's "
                                f"{reference:.3g}x: held for review (rubric: pay_implausible_before_review = false)")
        result.flagged = True
    if not gate_open:
        result.reason = "speed is scored only once every correctness check passes in full"
        return result
    result.ranked = True
    if held:
        result.reason = held_why
        return result
    fraction = min(1.0, max(0.0, (compared - zero) / (full - zero)))
    result.points = round(speedup.points * fraction, 4)
    result.status = "passed" if fraction >= 1 else "failed"
    if result.vs_reference is not None:
        result.reason = (
            f"{result.value:.3g}x, {result.vs_reference:.3g} times the reference's {reference:.3g}x timed beside it; "
            f"full points at {full:.3g} times the reference's, none at {zero:.3g} times"
        )
    else:
        result.reason = (
            f"{result.value:.3g}x; full points at {full:.3g}x, none at {zero:.3g}x ({result.basis})"
        )
    return result


def score_bonus(rubric: Rubric, part: BonusPart, cases: list[Case], references: dict[str, float],
                flags: list[str], problem: str | None = None) -> BonusResult:
    """A bonus part, scored as a task is: its speedups are gated by its own checks only;
    ``problem``: why the bonus tests' own run went wrong (a hang, a crash), said first."""
    checks = [score_check(c, cases) for c in part.checks]
    gate_open = all(c.status == "passed" for c in checks)
    speedups = [score_speedup(s, cases, gate_open, references.get(s.name), rubric.implausible_factor, flags,
                              rubric.pay_implausible_before_review) for s in part.speedups]
    points = round(sum(c.points for c in checks) + sum(s.points for s in speedups), 4)
    first_bad = next((c for c in checks if c.status != "passed"), None)
    slow = next((s for s in speedups if s.status != "passed"), None)
    if first_bad:  # with the first failure's message: "no bonus file" and "not implemented" say so here
        why = ((first_bad.messages or [first_bad.status])[0].strip().splitlines() or [""])[0][:200]
        reason = f"{first_bad.name}: {first_bad.passed}/{first_bad.ran} cases pass ({why})"
    else:
        reason = f"{slow.name}: {slow.reason}" if slow else "every check passed"
    if problem:
        reason = f"the bonus tests' run: {problem}; {reason}"
    return BonusResult(part.name, points, part.points, checks, speedups, reason)


def unscored_failures(task_rubric: TaskRubric, cases: list[Case]) -> list[str]:
    """Flags for the tests that failed though the rubric scores none of them (task 4's causal
    tile skipping, task 6's cache read in place): they cost no points, but staff should see that a
    property the student text asks for does not hold. A stub's "not implemented" is no news."""
    scored = {t for c in task_rubric.checks for t in c.tests} | {s.test for s in task_rubric.speedups}
    scored |= task_rubric.bonus_tests
    failed: dict[str, list[Case]] = {}
    for case in cases:
        if case.function not in scored and case.outcome in ("failed", "error") and not case.not_implemented:
            failed.setdefault(case.function, []).append(case)
    return [f"{task_rubric.task}: {name} failed ({len(mine)} case(s); not scored by the rubric): "
            f"{(mine[0].message.strip().splitlines() or [''])[0][:UNSCORED_MESSAGE_CHARS]}"
            for name, mine in sorted(failed.items())]


#: How much of an unscored failure's first message line a flag shows.
UNSCORED_MESSAGE_CHARS = 240


def score_task(rubric: Rubric, task_rubric: TaskRubric, run: TestRun,
               references: dict[str, float] | None = None) -> TaskScore:
    references = references or {}
    all_cases = cases_of(run)
    flags: list[str] = []
    # The bonus parts are scored on their own tests; the task's score and status never see them.
    bonus = [score_bonus(rubric, part, all_cases, references, flags, run.bonus_problem)
             for part in task_rubric.bonus]
    cases = [c for c in all_cases if c.function not in task_rubric.bonus_tests]
    checks = [score_check(c, cases) for c in task_rubric.checks]
    gate_open = all(c.status == "passed" for c in checks)
    speedups = [
        score_speedup(s, cases, gate_open, references.get(s.name), rubric.implausible_factor, flags,
                      rubric.pay_implausible_before_review)
        for s in task_rubric.speedups
    ]
    points = round(sum(c.points for c in checks) + sum(s.points for s in speedups), 4)
    flags += unscored_failures(task_rubric, all_cases)
    ran = [c for c in cases if c.outcome != "skipped"]
    if run.problem and not cases:
        status, reason = "crashed", run.problem
    elif cases and not ran:
        status, reason = "skipped", next((c.message for c in cases if c.message), "all tests skipped")
    elif ran and all(c.not_implemented for c in ran if c.outcome != "passed") and not any(
        c.outcome == "passed" for c in ran if c.function in {t for ch in task_rubric.checks for t in ch.tests}
    ):
        status = "not implemented"
        reason = next(c.message for c in ran if c.not_implemented).strip().splitlines()[0]
    else:
        status = "graded"
        first_bad = next((c for c in checks if c.status == "failed"), None)
        if run.problem:
            reason = run.problem
        elif first_bad:
            reason = f"{first_bad.name}: {first_bad.passed}/{first_bad.ran} cases pass"
        else:
            slow = next((s for s in speedups if s.status == "failed"), None)
            reason = f"{slow.name}: {slow.reason}" if slow else "every check passed"
    return TaskScore(points, task_rubric.points, status, reason, checks, speedups, flags, bonus)
