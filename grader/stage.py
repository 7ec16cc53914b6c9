"""Stage 1: a fresh working folder per task.

The folder holds the grader's own pristine copy of the kit (harness, task
folders with their tests and compile scripts, pytest configuration) and, on
top, only the student-editable files of the submission, as listed in the
manifest (``harness.tasks``). A submission's own ``test.py``, ``compile.py`` or
harness files are never copied, so they can never run.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.tasks import REPO_ROOT, RESULTS_FILE, TASKS, editable_files

#: What of the kit a task's tests need, relative to the kit's root.
KIT_PATHS = ("harness", "conftest.py", "pyproject.toml", *sorted(TASKS))
#: A student file larger than this is not taken (no source file needs more).
MAX_SUBMISSION_FILE_BYTES = 2 << 20
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "build")


@dataclass
class Stage:
    task: str
    folder: Path
    missing: list[str] = field(default_factory=list)  # this task's editable files not in the submission
    rejected: dict[str, str] = field(default_factory=dict)  # file -> why it was not taken


def _take(src: Path) -> str | None:
    """Why a submission file cannot be taken, or None if it can."""
    if src.is_symlink():
        return "it is a symbolic link; submit the file itself"
    if not src.is_file():
        return "it is not a regular file"
    if src.stat().st_size > MAX_SUBMISSION_FILE_BYTES:
        return f"it is larger than {MAX_SUBMISSION_FILE_BYTES >> 20} MiB"
    return None


def copy_kit(dest: Path, kit_root: Path = REPO_ROOT) -> None:
    """Copy the pristine kit (no solutions, no staff tests) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in KIT_PATHS:
        src = kit_root / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=_IGNORE, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, dest / rel)


def stage_task(task: str, submission: Path, work: Path, kit_root: Path = REPO_ROOT) -> Stage:
    """Make ``work/<task>``: the kit plus every editable file the submission has.

    Every task's editable files are taken (task 5 runs the student's task-4
    kernel too); only this task's own are reported as missing.
    """
    folder = work / task
    if folder.exists():
        shutil.rmtree(folder)
    copy_kit(folder, kit_root)
    stage = Stage(task, folder)
    own = set(TASKS[task].editable) | {RESULTS_FILE}
    for rel in sorted(editable_files()):
        src = submission / rel
        if not src.exists() and not src.is_symlink():
            if rel in TASKS[task].editable:
                stage.missing.append(rel)
            continue
        why = _take(src)
        if why:
            if rel in own:
                stage.rejected[rel] = why
            continue
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return stage
