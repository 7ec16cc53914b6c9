"""Stage 1: fresh folders per task, one for the judge and one for the worker.

* ``judge/`` holds the grader's own pristine copy of the kit (harness, task
  folders with their tests and compile scripts, pytest configuration). The
  judge runs the tests from it; the worker may read it, never write it.
* ``worker/`` is the worker's scratch, the only folder it may write; its
  ``submission/`` holds the submission's student-editable files as listed in
  the manifest (``harness.tasks``), nothing else. A submission's own
  ``test.py``, ``compile.py`` or harness files are never copied, so they can
  never run.

Submission files are read defensively (:func:`read_submission_file`): no
symbolic link anywhere on the path, regular files only, a size limit.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
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
    folder: Path  # where the tests run: the judge's pristine kit
    worker: Path | None = None  # the worker's scratch; None runs the tests in one process (trusted code only)
    missing: list[str] = field(default_factory=list)  # this task's editable files not in the submission
    rejected: dict[str, str] = field(default_factory=dict)  # file -> why it was not taken
    mapped: dict[str, str] = field(default_factory=dict)  # our path -> the published-layout path it came from

    @property
    def submission(self) -> Path | None:
        return self.worker / "submission" if self.worker is not None else None


class Unreadable(Exception):
    """A submission file that cannot be taken; the message says why, for the student."""


def read_submission_file(root: Path, rel: str, max_bytes: int = MAX_SUBMISSION_FILE_BYTES) -> bytes:
    """The bytes of ``root/rel``, refusing links (on any part of the path), FIFOs,
    devices, sockets, folders and files over ``max_bytes``. Never blocks."""
    parts = Path(rel).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise
            last = i == len(parts) - 1
            where = "/".join(parts[: i + 1])
            if stat.S_ISLNK(st.st_mode):
                raise Unreadable(f"{where} is a symbolic link; submit the file itself")
            if not last:
                if not stat.S_ISDIR(st.st_mode):
                    raise Unreadable(f"{where} is not a folder")
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
                continue
            if not stat.S_ISREG(st.st_mode):
                kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode)
                        else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device file")
                raise Unreadable(f"it is {kind}, not a regular file")
            if st.st_size > max_bytes:
                raise Unreadable(f"it is larger than {max_bytes >> 20} MiB")
            try:
                ffd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise Unreadable("it is a symbolic link; submit the file itself") from None
                raise
            with os.fdopen(ffd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise Unreadable("it is not a regular file")
                data = f.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise Unreadable(f"it is larger than {max_bytes >> 20} MiB")
            return data
        raise Unreadable("an empty path")
    finally:
        os.close(fd)


def copy_kit(dest: Path, kit_root: Path = REPO_ROOT) -> None:
    """Copy the pristine kit (no solutions, no staff tests) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in KIT_PATHS:
        src = kit_root / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=_IGNORE, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, dest / rel)


def kit_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (the judge's kit), to show it was not changed."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts:
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def published_layout_path(rel: str) -> str | None:
    """Where the original assignment's handout keeps a file we keep at ``rel``: its CUDA kernels
    sit in a ``cuda/`` folder of their task (``task4/cuda/attention_kernel.cu``)."""
    task, _, name = rel.partition("/")
    return f"{task}/cuda/{name}" if name.endswith(".cu") and "/" not in name else None


def stage_task(task: str, submission: Path, work: Path, kit_root: Path = REPO_ROOT) -> Stage:
    """Make ``work/<task>/judge`` (the kit) and ``work/<task>/worker/submission`` (the files).

    Every task's editable files are taken (task 5 runs the student's task-4
    kernel too); only this task's own are reported as missing.
    """
    base = work / task
    if base.exists():
        shutil.rmtree(base)
    stage = Stage(task, base / "judge", base / "worker")
    copy_kit(stage.folder, kit_root)
    assert stage.submission is not None
    stage.submission.mkdir(parents=True)
    own = set(TASKS[task].editable) | {RESULTS_FILE}
    for rel in sorted(editable_files()):
        try:
            data = read_submission_file(submission, rel)
        except FileNotFoundError:
            published = published_layout_path(rel)
            try:  # a submission in the original assignment's layout
                data = read_submission_file(submission, published) if published else None
            except FileNotFoundError:
                data = None
            except (Unreadable, OSError) as exc:
                if rel in own:
                    stage.rejected[rel] = f"{published}: {exc}"
                continue
            if data is None:
                if rel in TASKS[task].editable:
                    stage.missing.append(rel)
                continue
            stage.mapped[rel] = published
        except (Unreadable, OSError) as exc:
            if rel in own:
                stage.rejected[rel] = str(exc)
            continue
        dst = stage.submission / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    return stage
