"""``python -m taskN.test``: run a task's pytest module with output made for students."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from .device import device_name
from .impl import IMPL_ENV, impl_root, source_path
from .inputs import run_seed
from .tasks import REPO_ROOT, TASKS

#: pytest options for a student's run: short failures, a summary line per failed
#: check (``-rfE``) and per skip (``-rs``, so a skipped GPU test says why).
STUDENT_PYTEST_ARGS = ("-q", "-rfEs", "--tb=short", "-p", "no:cacheprovider")


def syntax_error(task: str) -> str:
    """The first syntax error in the task's Python files under test, as Python shows it (file,
    line, the line itself and a caret), or '' if they all compile."""
    import traceback

    for rel in TASKS[task].editable:
        path = impl_root() / rel
        if path.suffix != ".py" or not path.is_file():
            continue
        try:
            compile(path.read_bytes(), str(path), "exec")
        except SyntaxError as exc:
            return "".join(traceback.format_exception_only(exc)).rstrip()
    return ""


def main(test_file: str, description: str, selectors: dict[str, str] | None = None, argv=None) -> int:
    """Run ``test_file`` with pytest; each selector flag keeps only the tests it names.

    ``selectors`` maps a flag name (``"softmax"``) to a pytest ``-k`` expression.
    Arguments after ``--`` go to pytest unchanged (e.g. ``-- -x -k causal``).
    """
    selectors = selectors or {}
    parser = argparse.ArgumentParser(prog=f"python -m {Path(test_file).parent.name}.test", description=description)
    for flag, expr in selectors.items():
        parser.add_argument(f"--{flag}", action="store_true", help=f"run only the {flag} tests (-k '{expr}')")
    parser.add_argument("--no-perf", action="store_true", help="skip the timed measurements")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    # A student's command tests the student's files, also in a checkout that holds
    # solutions/ (the kit's own `pytest` run checks those); ATTN_KIT_IMPL=DIR still picks others.
    os.environ.setdefault(IMPL_ENV, str(REPO_ROOT))
    task = Path(test_file).parent.name
    print(f"{description}\n  files under test: "
          + ", ".join(str(source_path(rel)) if (impl_root() / rel).exists() else f"{impl_root() / rel} (missing)"
                      for rel in (*TASKS[task].editable, *TASKS[task].optional)
                      or ("(none: this task runs the kernels of tasks 4 and 5)",))
          + f"\n  seed: {run_seed()} (ATTN_KIT_SEED={run_seed()} replays this run)"
          + f"\n  device: {device_name()}", flush=True)
    broken = syntax_error(task)
    if broken:  # every check would import the file and fail with the same traceback
        print(f"\n{broken}\nFix that line and run again: 0 checks ran.", flush=True)
        return int(pytest.ExitCode.TESTS_FAILED)
    chosen = [expr for flag, expr in selectors.items() if getattr(args, flag)]
    pytest_args = [test_file, *STUDENT_PYTEST_ARGS]
    if chosen:
        pytest_args += ["-k", " or ".join(f"({e})" for e in chosen)]
    if args.no_perf:
        pytest_args += ["-m", "not perf"]
    return int(pytest.main(pytest_args + list(args.pytest_args)))
