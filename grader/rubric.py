"""Loads and checks ``rubric.toml``: how each task's points are split, and every threshold.

What a task is worth and how long its tests may run are on its entry in
``harness/tasks.py`` (the manifest); the rubric splits those points over the
task's checks and speedups, and loading it fails, naming the task, when a task
of the manifest has no section or its section does not add up to the entry's points.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from harness.tasks import DEFAULT_TEST_TIMEOUT_S, TASKS

RUBRIC_PATH = Path(__file__).with_name("rubric.toml")
#: How far a sum of points may be from the manifest's and still agree: parts like 0.75 are
#: binary fractions, but a sum of tenths is not exact in floating point.
POINTS_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Check:
    name: str
    tests: tuple[str, ...]
    points: float
    all_or_nothing: bool = False


@dataclass(frozen=True)
class Speedup:
    name: str
    test: str
    measurement: str
    points: float
    full_at: float
    zero_at: float
    absolute_full_at: float
    absolute_zero_at: float


@dataclass(frozen=True)
class BonusPart:
    """A bonus part of a task (``[[taskN.bonus]]``): points outside the assignment's total. Its
    speedups are gated by its own checks only, and nothing in it gates, or counts towards, the
    task's own score."""

    name: str
    checks: tuple[Check, ...]
    speedups: tuple[Speedup, ...] = ()

    @property
    def points(self) -> float:
        return sum(c.points for c in self.checks) + sum(s.points for s in self.speedups)


@dataclass(frozen=True)
class TaskRubric:
    task: str
    points: float
    checks: tuple[Check, ...]
    speedups: tuple[Speedup, ...] = ()
    #: The manifest's limit (``Task.test_timeout_s``) unless the rubric file sets its own.
    test_timeout_s: float = DEFAULT_TEST_TIMEOUT_S
    #: The task's bonus parts (extra points, reported apart from ``points``).
    bonus: tuple[BonusPart, ...] = ()
    #: The bonus tests' own limit (``Task.bonus_test_timeout_s``): they run apart from the task's.
    bonus_test_timeout_s: float = DEFAULT_TEST_TIMEOUT_S

    @property
    def bonus_points(self) -> float:
        return sum(b.points for b in self.bonus)

    @property
    def all_speedups(self) -> tuple[Speedup, ...]:
        """The task's speedups and its bonus parts' (what the yardstick times for the reference)."""
        return self.speedups + tuple(s for b in self.bonus for s in b.speedups)

    @property
    def bonus_tests(self) -> set[str]:
        """The test functions only the bonus parts score."""
        return {t for b in self.bonus for c in b.checks for t in c.tests} | {
            s.test for b in self.bonus for s in b.speedups}


@dataclass(frozen=True)
class Rubric:
    tasks: dict[str, TaskRubric]
    build_timeout_s: float
    implausible_factor: float
    results_mismatch_factor: float
    source: Path = field(default=RUBRIC_PATH)
    #: Seconds one check may wait for the worker before it is declared hung.
    call_timeout_s: float = 300.0
    #: The worker's memory bound in GiB (0: half the machine's memory).
    worker_memory_gb: float = 0.0
    #: Whether a speedup above implausible_factor x the reference earns points before review.
    pay_implausible_before_review: bool = False
    #: Whether a task with a source-scan flag (grader/source_scan.py) earns its points before review.
    pay_flagged_before_review: bool = True
    #: Whether every task's build and correctness tests run at once (the timed tests always run alone).
    overlap_stages: bool = True

    @property
    def total(self) -> float:
        return sum(t.points for t in self.tasks.values())

    @property
    def bonus_total(self) -> float:
        """The bonus points on offer, outside :attr:`total`."""
        return sum(t.bonus_points for t in self.tasks.values())


class RubricError(ValueError):
    pass


#: The kit's functions that make a test function (harness.shared_checks): ``test_x = factory(...)``.
TEST_FACTORIES = frozenset({"module_test"})


def defined_tests(task: str) -> dict[str, set[str]] | None:
    """The test functions a task's test modules define (``def test_...`` or ``test_... = factory(...)``),
    each with the measurement names it records (``record("name", ...)``), read from the source;
    None if a module is missing."""
    import ast

    from harness.tasks import REPO_ROOT, TASKS

    out: dict[str, set[str]] = {}
    for rel in TASKS[task].tests:
        path = REPO_ROOT / rel
        if not path.is_file():
            return None
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                out[node.name] = {
                    call.args[0].value for call in ast.walk(node)
                    if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "record"
                    and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
                }
            elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and len(node.targets) == 1
                  and isinstance(node.targets[0], ast.Name) and node.targets[0].id.startswith("test_")
                  and getattr(node.value.func, "id", None) in TEST_FACTORIES):
                # A test a shared factory makes (``test_module = module_test(...)``): its
                # measurements are the factory's, not in this file.
                out[node.targets[0].id] = set()
    return out


