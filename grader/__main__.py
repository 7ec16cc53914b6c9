"""Command line of the grader: ``python -m grader {run,release,slurm,status,collect,gradescope} ...``."""
from __future__ import annotations

import argparse
import os
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
EXIT_SLURM_FAILED = 6  # slurm: sbatch is missing or refused the job array

#: Where ``slurm``, ``status`` and ``collect`` keep a class's results by default.
CLASS_RESULTS = Path("grader-results") / "class"

EPILOG = """exit codes:
  0  done (for 'run': graded, whatever the score; see results.json)
  2  bad arguments
  3  the submission folder (for 'slurm', 'status', 'collect': the submissions or results folder) does not exist
  4  the grader itself failed (results.json is still written, with the error)
  5  'release': the handout failed one of its checks (it is left in place to inspect)
  6  'slurm': sbatch is not there or refused the job array (the script is still written)
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
    run.add_argument("--containment", choices=("auto", "none"), default=None,
                     help="auto (default): the submission's code runs under Landlock where the kernel has it; "
                          "none: uncontained (every result is then flagged); also ATTN_KIT_CONTAIN")

    rel = sub.add_parser("release", help="write the student handout and prove it holds no solution",
                         description="Copy every file of the kit except solutions/, the kit's own tests and "
                                     "staff material into OUT_DIR, then prove: no handout file equals its "
                                     "solution, no symbol only the solutions define appears, each stub "
                                     "builds, and each stub's tests fail cleanly.")
    rel.add_argument("out_dir", type=Path, help="where to write the handout (must not exist or be empty)")
    rel.add_argument("--skip-build", action="store_true", help="skip compiling the CUDA stubs (quicker)")
    rel.add_argument("--skip-tests", action="store_true", help="skip running the stubs' tests")

    slurm = sub.add_parser("slurm", help="grade a whole class as a Slurm job array",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                           description="One submission per subfolder of SUBMISSIONS_DIR (its name is the student "
                                       "id). Writes an sbatch job-array script (one array task per submission, each "
                                       "running 'python -m grader run' on its own GPU into OUT/<student>/ with its "
                                       "own log) and submits it. Running it again submits only the submissions "
                                       "without a finished result and not already queued (--force: all of them). "
                                       "OUT must be on a file system the compute nodes see.")
    slurm.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR")
    slurm.add_argument("--out", type=Path, default=CLASS_RESULTS, help=f"results folder (default: ./{CLASS_RESULTS})")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    slurm.add_argument("--gres", default="gpu:1", help="generic resources per submission (default: gpu:1; 'none' for none)")
    slurm.add_argument("--time", default="02:00:00", help="time limit per submission, HH:MM:SS (default: 02:00:00)")
    slurm.add_argument("--account", help="Slurm account to charge")
    slurm.add_argument("--cpus-per-task", type=int, help="CPU cores per submission (builds use them)")
    slurm.add_argument("--array-parallelism", type=int, metavar="N", help="run at most N submissions at once")
    slurm.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                       help="another #SBATCH option, e.g. --sbatch-arg=--mem=32G (repeatable)")
    slurm.add_argument("--tasks", type=parse_tasks, default=None,
                       help="tasks to grade, as for 'run', e.g. 1,3 (default: every task)")
    slurm.add_argument("--no-reference", action="store_true", help="passed to 'run': no reference solution timing")
    slurm.add_argument("--seed", type=int, help="passed to 'run' (default: a fresh seed per submission)")
    slurm.add_argument("--rubric", type=Path, help="passed to 'run': another rubric file")
    slurm.add_argument("--no-node-cache", action="store_true",
                       help="build into each submission's own folder instead of a node-local cache shared by "
                            "the array tasks on the same GPU")
    slurm.add_argument("--force", action="store_true", help="grade finished submissions again too")
    slurm.add_argument("--dry-run", action="store_true", help="only write and print the script")

    stat = sub.add_parser("status", help="how far a class's Slurm grading is: pending, running, done, failed",
                          description="Summarise the job arrays submitted by 'grader slurm' from squeue and the "
                                      "result folders (sacct too, where accounting works).")
    stat.add_argument("results", type=Path, nargs="?", default=CLASS_RESULTS, metavar="RESULTS_DIR",
                      help=f"default: ./{CLASS_RESULTS}")
    stat.add_argument("--submissions", type=Path, help="also list the submissions of this folder not submitted yet")
    stat.add_argument("--json", action="store_true", help="print the status as JSON")

    col = sub.add_parser("collect", help="merge a class's results into gradebook.csv, a summary and plots",
                         description="Read every RESULTS_DIR/<student>/raw.json and write RESULTS_DIR/gradebook.csv, "
                                     "summary.md, summary.json and plots. Missing or broken results get a row "
                                     "saying so. Running it again gives the same files.")
    col.add_argument("results", type=Path, metavar="RESULTS_DIR")
    col.add_argument("--submissions", type=Path, help="the submissions folder: its students without a result "
                                                      "are listed as missing")
    col.add_argument("--no-plots", action="store_true", help="write no plots")
    col.add_argument("--json", action="store_true", help="print the summary as JSON")

    gs = sub.add_parser("gradescope", help="write the autograder bundle for Gradescope",
                        description="Write the zip Gradescope's programming assignments take: setup.sh (installs "
                                    "the kit's dependencies), run_autograder (grades /autograder/submission into "
                                    "/autograder/results/results.json) and the kit, without the solutions.")
    gs.add_argument("out_zip", type=Path, metavar="OUT.zip")
    gs.add_argument("--tasks", type=parse_tasks, default=None,
                    help="tasks the bundle grades (default: those that need no GPU, since Gradescope's "
                         "machines have none)")
    return parser


def cmd_run(args) -> int:
    from . import report, rubric as rubric_mod
    from .pipeline import run_grading

    submission = args.submission.resolve()
    if not submission.is_dir():
        print(f"error: the submission folder {submission} does not exist", file=sys.stderr)
        return EXIT_NO_SUBMISSION
    if args.containment:
        os.environ["ATTN_KIT_CONTAIN"] = args.containment
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


def cmd_slurm(args) -> int:
    from .slurm import DEFAULT_NODE_CACHE, SbatchOptions, submit

    if not args.submissions.is_dir():
        print(f"error: the submissions folder {args.submissions} does not exist", file=sys.stderr)
        return EXIT_NO_SUBMISSION
    grader_args = []
    if args.tasks:
        grader_args += ["--tasks", ",".join(t.removeprefix("task") for t in args.tasks)]
    if args.no_reference:
        grader_args.append("--no-reference")
    if args.seed is not None:
        grader_args += ["--seed", str(args.seed)]
    if args.rubric:
        grader_args += ["--rubric", str(args.rubric.resolve())]
    opts = SbatchOptions(partition=args.partition, gres=None if args.gres in ("", "none") else args.gres,
                         time=args.time, account=args.account, cpus_per_task=args.cpus_per_task,
                         array_parallelism=args.array_parallelism, extra=args.sbatch_arg)
    try:
        code, _ = submit(args.submissions, args.out, opts, grader_args, force=args.force, dry_run=args.dry_run,
                         node_cache=None if args.no_node_cache else DEFAULT_NODE_CACHE)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_SLURM_FAILED if code else EXIT_OK


def cmd_status(args) -> int:
    from .slurm import status, status_text

    if not args.results.is_dir():
        print(f"error: the results folder {args.results} does not exist", file=sys.stderr)
        return EXIT_NO_SUBMISSION
    st = status(args.results, args.submissions)
    print(json.dumps(st, indent=2) if args.json else status_text(st))
    return EXIT_OK


def cmd_collect(args) -> int:
    from .collect import collect

    if not args.results.is_dir():
        print(f"error: the results folder {args.results} does not exist", file=sys.stderr)
        return EXIT_NO_SUBMISSION
    if args.submissions and not args.submissions.is_dir():
        print(f"error: the submissions folder {args.submissions} does not exist", file=sys.stderr)
        return EXIT_NO_SUBMISSION
    summary = collect(args.results, args.submissions, plots=not args.no_plots,
                      out=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return EXIT_OK


def cmd_gradescope(args) -> int:
    from .gradescope_bundle import build_bundle

    build_bundle(args.out_zip, args.tasks)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "release": cmd_release, "slurm": cmd_slurm, "status": cmd_status,
                "collect": cmd_collect, "gradescope": cmd_gradescope}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
