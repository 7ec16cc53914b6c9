"""``grader slurm`` and ``grader status``: grade a whole class as a Slurm job array.

One array task per submission, each running ``python -m grader run`` on its own
GPU into ``RESULTS_DIR/<student>/`` with its own log (layout: :mod:`grader.class_results`).
Re-running ``grader slurm`` submits only the submissions without a finished
result and not already queued, so failures and lost nodes are retried by
running the same command again. ``grader status`` needs only ``squeue`` and
the result folders (``sacct`` is used when it works, i.e. with slurmdbd).
"""
from __future__ import annotations

import getpass
import json
import secrets
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.tasks import REPO_ROOT

from .class_results import (
    DONE, JOBS_FILE, MARKER, RESULT_FILES, SLURM_DIR, StudentResult, job_text, read_jobs, read_result, roster,
    submissions_in,
)

#: Node-local folder (under it, one per GPU set) that array tasks share for CUDA builds.
DEFAULT_NODE_CACHE = "/tmp/attn-kit-build-cache-{user}"
#: Array tasks per job: Slurm's default MaxArraySize is 1001 (indices 0-1000); larger classes get several arrays.
MAX_ARRAY_TASKS = 1000
PENDING_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED", "RESV_DEL_HOLD"}


@dataclass
class Plan:
    submit: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    queued: dict[str, str] = field(default_factory=dict)  # student -> "job_index STATE"
    problems: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SbatchOptions:
    partition: str | None = None
    gres: str | None = "gpu:1"
    time: str = "02:00:00"
    account: str | None = None
    cpus_per_task: int | None = None
    array_parallelism: int | None = None
    extra: list[str] = field(default_factory=list)  # more "#SBATCH" arguments, e.g. "--mem=32G"
    job_name: str = "attn-kit-grade"


# ------------------------------------------------------------------ the queue

def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def queue_states(job_ids: set[str]) -> tuple[dict[tuple[str, str], str], str]:
    """(array job id, index) -> squeue state for this user's queued tasks of ``job_ids``; and a note."""
    if not job_ids:
        return {}, ""
    if shutil.which("squeue") is None:
        return {}, "squeue not found: queued and running tasks cannot be seen from here"
    proc = _run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%F|%K|%T"])
    if proc is None or proc.returncode != 0:
        return {}, "squeue failed: " + ((proc.stderr or "").strip() if proc else "no answer")
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0] in job_ids:
            states[(parts[0], parts[1])] = parts[2]
    return states, ""