def unknown_names(task: TaskRubric) -> list[str]:
    """What the rubric names for ``task`` that its tests do not define (empty: nothing)."""
    tests = defined_tests(task.task)
    if tests is None:
        return []
    checks = task.checks + tuple(c for b in task.bonus for c in b.checks)
    bad = [f"test {t!r} (check '{c.name}')" for c in checks for t in c.tests if t not in tests]
    for s in task.all_speedups:
        if s.test not in tests:
            bad.append(f"test {s.test!r} (speedup '{s.name}')")
        elif s.measurement not in tests[s.test]:
            bad.append(f"measurement {s.measurement!r}, which {s.test} never records (speedup '{s.name}')")
    return bad


def _checks(spec: dict) -> tuple[Check, ...]:
    return tuple(
        Check(c["name"], tuple(c["tests"]), float(c["points"]), bool(c.get("all_or_nothing", False)))
        for c in spec.get("checks", [])
    )


def _speedups(spec: dict) -> tuple[Speedup, ...]:
    return tuple(
        Speedup(
            s["name"], s["test"], s["measurement"], float(s["points"]), float(s["full_at"]),
            float(s["zero_at"]), float(s["absolute_full_at"]), float(s["absolute_zero_at"]),
        )
        for s in spec.get("speedups", [])
    )


def _points(value) -> str:
    return f"{float(value):g} point" + ("" if float(value) == 1 else "s")


def load(path: Path = RUBRIC_PATH) -> Rubric:
    data = tomllib.loads(Path(path).read_text())
    grading = data.get("grading", {})
    if "test_timeout_s" in grading:  # a stale rubric: its limit would silently not apply
        raise RubricError(f"{path}: [grading] test_timeout_s is no longer read: a task's test time limit is "
                          "test_timeout_s on its entry in harness/tasks.py (a task's section may still override it)")
    sections = {name: spec for name, spec in data.items() if name.startswith("task")}
    unknown_tasks = sorted(set(sections) - set(TASKS))
    if unknown_tasks:
        raise RubricError(f"{path} has sections for {', '.join(unknown_tasks)}, which harness/tasks.py does not "
                          "define: add the task's entry to TASKS there, or remove the section")
    missing = [name for name in TASKS if name not in sections]
    if missing:
        raise RubricError(f"{path} has no section for {', '.join(missing)} (in harness/tasks.py's TASKS): add "
                          f"[{missing[0]}] with the checks (and speedups) its {_points(TASKS[missing[0]].points)} "
                          "are split over")
    tasks = {}
    unknown: list[str] = []  # what the rubric names that no test defines, over every task
    for name, entry in TASKS.items():
        spec = sections[name]
        # A section may restate the points; they must be the manifest's, which are what is paid.
        if "points" in spec and abs(float(spec["points"]) - entry.points) > POINTS_TOLERANCE:
            raise RubricError(f"{path}: [{name}] says points = {spec['points']}, but harness/tasks.py makes {name} "
                              f"worth {_points(entry.points)} (the assignment's split): change one of them")
        checks, speedups = _checks(spec), _speedups(spec)
        bonus = tuple(BonusPart(str(b["name"]), _checks(b), _speedups(b)) for b in spec.get("bonus", []))
        task = TaskRubric(name, float(entry.points), checks, speedups,
                          float(spec.get("test_timeout_s", entry.test_timeout_s)), bonus,
                          float(spec.get("bonus_test_timeout_s", entry.bonus_test_timeout_s)))
        unknown += [f"{name}: {u}" for u in unknown_names(task)]
        parts = sum(c.points for c in checks) + sum(s.points for s in speedups)
        if abs(parts - task.points) > POINTS_TOLERANCE:
            raise RubricError(f"{path}: {name}'s checks and speedups add up to {parts:g}, not the "
                              f"{_points(task.points)} harness/tasks.py makes it worth")
        for s in task.all_speedups:
            if not (s.zero_at < s.full_at and s.absolute_zero_at < s.absolute_full_at):
                raise RubricError(f"{path}: {name} speedup '{s.name}': zero_at must be below full_at")
        shared = task.bonus_tests & ({t for c in checks for t in c.tests} | {s.test for s in speedups})
        if task.bonus and shared:  # a bonus must neither gate nor be gated by the task's own checks
            raise RubricError(f"{path}: {name}'s bonus names tests its own checks or speedups score too: "
                              f"{', '.join(sorted(shared))}")
        tasks[name] = task
    if unknown:
        raise RubricError(f"{path} names what the tests do not define: {'; '.join(unknown)}. Fix the rubric "
                          "(or the test names): a check no test can pass is points no student can earn.")
    return Rubric(
        tasks=tasks,
        build_timeout_s=float(grading.get("build_timeout_s", 900)),
        implausible_factor=float(grading.get("implausible_factor", 3.0)),
        results_mismatch_factor=float(grading.get("results_mismatch_factor", 2.0)),
        source=Path(path),
        call_timeout_s=float(grading.get("call_timeout_s", 300.0)),
        worker_memory_gb=float(grading.get("worker_memory_gb", 0.0)),
        pay_implausible_before_review=bool(grading.get("pay_implausible_before_review", False)),
        pay_flagged_before_review=bool(grading.get("pay_flagged_before_review", True)),
        overlap_stages=bool(grading.get("overlap_stages", True)),
    )
