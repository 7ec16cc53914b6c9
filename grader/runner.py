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
from .stage import Stage


@dataclass
class TestRun:
    proc: ProcResult
    report: dict | None  # pytest-json-report's document, or None if the run died before writing it
    problem: str | None  # why the run as a whole went wrong (crash, hang), if it did

    @property
    def tests(self) -> list[dict]:
        return (self.report or {}).get("tests", [])


def run_tests(stage: Stage, *, env: dict[str, str], timeout_s: float, logs: Path) -> TestRun:
    report_path = logs / f"{stage.task}-pytest.json"
    report_path.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "pytest", *TASKS[stage.task].tests,
        "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rfEs",
        "--json-report", f"--json-report-file={report_path}", "--json-report-omit", "collectors", "log",
    ]
    if stage.worker is not None:  # the judge/worker split: this process judges, the worker runs the code
        env = {**env, ROLE_ENV: JUDGE, WORKER_DIR_ENV: str(stage.worker)}
    proc = run_process(cmd, cwd=stage.folder, env=env, timeout_s=timeout_s, log_path=logs / f"{stage.task}-tests.log")
    report = None
    if report_path.exists():
        try:
            report = json.loads(report_path.read_text())
        except json.JSONDecodeError:
            report = None
    problem = None
    if proc.timed_out:
        problem = f"the tests ran longer than {timeout_s:.0f} s (a hang?) and were stopped"
    elif proc.died_of_signal:
        problem = f"the test process died of {proc.died_of_signal} (a crash in the submission's code?)"
    elif report is None:
        problem = f"the test process ended (exit code {proc.returncode}) without a report: it crashed"
    elif proc.returncode not in (0, 1):
        problem = f"pytest exited with code {proc.returncode} (a collection or internal error)"
    return TestRun(proc, report, problem)