def accounting_states(job_ids: set[str]) -> dict[tuple[str, str], str]:
    """(array job id, index) -> final state from sacct, where accounting works (slurmdbd); else {}."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    proc = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(sorted(job_ids)), "-o", "JobID,State,ExitCode"])
    if proc is None or proc.returncode != 0:
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) >= 2 and "_" in parts[0] and "[" not in parts[0]:
            job, index = parts[0].split("_", 1)
            states[(job, index)] = parts[1].split()[0] + (f" (exit {parts[2]})" if len(parts) > 2 else "")
    return states


def assignments(results_dir: Path) -> dict[str, tuple[str, str]]:
    """student -> (array job id, index) of the latest array that included them."""
    out = {}
    for job in read_jobs(results_dir):
        for i, student in enumerate(job["students"]):
            out[student] = (str(job.get("job_id")), str(i))
    return out


# ------------------------------------------------------------------ the plan and the script

def plan(submissions_dir: Path, results_dir: Path, force: bool = False) -> tuple[Plan, str]:
    p = Plan()
    students, p.problems = submissions_in(submissions_dir)
    where = assignments(results_dir)
    queue, note = queue_states({job for job, _ in where.values()})
    for student in students:
        key = where.get(student)
        if key and key in queue:
            p.queued[student] = f"{key[0]}_{key[1]} {queue[key]}"  # never graded twice at once, even with --force
        elif not force and read_result(results_dir / student).finished:
            p.done.append(student)
        else:
            p.submit.append(student)
    return p, note


def _directive_value(text: str, what: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} must be one word without spaces: {text!r}")
    return text


def job_script(*, students_file: Path, n: int, submissions_dir: Path, results_dir: Path, opts: SbatchOptions,
               grader_args: list[str], python: str = sys.executable, repo: Path = REPO_ROOT,
               node_cache: str | None = None) -> str:
    logs = results_dir / SLURM_DIR / "logs"
    array = f"0-{n - 1}" + (f"%{opts.array_parallelism}" if opts.array_parallelism else "")
    directives = [f"--job-name={_directive_value(opts.job_name, 'the job name')}", f"--array={array}",
                  f"--output={logs}/%A_%a.log", f"--chdir={repo}",
                  f"--time={_directive_value(opts.time, '--time')}"]
    if opts.gres:
        directives.append(f"--gres={_directive_value(opts.gres, '--gres')}")
    if opts.partition:
        directives.append(f"--partition={_directive_value(opts.partition, '--partition')}")
    if opts.account:
        directives.append(f"--account={_directive_value(opts.account, '--account')}")
    if opts.cpus_per_task:
        directives.append(f"--cpus-per-task={opts.cpus_per_task}")
    directives += [_directive_value(e, "--sbatch-arg") for e in opts.extra]
    for d in directives:
        if "\n" in d:
            raise ValueError(f"a line break in an sbatch option: {d!r}")
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# Written by `python -m grader slurm` on {time.strftime('%Y-%m-%d %H:%M:%S')}: one array task",
        "# per submission; each grades it into RESULTS/<student>/ on its own GPU. Running that command",
        "# again submits only the submissions without a finished result.",
        *(f"#SBATCH {d}" for d in directives),
        "set -uo pipefail",
        "",
        f"PYTHON={q(python)}",
        f"SUBMISSIONS={q(str(submissions_dir))}",
        f"RESULTS={q(str(results_dir))}",
        f"STUDENTS={q(str(students_file))}",
        f"NODE_CACHE={q(node_cache or '')}",
        "",
        'STUDENT=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$STUDENTS")',
        'if [ -z "$STUDENT" ]; then echo "no submission for array index $SLURM_ARRAY_TASK_ID in $STUDENTS" >&2; exit 2; fi',
        'TASK="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        'OUT="$RESULTS/$STUDENT"',
        'mkdir -p "$OUT"',
        "# An earlier result must not pass for this run's: a run that dies leaves no results.json.",
        "rm -f " + " ".join(f'"$OUT/{f}"' for f in RESULT_FILES),
        "",
        "# CUDA builds are keyed by their sources' contents (harness/build.py), so a node-local cache",
        "# is safe to share and the reference solution's (and identical) kernels build once per GPU",
        "# instead of once per student. One cache per GPU set, not per node: tasks on the same GPU run",
        "# one after another, so an old build is never pruned while another task is still building it.",
        'if [ -n "$NODE_CACHE" ] && [ -n "${SLURM_JOB_GPUS:-}" ]; then',
        '  export ATTN_KIT_BUILD_DIR="$NODE_CACHE/gpu-${SLURM_JOB_GPUS//,/-}"',
        '  mkdir -p "$ATTN_KIT_BUILD_DIR"',
        "  # grader run builds into OUT/build-cache: make that the node's cache",
        '  if [ -L "$OUT/build-cache" ] || [ ! -e "$OUT/build-cache" ]; then ln -sfn "$ATTN_KIT_BUILD_DIR" "$OUT/build-cache"; fi',
        "fi",
        "",
        "STARTED=$(date +%s)",
        f"printf '{{\"job\": \"%s\", \"node\": \"%s\", \"gpus\": \"%s\", \"log\": \"%s.log\", \"started\": %s}}\\n' \\",
        f'  "$TASK" "$(hostname -s)" "${{SLURM_JOB_GPUS:-}}" "$TASK" "$STARTED" > "$OUT/{MARKER}"',
        'echo "[$TASK] grading $STUDENT on $(hostname -s) (GPUs: ${SLURM_JOB_GPUS:-none}; builds: ${ATTN_KIT_BUILD_DIR:-$OUT/build-cache})"',
        '"$PYTHON" -m grader run --submission "$SUBMISSIONS/$STUDENT" --out "$OUT"'
        + "".join(" " + q(a) for a in grader_args),
        "RC=$?",
        "ENDED=$(date +%s)",
        f"printf '{{\"job\": \"%s\", \"node\": \"%s\", \"gpus\": \"%s\", \"log\": \"%s.log\", \"started\": %s, "
        f"\"ended\": %s, \"seconds\": %s, \"exit_code\": %s}}\\n' \\",
        f'  "$TASK" "$(hostname -s)" "${{SLURM_JOB_GPUS:-}}" "$TASK" "$STARTED" "$ENDED" "$((ENDED - STARTED))" "$RC" > "$OUT/{MARKER}"',
        'echo "[$TASK] $STUDENT: grader exit code $RC after $((ENDED - STARTED)) s"',
        "exit $RC",
        "",
    ]
    return "\n".join(lines)


def submit(submissions_dir: Path, results_dir: Path, opts: SbatchOptions, grader_args: list[str], *,
           force: bool = False, dry_run: bool = False, node_cache: str | None = DEFAULT_NODE_CACHE,
           python: str = sys.executable, out=sys.stdout) -> tuple[int, list[str]]:
    """Write the array scripts and submit them. Returns (0 or 1, the job ids submitted)."""
    submissions_dir, results_dir = submissions_dir.resolve(), results_dir.resolve()
    p, note = plan(submissions_dir, results_dir, force=force)
    for name, why in p.problems:
        print(f"not graded: {name!r}: {why}", file=out)
    if note:
        print(f"note: {note}", file=out)
    print(f"{len(p.submit)} to grade, {len(p.done)} already graded (finished result), "
          f"{len(p.queued)} already queued or running", file=out)
    for student, where in p.queued.items():
        print(f"  queued: {student} ({where})", file=out)
    if not p.submit:
        print("nothing to submit" + ("" if force else " (--force grades finished submissions again)"), file=out)
        return 0, []
    from harness.containment import UNCONTAINED, available

    here = UNCONTAINED if os.environ.get("ATTN_KIT_CONTAIN") == "none" else available()
    if here == UNCONTAINED:
        print("warning: this machine offers no containment for submission code (no Landlock, or it was turned "
              "off): if the compute nodes are alike, every result will be marked uncontained and flagged. "
              "The gradebook's containment column says what each node had.", file=out)
    if not dry_run and shutil.which("sbatch") is None:
        print("error: sbatch not found (run this on a Slurm login node, or use --dry-run)", file=sys.stderr)
        return 1, []
    (results_dir / SLURM_DIR / "logs").mkdir(parents=True, exist_ok=True)
    cache = node_cache.format(user=getpass.getuser()) if node_cache else None
    stamp = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    chunks = [p.submit[i:i + MAX_ARRAY_TASKS] for i in range(0, len(p.submit), MAX_ARRAY_TASKS)]
    jobs = []
    for n, students in enumerate(chunks):
        batch = stamp + (f"-{n}" if len(chunks) > 1 else "")
        folder = results_dir / SLURM_DIR / ("dry-run" + (f"-{n}" if len(chunks) > 1 else "") if dry_run else batch)
        folder.mkdir(parents=True, exist_ok=True)
        students_file = folder / "students.txt"
        students_file.write_text("".join(s + "\n" for s in students))
        script = job_script(students_file=students_file, n=len(students), submissions_dir=submissions_dir,
                            results_dir=results_dir, opts=opts, grader_args=grader_args, python=python,
                            node_cache=cache)
        script_path = folder / "job.sbatch"
        script_path.write_text(script)
        script_path.chmod(0o755)
        if dry_run:
            print(f"dry run: the script is {script_path} (not submitted):\n", file=out)
            print(script, file=out)
            continue
        proc = _run(["sbatch", "--parsable", str(script_path)], timeout=120)
        if proc is None or proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip() if proc else "sbatch did not answer"
            print(f"error: sbatch failed: {err}\nthe script is {script_path}", file=sys.stderr)
            return 1, jobs
        job_id = proc.stdout.strip().split(";")[0]
        record = dict(job_id=job_id, batch=batch, script=str(script_path), students_file=str(students_file),
                      count=len(students), submitted=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      submissions=str(submissions_dir), grader_args=grader_args)
        with open(results_dir / SLURM_DIR / JOBS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"submitted array job {job_id}: {len(students)} submission(s); script {script_path}", file=out)
        jobs.append(job_id)
    if jobs:
        print(f"results: {results_dir}/<student>/, logs: {results_dir / SLURM_DIR / 'logs'}/<job>_<index>.log; "
              f"progress: python -m grader status {results_dir}", file=out)
        print(" ".join(jobs), file=out)  # last line: the job id(s), for scripts
    return 0, jobs


def log_verdict(log: Path) -> str:
    """What Slurm wrote at the end of an array task's log when it stopped the task (or "")."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    for marker, text in (("DUE TO TIME LIMIT", "Slurm stopped it at the time limit (raise --time)"),
                         ("DUE TO NODE FAILURE", "its node failed"),
                         ("DUE TO PREEMPTION", "it was preempted"),
                         ("oom-kill", "it ran out of memory (add --sbatch-arg=--mem=...)"),
                         ("CANCELLED AT", "it was cancelled")):
        if marker in tail:
            return text
    return ""


