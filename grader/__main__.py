"""Command line of the grader: ``python -m grader {run,release} ...``."""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from harness.tasks import REPO_ROOT, TASKS, task_names

EXIT_OK = 0  # graded (whatever the score), or the command did what it says
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_NO_SUBMISSION = 3  # the submission folder does not exist
EXIT_GRADER_ERROR = 4  # the grader itself failed; results.json still says what it had
EXIT_CHECK_FAILED = 5  # release: the handout failed one of its proofs

EPILOG = """exit codes:
  0  done (for 'run': graded, whatever the score; see results.json)
  2  bad arguments
  3  the submission folder does not exist
  4  the grader itself failed (results.json is still written, with the error)
  5  'release': the handout failed one of its checks (it is left in place to inspect)
"""


def parse_tasks(text: str | None) -> list[str]:
    if not text:
        return task_names(existing_only=True)
    names = []
    for part in text.split(","):
        part = part.strip().lower().removeprefix("task")
        if not part.isdigit() or f"task{part}" not in TASKS:
            raise argparse.ArgumentTypeError(f"unknown task '{part}': use numbers 1-{len(TASKS)}, e.g. --tasks 1,3")
        names.append(f"task{part}")
    return sorted(set(names), key=lambda n: TASKS[n].number)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m grader", description="The attention kit's autograder.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="grade one submission folder",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                         description="Grade a submission task by task: stage it beside a pristine copy of the "
                                     "kit, build its CUDA code, run the kit's tests in separate processes "
                                     "with time limits, score them with rubric.toml, and write results.json "
                                     "(Gradescope), report.md and raw.json.")
    run.add_argument("--submission", type=Path, default=REPO_ROOT,
                     help="folder laid out like the handout (default: this checkout)")
    run.add_argument("--tasks", type=parse_tasks, default=None,
                     help="comma-separated task numbers, e.g. 1,3 (default: every task that exists)")
    run.add_argument("--out", type=Path, default=Path("grader-results"),
                     help="where results go (default: ./grader-results)")
    run.add_argument("--json", action="store_true", help="print the raw results as JSON instead of the table")
    run.add_argument("--no-reference", action="store_true",
                     help="do not time the reference solution; score speedups by the rubric's absolute thresholds")
    run.add_argument("--seed", type=int, default=None,
                     help="input seed (default: a fresh random one, so no submission can know it ahead)")
    run.add_argument("--rubric", type=Path, default=None, help="another rubric file (default: grader/rubric.toml)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")

    rel = sub.add_parser("release", help="write the student handout and prove it holds no solution",
                         description="Copy every file of the kit except solutions/, the kit's own tests and "
                                     "staff material into OUT_DIR, then prove: no handout file equals its "
                                     "solution, no symbol only the solutions define appears, each stub "
                                     "builds, and each stub's tests fail cleanly.")
    rel.add_argument("out_dir", type=Path, help="where to write the handout (must not exist or be empty)")
    rel.add_argument("--skip-build", action="store_true", help="skip compiling the CUDA stubs (quicker)")
    rel.add_argument("--skip-tests", action="store_true", help="skip running the stubs' tests")
    return parser


def cmd_run(args) -> int:
    from . import report, rubric as rubric_mod
    from .pipeline import run_grading

    submission = args.submission.resolve()
    if not submission.is_dir():
        print(f"error: the submission folder {submission} does not exist", file=sys.stderr)
        return EXIT_NO_SUBMISSION
    out = args.out.resolve()
    rubric = rubric_mod.load(args.rubric) if args.rubric else rubric_mod.load()
    tasks = args.tasks or task_names(existing_only=True)
    try:
        results = run_grading(submission, tasks, out, rubric, quiet=args.quiet,
                              use_reference=not args.no_reference, seed=args.seed)
    except Exception:  # noqa: BLE001 - reports were written by run_grading's finally
        traceback.print_exc()
        if not (out / "results.json").exists():
            (out / "results.json").write_text(json.dumps(
                dict(score=0, output="the grader failed before writing results:\n" + traceback.format_exc())))
        print(f"error: the grader failed; what it had is in {out}/results.json", file=sys.stderr)
        return EXIT_GRADER_ERROR
    if args.json:
        print((out / "raw.json").read_text())
    else:
        print(report.summary_text(results))
        print(f"reports: {out}/report.md, {out}/results.json, {out}/raw.json")
    return EXIT_OK


def cmd_release(args) -> int:
    from .release import release

    return EXIT_OK if release(args.out_dir.resolve(), build=not args.skip_build, tests=not args.skip_tests) \
        else EXIT_CHECK_FAILED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "release": cmd_release}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
