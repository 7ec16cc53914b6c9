"""A class's results folder, as ``grader slurm`` writes it and ``status`` / ``collect`` read it.

::

    RESULTS_DIR/
      <student>/            one per submission: what ``grader run --out`` writes
        results.json raw.json report.md logs/ work/
        slurm-job.json      the array task that graded it: job, node, GPUs, start, end, exit code
      _slurm/
        jobs.jsonl          one line per submitted array: job id, its batch folder, its students
        <batch>/job.sbatch  the script that was submitted
        <batch>/students.txt   line i+1 is the student of array index i
        logs/<job>_<index>.log  one log per array task

A result is *finished* when ``results.json`` exists and ``raw.json`` reads and has
no ``grader_error``: only then is a submission skipped by a re-run of ``grader slurm``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SLURM_DIR = "_slurm"
JOBS_FILE = "jobs.jsonl"
MARKER = "slurm-job.json"
#: Files ``grader run`` writes; a new run deletes the old ones first so they cannot pass for its own.
RESULT_FILES = ("results.json", "raw.json", "report.md")

# States of one student's result folder.
DONE = "graded"
GRADER_ERROR = "grader error"
BROKEN = "broken result"
NO_RESULT = "no result"
MISSING = "missing"


def student_id_problem(name: str) -> str | None:
    """Why a folder name cannot be a student id (None if it can)."""
    if not name or name.startswith((".", "_")):
        return "names starting with '.' or '_' are reserved"
    if any(ord(c) < 32 or c in "/\\" for c in name):
        return "the name has a control character or a slash"
    if len(name) > 200:
        return "the name is longer than 200 characters"
    return None


def submissions_in(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Student ids (the subfolders of ``folder``), and the entries that are not one, with why."""
    students, problems = [], []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") and not entry.is_dir():
            continue  # .DS_Store and friends
        if not entry.is_dir():
            problems.append((entry.name, "not a folder (a submission is a folder named by the student id)"))
            continue
        why = student_id_problem(entry.name)
        if why:
            problems.append((entry.name, why))
        else:
            students.append(entry.name)
    return students, problems


@dataclass
class StudentResult:
    student: str
    state: str  # DONE, GRADER_ERROR, BROKEN, NO_RESULT, MISSING
    detail: str = ""
    raw: dict | None = None
    job: dict = field(default_factory=dict)  # slurm-job.json, if any

    @property
    def finished(self) -> bool:
        return self.state == DONE


def _read_json(path: Path) -> tuple[object | None, str]:
    try:
        return json.loads(path.read_text()), ""
    except (OSError, ValueError) as exc:
        return None, f"{path.name} does not read ({type(exc).__name__}: {str(exc)[:120]})"


def job_text(job: dict) -> str:
    if not job:
        return ""
    text = f"array task {job.get('job', '?')} on {job.get('node', '?')}"
    if "exit_code" in job:
        text += f", exit code {job['exit_code']} after {job.get('seconds', '?')} s"
    else:
        text += ", started and never finished (time limit, cancelled, node lost, or still running)"
    return text


def read_result(folder: Path, student: str | None = None) -> StudentResult:
    """The state of one student's result folder (never raises)."""
    student = student or folder.name
    if not folder.is_dir():
        return StudentResult(student, MISSING, "no result folder")
    job, _ = _read_json(folder / MARKER) if (folder / MARKER).exists() else ({}, "")
    job = job if isinstance(job, dict) else {}
    raw_path, res_path = folder / "raw.json", folder / "results.json"
    if not raw_path.exists():
        if res_path.exists():
            return StudentResult(student, BROKEN, "results.json without raw.json", job=job)
        why = "no results.json" + (f" ({job_text(job)})" if job else "")
        return StudentResult(student, NO_RESULT, why, job=job)
    raw, err = _read_json(raw_path)
    if raw is None:
        return StudentResult(student, BROKEN, err, job=job)
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), dict):
        return StudentResult(student, BROKEN, "raw.json is not a grader result (no 'tasks')", job=job)
    if raw.get("grader_error"):
        lines = [ln for ln in str(raw["grader_error"]).strip().splitlines() if ln.strip()]
        return StudentResult(student, GRADER_ERROR, "the grader failed: " + (lines[-1] if lines else "?"),
                             raw=raw, job=job)
    if not res_path.exists():
        return StudentResult(student, BROKEN, "raw.json without results.json", raw=raw, job=job)
    return StudentResult(student, DONE, "", raw=raw, job=job)


def read_jobs(results_dir: Path) -> list[dict]:
    """The arrays submitted into ``results_dir``, oldest first, each with its ``students`` list."""
    path = results_dir / SLURM_DIR / JOBS_FILE
    jobs = []
    if not path.exists():
        return jobs
    for line in path.read_text().splitlines():
        try:
            job = json.loads(line)
        except ValueError:
            continue
        students_file = Path(job.get("students_file", ""))
        try:
            job["students"] = [s for s in students_file.read_text().split("\n") if s]
        except OSError:
            job["students"] = []
        jobs.append(job)
    return jobs


def looks_like_result(folder: Path) -> bool:
    """A folder ``grader run`` or an array task wrote into (not any folder that happens to be there)."""
    return any((folder / name).exists() for name in (*RESULT_FILES, MARKER, "logs", "work"))


def roster(results_dir: Path, extra: list[str] | None = None) -> list[str]:
    """Every student the folder knows of: result subfolders, submitted arrays, and ``extra``."""
    names = set(extra or [])
    for job in read_jobs(results_dir):
        names.update(job["students"])
    if results_dir.is_dir():
        for entry in results_dir.iterdir():
            if entry.is_dir() and student_id_problem(entry.name) is None and looks_like_result(entry):
                names.add(entry.name)
    return sorted(names)
