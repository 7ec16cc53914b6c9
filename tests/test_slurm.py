"""``grader slurm``, ``status`` and ``collect`` on a class of fixture submissions.

The first tests need no Slurm: the script ``grader slurm --dry-run`` writes, and
one array task of it run by hand. The last one runs on a real Slurm: CI starts a
single-node cluster (slurmctld, slurmd, one fake GPU) with scripts/ci_slurm.sh
and sets ATTN_KIT_SLURM_TEST=1; without that variable it is skipped, and with it
but no working Slurm it fails.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import grader.slurm as slurm_mod
from grader.slurm import SbatchOptions, log_verdict, plan, submit
from harness.tasks import REPO_ROOT

SOLUTIONS = REPO_ROOT / "solutions"
#: How long the real test waits for an array before it gives up and prints what Slurm says.
WAIT_S = 15 * 60
SLURM_LOGS = Path(os.environ.get("ATTN_KIT_SLURM_LOGS", "/var/log/slurm"))


def make_class(root: Path) -> Path:
    """reference (the solutions' files), stubs (the handout's), broken (task 3's file missing)."""
    for student, base, files in (("reference", SOLUTIONS, ("task1/attention.py", "task3/attention.py")),
                                 ("stubs", REPO_ROOT, ("task1/attention.py", "task3/attention.py")),
                                 ("broken", SOLUTIONS, ("task1/attention.py",))):
        for rel in files:
            (root / student / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(base / rel, root / student / rel)
        shutil.copy(REPO_ROOT / "Results.md", root / student / "Results.md")
    return root


def grader(*args, check=True, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_")}
    proc = subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"grader {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def read_gradebook(res: Path) -> dict[str, dict]:
    with open(res / "gradebook.csv", newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


# ------------------------------------------------------------------ without Slurm

def test_dry_run_writes_the_script_and_lists_what_it_skips(tmp_path):
    subs = make_class(tmp_path / "subs")
    (subs / "_reserved").mkdir()
    (subs / "notes.txt").write_text("not a submission")
    (subs / ".DS_Store").write_text("")
    res = tmp_path / "res"
    proc = grader("slurm", subs, "--out", res, "--dry-run", "--tasks", "1,3", "--no-reference", "--partition", "gpu",
                  "--account", "course", "--array-parallelism", "2", "--sbatch-arg=--mem=8G", "--time", "00:30:00")
    out = proc.stdout
    assert "3 to grade" in out and "'_reserved'" in out and "'notes.txt'" in out and ".DS_Store" not in out
    script = (res / "_slurm" / "dry-run" / "job.sbatch").read_text()
    assert script in out
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --account=course", "#SBATCH --mem=8G",
                 "#SBATCH --gres=gpu:1", "#SBATCH --time=00:30:00", f"#SBATCH --chdir={REPO_ROOT}",
                 f"#SBATCH --output={res.resolve()}/_slurm/logs/%A_%a.log", f"PYTHON={sys.executable}"):
        assert line in script, line
    assert '-m grader run --submission "$SUBMISSIONS/$STUDENT" --out "$OUT" --tasks 1,3 --no-reference' in script
    assert (res / "_slurm" / "dry-run" / "students.txt").read_text() == "broken\nreference\nstubs\n"
    assert not (res / "_slurm" / "jobs.jsonl").exists()  # nothing was submitted
    assert subprocess.run(["bash", "-n", str(res / "_slurm" / "dry-run" / "job.sbatch")]).returncode == 0


def test_bad_sbatch_option_is_refused(tmp_path):
    proc = grader("slurm", make_class(tmp_path / "subs"), "--out", tmp_path / "res", "--dry-run",
                  "--partition", "a b", check=False)
    assert proc.returncode == 2 and "without spaces" in proc.stderr
    assert grader("slurm", tmp_path / "nope", "--dry-run", check=False).returncode == 3


def test_one_array_task_run_by_hand(tmp_path):
    """The script's own logic: student by index, node cache, completion marker, exit code."""
    subs = make_class(tmp_path / "subs")
    res, cache = tmp_path / "res", tmp_path / "node-cache"
    code, _ = submit(subs, res, SbatchOptions(), ["--tasks", "1", "--no-reference"], dry_run=True,
                     node_cache=str(cache), out=open(os.devnull, "w"))
    assert code == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_")}
    env.update(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_JOB_ID="99", SLURM_JOB_GPUS="0,1")
    proc = subprocess.run(["bash", str(res / "_slurm" / "dry-run" / "job.sbatch")], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = res / "reference"  # index 1 of broken, reference, stubs
    assert json.loads((out / "results.json").read_text())["score"] == 2
    job = json.loads((out / "slurm-job.json").read_text())
    assert job["job"] == "99_1" and job["exit_code"] == 0 and job["gpus"] == "0,1"
    assert (out / "build-cache").resolve() == (cache / "gpu-0-1").resolve()
    env["SLURM_ARRAY_TASK_ID"] = "7"  # no such index
    assert subprocess.run(["bash", str(res / "_slurm" / "dry-run" / "job.sbatch")], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True).returncode == 2


def test_plan_skips_finished_results_only(tmp_path):
    subs = make_class(tmp_path / "subs")
    res = tmp_path / "res"
    (res / "reference").mkdir(parents=True)
    (res / "reference" / "raw.json").write_text(json.dumps(dict(tasks={})))
    (res / "reference" / "results.json").write_text("{}")
    (res / "broken").mkdir()
    (res / "broken" / "raw.json").write_text(json.dumps(dict(tasks={}, grader_error="boom")))
    (res / "broken" / "results.json").write_text("{}")
    p, _ = plan(subs, res)
    assert p.submit == ["broken", "stubs"] and p.done == ["reference"]
    p, _ = plan(subs, res, force=True)
    assert p.submit == ["broken", "reference", "stubs"]


def test_a_large_class_is_split_into_arrays_slurm_accepts(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_mod, "MAX_ARRAY_TASKS", 2)
    subs, res = make_class(tmp_path / "subs"), tmp_path / "res"
    submit(subs, res, SbatchOptions(), [], dry_run=True, out=open(os.devnull, "w"))
    first, second = res / "_slurm" / "dry-run-0", res / "_slurm" / "dry-run-1"
    assert (first / "students.txt").read_text() == "broken\nreference\n" and "--array=0-1\n" in (first / "job.sbatch").read_text()
    assert (second / "students.txt").read_text() == "stubs\n" and "--array=0-0\n" in (second / "job.sbatch").read_text()


def test_status_reads_why_slurm_stopped_a_task(tmp_path):
    log = tmp_path / "7_1.log"
    log.write_text("[7_1] grading x\nslurmstepd: error: *** JOB 9 ON n1 CANCELLED AT 2025-01-01T00:00:00 DUE TO TIME LIMIT ***\n")
    assert "time limit" in log_verdict(log)
    log.write_text("[7_1] grading x\n")
    assert log_verdict(log) == "" and log_verdict(tmp_path / "nope.log") == ""


# ------------------------------------------------------------------ on a real Slurm

def slurm_or_skip() -> None:
    if os.environ.get("ATTN_KIT_SLURM_TEST") != "1":
        pytest.skip("needs a running Slurm: CI starts one (scripts/ci_slurm.sh start) and sets ATTN_KIT_SLURM_TEST=1")
    missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        pytest.fail(f"ATTN_KIT_SLURM_TEST=1 but {', '.join(missing)} not found: did scripts/ci_slurm.sh start run?")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if "UP" not in ping.stdout:
        pytest.fail(f"ATTN_KIT_SLURM_TEST=1 but slurmctld is not up: {ping.stdout}{ping.stderr}")


def slurm_diagnostics(res: Path) -> str:
    parts = []
    for cmd in (["squeue", "-a", "-r"], ["sinfo", "-R"], ["scontrol", "show", "node"]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        parts.append(f"$ {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    for log in [SLURM_LOGS / "slurmctld.log", SLURM_LOGS / "slurmd.log", *sorted((res / "_slurm" / "logs").glob("*.log"))]:
        if log.exists():
            parts.append(f"--- {log} (end)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
    return "\n".join(parts)


def wait_for_array(res: Path, job_id: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < WAIT_S:
        st = json.loads(grader("status", res, "--json").stdout)
        queued = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip()
        if st["counts"]["pending"] == 0 and st["counts"]["running"] == 0 and not queued:
            return time.monotonic() - start
        time.sleep(3)
    subprocess.run(["scancel", job_id])
    pytest.fail(f"array {job_id} not finished after {WAIT_S} s\n{slurm_diagnostics(res)}")


def test_class_graded_on_slurm(tmp_path):
    slurm_or_skip()
    subs = make_class(tmp_path / "subs")
    res = tmp_path / "results"
    args = ["--out", res, "--tasks", "1,3", "--no-reference", "--time", "00:15:00"]

    out = grader("slurm", subs, *args).stdout
    assert "3 to grade" in out, out
    job = out.strip().splitlines()[-1]
    assert job.isdigit(), out
    took = wait_for_array(res, job)
    print(f"\narray {job} (3 submissions, one fake GPU, so one at a time) finished in {took:.0f} s")
    st = json.loads(grader("status", res, "--json").stdout)
    assert st["counts"]["done"] == 3, f"{st}\n{slurm_diagnostics(res)}"
    assert sorted(p.name for p in (res / "_slurm" / "logs").glob(f"{job}_*.log")) == [f"{job}_{i}.log" for i in range(3)]

    grader("collect", res, "--submissions", subs)
    book = read_gradebook(res)
    assert {s: (r["status"], r["total"], r["task1"], r["task3"]) for s, r in book.items()} == {
        "broken": ("graded", "2", "2", "0"), "reference": ("graded", "5", "2", "3"), "stubs": ("graded", "0", "0", "0")}
    assert book["broken"]["task3_status"] == "missing files" and book["stubs"]["task1_status"] == "not implemented"
    assert (res / "summary.md").exists() and (res / "scores.png").exists()
    # Each row says how that student's code was contained on the node that graded it.
    assert all(r["containment"] for r in book.values()), book
    print("gradebook:\n" + (res / "gradebook.csv").read_text())

    # A lost result (as after a node failure) is failed in status, and a re-run grades only it.
    (res / "stubs" / "results.json").unlink()
    st = json.loads(grader("status", res, "--json").stdout)
    assert st["students"]["stubs"]["state"] == "failed" and st["counts"]["done"] == 2
    out = grader("slurm", subs, *args).stdout
    assert "1 to grade, 2 already graded" in out, out
    job2 = out.strip().splitlines()[-1]
    took2 = wait_for_array(res, job2)
    print(f"retry array {job2} (1 submission) finished in {took2:.0f} s")
    assert json.loads(grader("status", res, "--json").stdout)["counts"]["done"] == 3
    assert "nothing to submit" in grader("slurm", subs, *args).stdout
    grader("collect", res, "--submissions", subs)
    assert read_gradebook(res)["stubs"]["status"] == "graded"
