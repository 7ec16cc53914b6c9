"""Stage 3: run the task's pristine tests in their own process, with a time limit.

The tests run as the *judge* (harness.remote): that process draws the inputs,
computes the references and applies the tolerances, and the submission's code
runs only in the worker it starts. pytest-json-report, in the judge, writes
every test's outcome and the measurements the tests attached
(``metadata.measurements``) into the grader's log folder, which the worker
cannot reach; the grader scores only from that file, never from what the
submission prints.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.remote import JUDGE, ROLE_ENV, WORKER_DIR_ENV
from harness.tasks import TASKS

from .proc import ProcResult, run_process
from .stage import Stage, Unreadable, read_submission_file

#: Largest pytest-json-report file the grader reads.
MAX_REPORT_BYTES = 64 << 20


@dataclass
class TestRun:
    proc: ProcResult
    report: dict | None  # pytest-json-report's document, or None if the run died before writing it
    problem: str | None  # why the run as a whole went wrong (crash, hang), if it did
    #: The bonus tests' own run, when they ran apart (grader.pipeline.grade_task); ``tests`` holds both.
    bonus: "TestRun | None" = None

    @property
    def tests(self) -> list[dict]:
        return (self.report or {}).get("tests", []) + (self.bonus.tests if self.bonus else [])

    @property
    def bonus_problem(self) -> str | None:
        """Why the bonus tests' own run went wrong (a hang, a crash), if it did."""
        return self.bonus.problem if self.bonus else None


def joined(runs: list["TestRun"], names: list[str]) -> "TestRun":
    """One TestRun of tests that ran in parts, one process each (the correctness tests, then the
    timed tests alone: grader.pipeline): their tests together, the first part's worker report, and
    each part's problem named by its part (``names``), so a hang in one part says which."""
    if len(runs) == 1:
        return runs[0]
    reports = [r.report for r in runs if r.report is not None]
    report = None
    if reports:
        report = {**reports[0], "tests": [t for rep in reports for t in rep.get("tests", [])]}
    problems = [f"{name}: {r.problem}" for name, r in zip(names, runs) if r.problem]
    failed = [r.proc.returncode for r in runs if r.proc.returncode not in (0, None)]
    proc = ProcResult(
        returncode=failed[0] if failed else runs[-1].proc.returncode,
        timed_out=any(r.proc.timed_out for r in runs),
        seconds=round(sum(r.proc.seconds for r in runs), 2),
        output_tail="\n".join(f"--- {name}\n{r.proc.output_tail}" for name, r in zip(names, runs)),
        log_path="; ".join(r.proc.log_path for r in runs),
    )
    return TestRun(proc, report, "; ".join(problems) or None)


#: The flag on every score of a task whose tests are not yet split into judge and worker.
ONE_PROCESS_FLAG = ("{task} ran its tests in one contained process (the judge/worker split does not cover "
                    "this task yet): its own code could have forged its report; review before releasing the score")


#: pytest's exit code when no test was selected (a marker part of a task that has none of that kind).
NOTHING_SELECTED = 5


def run_tests(stage: Stage, *, env: dict[str, str], timeout_s: float, logs: Path,
              only: tuple[str, ...] = (), exclude: tuple[str, ...] = (), part: str = "",
              marker: str = "") -> TestRun:
    """The task's tests (``only``: just these test functions; ``exclude``: all but these;
    ``marker``: a pytest ``-m`` expression, such as ``perf``) in the judge, the code in its worker;
    ``part`` names this run's report and log (``task4-bonus-...``)."""
    one_process = stage.worker is not None and not TASKS[stage.task].judged
    label = f"{stage.task}-{part}" if part else stage.task
    report_path = (stage.worker if one_process else logs) / f"{label}-pytest.json"
    report_path.unlink(missing_ok=True)
    launcher = ["-m", "harness.contained"] if one_process else []
    tests = list(TASKS[stage.task].tests)
    if only and len(tests) == 1:  # exact node ids (-k would match names that contain another)
        tests = [f"{tests[0]}::{name}" for name in only]
    cmd = [
        sys.executable, *launcher, "-m", "pytest", *tests,
        "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rfEs",
        "--json-report", f"--json-report-file={report_path}", "--json-report-omit", "collectors", "log",
    ]
    if only and len(TASKS[stage.task].tests) > 1:
        cmd += ["-k", " or ".join(only)]
    for test in exclude:  # by node id prefix: every parametrization of that function
        cmd += [f"--deselect={module}::{test}" for module in TASKS[stage.task].tests]
    if marker:
        cmd += ["-m", marker]
    if one_process:  # contained like a worker, but it also writes its own report, into its scratch
        from .builder import worker_env

        env = {**worker_env(stage, env), "ATTN_KIT_SEED": env["ATTN_KIT_SEED"]}
    elif stage.worker is not None:  # the judge/worker split: this process judges, the worker runs the code
        env = {**env, ROLE_ENV: JUDGE, WORKER_DIR_ENV: str(stage.worker)}
    proc = run_process(cmd, cwd=stage.folder, env=env, timeout_s=timeout_s, log_path=logs / f"{label}-tests.log")
    report = None
    try:
        report = json.loads(read_submission_file(report_path.parent, report_path.name, MAX_REPORT_BYTES))
    except (OSError, Unreadable, ValueError):
        report = None
    # A marker part with no test of its kind (pytest exits 5): an empty part, not a failure.
    empty_part = bool(marker) and proc.returncode == NOTHING_SELECTED and not proc.timed_out
    if empty_part and report is None:
        report = {"tests": []}
    problem = None
    if proc.timed_out:
        problem = f"the tests ran longer than {timeout_s:.0f} s (a hang?) and were stopped"
    elif proc.died_of_signal:
        problem = f"the test process died of {proc.died_of_signal} (a crash in the submission's code?)"
    elif report is None:
        problem = f"the test process ended (exit code {proc.returncode}) without a report: it crashed"
    elif proc.returncode not in (0, 1) and not empty_part:
        problem = f"pytest exited with code {proc.returncode} (a collection or internal error)"
    return TestRun(proc, report, problem)
