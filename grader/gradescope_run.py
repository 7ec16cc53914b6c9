"""``python -m grader.gradescope_run run-autograder``: grade a submission inside Gradescope's container.

This is what the bundle's ``run_autograder`` runs (``grader.gradescope_bundle``
writes the bundle): it grades ``/autograder/submission`` with the kit's grader,
for the tasks the bundle's ``autograder.json`` names, and always writes a valid
``/autograder/results/results.json``, even when the grading fails.

``run_autograder`` reads ``AUTOGRADER_ROOT`` (default ``/autograder``) and
``AUTOGRADER_PYTHON`` (default: the virtual environment ``setup.sh`` made), so it
can be run, and is tested, in any folder shaped like ``/autograder``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import traceback
from pathlib import Path

from harness.tasks import REPO_ROOT, RESULTS_FILE, TASKS, editable_files, task_names

#: The bundle's settings (the tasks it grades), at the root of the kit it unpacks to.
CONFIG = "autograder.json"


def find_submission_root(folder: Path) -> Path:
    """The folder laid out like the handout: ``folder`` itself, or the one folder inside it that is.

    Students who zip their folder instead of its contents, or submit from a
    repository with the kit in a subfolder, still get graded.
    """
    wanted = sorted(editable_files() - {RESULTS_FILE})

    def has_files(p: Path) -> int:
        return sum(1 for rel in wanted if (p / rel).is_file())

    if has_files(folder):
        return folder
    best, best_n = folder, 0
    for depth in (1, 2, 3):
        for p in sorted(folder.glob("/".join(["*"] * depth))):
            if p.is_dir() and "__MACOSX" not in p.parts and not p.is_symlink():
                n = has_files(p)
                if n > best_n:
                    best, best_n = p, n
        if best_n:
            return best
    return folder


def _fallback(message: str) -> dict:
    return dict(score=0.0, output=message, visibility="visible", stdout_visibility="hidden",
                tests=[dict(name="Autograder", score=0.0, max_score=0.0, status="failed", output=message,
                            visibility="visible")])


def run_autograder(root: Path) -> int:
    """Grade ``root/submission`` into ``root/results/results.json``; always writes a valid one."""
    from . import rubric as rubric_mod
    from .pipeline import run_grading
    from .report import validate_gradescope

    results_dir = root / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / "results.json"
    work = root / "grader-output"
    config = {}
    try:
        config = json.loads((REPO_ROOT / CONFIG).read_text())
    except (OSError, ValueError):
        pass
    tasks = config.get("tasks") or [t for t in task_names(existing_only=True) if not TASKS[t].needs_gpu]
    doc = None
    try:
        submission = find_submission_root(root / "submission")
        print(f"grading {submission} (tasks: {', '.join(tasks)}; kit: {REPO_ROOT})", flush=True)
        if work.exists():
            shutil.rmtree(work)
        run_grading(submission, tasks, work, rubric_mod.load())
    except Exception:  # noqa: BLE001 - Gradescope must always get a results.json
        traceback.print_exc()
    try:
        doc = json.loads((work / "results.json").read_text())
    except (OSError, ValueError) as exc:
        doc = _fallback(f"The autograder could not grade this submission ({exc!r}). Please tell the course staff.")
    problems = validate_gradescope(doc)
    if problems:
        doc = _fallback("The autograder produced an invalid result (" + "; ".join(problems) + "). "
                        "Please tell the course staff.")
    if submission_note := _layout_note(root / "submission"):
        doc["output"] = submission_note + "\n\n" + doc.get("output", "")
    target.write_text(json.dumps(doc, indent=2))
    print(f"score {doc.get('score')}; wrote {target}", flush=True)
    report = work / "report.md"
    if report.exists():
        print(report.read_text())
    return 0


def _layout_note(folder: Path) -> str:
    root = find_submission_root(folder) if folder.is_dir() else folder
    if root != folder:
        return f"Note: your files were found in the folder '{root.relative_to(folder)}' of your submission."
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.gradescope_run")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-autograder", help="what run_autograder runs inside Gradescope's container")
    run.add_argument("--root", type=Path, default=Path(os.environ.get("AUTOGRADER_ROOT", "/autograder")))
    args = parser.parse_args(argv)
    return run_autograder(args.root.resolve())


if __name__ == "__main__":
    raise SystemExit(main())