# ------------------------------------------------------------------ status

STATUS_ORDER = ("pending", "running", "done", "failed", "not submitted")


def status(results_dir: Path, submissions_dir: Path | None = None) -> dict:
    """Each known student's state: pending, running, done, failed or not submitted (with details).

    Known students: those of the submitted arrays, the result folders, and ``submissions_dir``'s.
    """
    results_dir = results_dir.resolve()
    extra = submissions_in(submissions_dir)[0] if submissions_dir else []
    where = assignments(results_dir)
    jobs = {job for job, _ in where.values()}
    queue, note = queue_states(jobs)
    acct = accounting_states(jobs - {j for j, _ in queue})
    students = {}
    for student in roster(results_dir, extra):
        r: StudentResult = read_result(results_dir / student, student)
        key = where.get(student)
        entry = dict(student=student, result=r.state, detail=r.detail)
        if key:
            entry["task"] = f"{key[0]}_{key[1]}"
            entry["log"] = str(results_dir / SLURM_DIR / "logs" / f"{key[0]}_{key[1]}.log")
        if key and key in queue:
            entry["state"] = "pending" if queue[key] in PENDING_STATES else "running"
            entry["slurm"] = entry["detail"] = queue[key]
            if r.job.get("node") and entry["state"] == "running":
                entry["detail"] += f" on {r.job['node']}"
        elif r.state == DONE:
            entry["state"] = "done"
        elif not key and not r.job and r.state in ("missing", "no result"):
            entry["state"] = "not submitted"
        else:
            entry["state"] = "failed"
            why = [r.detail or r.state]
            verdict = log_verdict(Path(entry["log"])) if key else ""
            if verdict:
                why.append(verdict)
            if key and key in acct:
                why.append(f"Slurm: {acct[key]}")
            elif r.job and "exit_code" in r.job and r.state != "no result":
                why.append(job_text(r.job))
            elif key and not r.job:
                why.append("the array task never started writing (cancelled before it ran?)")
            entry["detail"] = "; ".join(why)
        students[student] = entry
    counts = {s: sum(1 for e in students.values() if e["state"] == s) for s in STATUS_ORDER}
    return dict(results=str(results_dir), jobs=sorted(jobs, key=lambda j: (len(j), j)), counts=counts,
                students=students, note=note, accounting=bool(acct))


def status_text(st: dict) -> str:
    lines = [f"results: {st['results']}   array jobs: {', '.join(st['jobs']) or 'none'}"]
    if st["note"]:
        lines.append(f"note: {st['note']}")
    lines.append("  ".join(f"{k} {v}" for k, v in st["counts"].items()))
    for state in ("failed", "running", "pending", "not submitted"):
        for e in st["students"].values():
            if e["state"] == state:
                extra = f" [{e['task']}]" if e.get("task") else ""
                detail = e.get("detail") or e.get("slurm") or ""
                lines.append(f"  {state}: {e['student']}{extra} {detail}".rstrip())
                if state == "failed" and e.get("log"):
                    lines.append(f"      log: {e['log']}")
    if st["counts"]["failed"]:
        lines.append("re-run the same `python -m grader slurm` command to grade the failed ones again")
    return "\n".join(lines)

