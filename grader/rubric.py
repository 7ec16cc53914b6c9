"""Loads and checks ``rubric.toml``: the one file that holds every point and threshold."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RUBRIC_PATH = Path(__file__).with_name("rubric.toml")
#: The assignment's points per task; the rubric must add up to these.
EXPECTED_POINTS = {"task1": 2, "task2": 3, "task3": 3, "task4": 4, "task5": 4, "task6": 3, "task7": 1}


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
class TaskRubric:
    task: str
    points: float
    checks: tuple[Check, ...]
    speedups: tuple[Speedup, ...] = ()
    test_timeout_s: float = 1200


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

    @property
    def total(self) -> float:
        return sum(t.points for t in self.tasks.values())


from harness.tasks import TASKS  # noqa: E402


class RubricError(ValueError):
    pass


def defined_tests(task: str) -> dict[str, set[str]] | None:
    """The test functions a task's test modules define, each with the measurement names it
    records (``record("name", ...)``), read from the source; None if a module is missing."""
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
    return out


def unknown_names(task: TaskRubric) -> list[str]:
    """What the rubric names for ``task`` that its tests do not define (empty: nothing)."""
    tests = defined_tests(task.task)
    if tests is None:
        return []
    bad = [f"test {t!r} (check '{c.name}')" for c in task.checks for t in c.tests if t not in tests]
    for s in task.speedups:
        if s.test not in tests:
            bad.append(f"test {s.test!r} (speedup '{s.name}')")
        elif s.measurement not in tests[s.test]:
            bad.append(f"measurement {s.measurement!r}, which {s.test} never records (speedup '{s.name}')")
    return bad


def load(path: Path = RUBRIC_PATH) -> Rubric:
    data = tomllib.loads(Path(path).read_text())
    grading = data.get("grading", {})
    default_timeout = float(grading.get("test_timeout_s", 1200))
    tasks = {}
    unknown: list[str] = []  # what the rubric names that no test defines, over every task
    for name, spec in data.items():
        if not name.startswith("task"):
            continue
        checks = tuple(
            Check(c["name"], tuple(c["tests"]), float(c["points"]), bool(c.get("all_or_nothing", False)))
            for c in spec.get("checks", [])
        )
        speedups = tuple(
            Speedup(
                s["name"], s["test"], s["measurement"], float(s["points"]), float(s["full_at"]),
                float(s["zero_at"]), float(s["absolute_full_at"]), float(s["absolute_zero_at"]),
            )
            for s in spec.get("speedups", [])
        )
        task = TaskRubric(name, float(spec["points"]), checks, speedups,
                          float(spec.get("test_timeout_s", default_timeout)))
        unknown += [f"{name}: {u}" for u in (unknown_names(task) if name in TASKS else [])]
        parts = sum(c.points for c in checks) + sum(s.points for s in speedups)
        if abs(parts - task.points) > 1e-9:
            raise RubricError(f"{path}: {name}'s checks and speedups add up to {parts}, not {task.points}")
        for s in speedups:
            if not (s.zero_at < s.full_at and s.absolute_zero_at < s.absolute_full_at):
                raise RubricError(f"{path}: {name} speedup '{s.name}': zero_at must be below full_at")
        tasks[name] = task
    if unknown:
        raise RubricError(f"{path} names what the tests do not define: {'; '.join(unknown)}. Fix the rubric "
                          "(or the test names): a check no test can pass is points no student can earn.")
    for name, points in EXPECTED_POINTS.items():
        if name not in tasks or tasks[name].points != points:
            raise RubricError(f"{path}: {name} must be worth {points} points (the assignment's split)")
    return Rubric(
        tasks=tasks,
        build_timeout_s=float(grading.get("build_timeout_s", 900)),
        implausible_factor=float(grading.get("implausible_factor", 3.0)),
        results_mismatch_factor=float(grading.get("results_mismatch_factor", 2.0)),
        source=Path(path),
        call_timeout_s=float(grading.get("call_timeout_s", 300.0)),
        worker_memory_gb=float(grading.get("worker_memory_gb", 0.0)),
        pay_implausible_before_review=bool(grading.get("pay_implausible_before_review", False)),
    )
