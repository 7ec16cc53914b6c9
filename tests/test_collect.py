"""``grader collect``: the gradebook, summary and plots of a class, from result folders.

The results here are written by hand in raw.json's format (what grader/pipeline.py
writes), so every state a class produces is covered quickly: graded with GPU
speedups and flags, graded on CPU only, a grader error, a broken raw.json, a job
that never finished, a submission with no result folder at all.
tests/test_slurm.py collects real results made by `grader run` under Slurm.
"""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from grader.collect import GRADEBOOK, SUMMARY_JSON, SUMMARY_MD, bucket, collect
from harness.tasks import REPO_ROOT


def task_result(task, points, max_points, status="graded", flags=(), speedup=None, reference=None, build=None,
                tests_s=10.0, ranked=True, flagged=False):
    r = dict(task=task, title="", points=points, max_points=max_points, status=status, reason="", flags=list(flags),
             stage_seconds=dict(stage=0.1, tests=tests_s, score=0.01), checks=[], speedups=[],
             tests=dict(duration_by_test={"test_a": tests_s / 2, "test_b": 0.01}), reference_speedups={})
    if build is not None:
        r["stage_seconds"]["build"] = build
    if speedup is not None:
        r["speedups"] = [dict(name="attention core vs PyTorch SDPA (float32)", points=1.0, max_points=2.0,
                              status="failed", value=speedup, reference=reference, basis="reference",
                              configs={"c1": speedup}, reason="", ranked=ranked, flagged=flagged)]
        r["reference_speedups"] = {"attention core vs PyTorch SDPA (float32)": reference} if reference else {}
    return r


def write_result(results: Path, student: str, tasks: dict, flags=(), grader_error=None, execution_time=60.0,
                 job=None):
    folder = results / student
    folder.mkdir(parents=True)
    raw = dict(submission=f"/subs/{student}", seed=1, tasks=tasks, flags=list(flags), gpu="NVIDIA H100",
               execution_time=execution_time)
    if grader_error:
        raw["grader_error"] = grader_error
    (folder / "raw.json").write_text(json.dumps(raw))
    (folder / "results.json").write_text(json.dumps(dict(score=sum(t["points"] for t in tasks.values()))))
    if job:
        (folder / "slurm-job.json").write_text(json.dumps(job))


@pytest.fixture
def class_results(tmp_path):
    res, subs = tmp_path / "results", tmp_path / "subs"
    for s in ("ada", "bo", "cy", "di", "ed", "fay", "gus"):
        (subs / s).mkdir(parents=True)
    write_result(res, "ada", {"task1": task_result("task1", 2, 2),
                              "task4": task_result("task4", 4, 4, build=50.0, speedup=0.9, reference=1.0)})
    write_result(res, "bo", {"task1": task_result("task1", 1, 2),
                             "task4": task_result("task4", 2.5, 4, build=70.0, speedup=4.0, reference=1.2,
                                                  flags=["implausible speedup for 'attention core': 4x"],
                                                  flagged=True)},
                 flags=["Results.md: task4 row 'core' column 1 reports 9 but the grader measured 1"])
    write_result(res, "cy", {"task1": task_result("task1", 0, 2, status="not implemented"),
                             "task4": task_result("task4", 0, 4, status="build failed", build=20.0)})
    write_result(res, "di", {"task1": task_result("task1", 2, 2)}, grader_error="Traceback...\nRuntimeError: boom")
    (res / "ed").mkdir()
    (res / "ed" / "raw.json").write_text("{not json")
    (res / "ed" / "results.json").write_text("{}")
    (res / "fay").mkdir()
    (res / "fay" / "slurm-job.json").write_text(json.dumps(dict(job="7_5", node="n1", started=1)))
    # gus submitted, never graded: no folder at all
    return res, subs


def read_gradebook(res: Path) -> dict[str, dict]:
    with open(res / GRADEBOOK, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def test_every_student_gets_a_row_with_its_status(class_results):
    res, subs = class_results
    collect(res, subs)
    book = read_gradebook(res)
    assert list(book) == ["ada", "bo", "cy", "di", "ed", "fay", "gus"]
    assert [book[s]["status"] for s in book] == ["graded", "graded", "graded", "grader error", "broken result",
                                                 "no result", "missing"]
    assert book["ada"]["total"] == "6" and book["ada"]["max_total"] == "6"
    assert book["bo"]["task1"] == "1" and book["bo"]["task4"] == "2.5" and book["bo"]["total"] == "3.5"
    assert book["cy"]["task4_status"] == "build failed"
    assert book["bo"]["flag_count"] == "2"
    assert "implausible speedup" in book["bo"]["flags"] and "Results.md" in book["bo"]["flags"]
    assert "boom" in book["di"]["note"]
    assert "raw.json does not read" in book["ed"]["note"]
    assert "7_5" in book["fay"]["note"] and "never finished" in book["fay"]["note"]
    assert book["gus"]["note"] == "no result folder" and book["gus"]["total"] == ""


def test_without_the_submissions_folder_the_unknown_student_is_not_invented(class_results):
    res, _ = class_results
    collect(res)
    assert "gus" not in read_gradebook(res) and "fay" in read_gradebook(res)


def test_summary_statistics_speedups_and_time(class_results):
    res, subs = class_results
    s = collect(res, subs)
    assert s["students"] == 7 and s["by_status"]["graded"] == 3
    assert {p["student"] for p in s["problems"]} == {"di", "ed", "fay", "gus"}
    assert s["total"]["n"] == 3 and s["total"]["median"] == 3.5 and s["total"]["max_points"] == 6
    assert s["tasks"]["task1"]["distribution"] == {"0": 1, "<25%": 0, "25-50%": 0, "50-75%": 1, "75-<100%": 0, "full": 1}
    assert s["tasks"]["task4"]["statuses"] == {"graded": 2, "build failed": 1}
    sp = s["speedups"]["task4"]["attention core vs PyTorch SDPA (float32)"]
    assert sp["values"] == [0.9, 4.0] and sp["reference"]["median"] == 1.1
    t = s["time"]
    assert t["stages"]["build"]["total_s"] == 140.0 and t["total_s"] == 180.0
    assert t["per_task"]["task4"]["build"]["mean"] == pytest.approx(140 / 3, abs=1e-3)
    assert t["slowest_tests"][0]["test"].endswith("test_a")
    md = (res / SUMMARY_MD).read_text()
    assert "## Where the grading time goes" in md and "| build | 140.0 |" in md
    assert "- ed: broken result" in md and "- gus: missing" in md
    assert json.loads((res / SUMMARY_JSON).read_text())["total"]["n"] == 3


def test_plots_and_idempotence(class_results):
    pytest.importorskip("matplotlib")
    res, subs = class_results
    s = collect(res, subs)
    assert s["plots"] == ["scores.png", "speedups.png", "time.png"]
    first = {p.name: p.read_bytes() for p in res.iterdir() if p.is_file()}
    assert first["speedups.png"].startswith(b"\x89PNG")
    collect(res, subs)
    assert {p.name: p.read_bytes() for p in res.iterdir() if p.is_file()} == first


def test_without_matplotlib_the_csv_and_summary_are_still_written(class_results, monkeypatch):
    res, subs = class_results
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    s = collect(res, subs)
    assert s["plots"] == [] and "matplotlib is not installed" in s["plots_note"]
    assert (res / GRADEBOOK).exists() and "matplotlib is not installed" in (res / SUMMARY_MD).read_text()
    assert not (res / "scores.png").exists()


def test_buckets():
    assert [bucket(p, 4) for p in (0, 0.5, 1, 2, 3.5, 4)] == ["0", "<25%", "25-50%", "50-75%", "75-<100%", "full"]


def test_cli(class_results, tmp_path):
    res, subs = class_results
    run = [sys.executable, "-m", "grader", "collect"]
    ok = subprocess.run(run + [str(res), "--submissions", str(subs), "--no-plots"], cwd=REPO_ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "7 student(s)" in ok.stdout and "missing: gus" in ok.stdout
    missing = subprocess.run(run + [str(tmp_path / "nope")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 3 and "does not exist" in missing.stderr


def test_the_leaderboard_ranks_only_measured_right_speedups(class_results, tmp_path):
    from grader.leaderboard import LEADERBOARD_MD
    from grader.report import gradescope

    res, subs = class_results
    # A kernel that failed a correctness check has a speedup, but no place on the board.
    write_result(res, "hal", {"task4": task_result("task4", 1, 4, speedup=9.0, reference=1.0, ranked=False)})
    collect(res, subs)
    text = (res / LEADERBOARD_MD).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[1] for r in rows] == ["bo", "ada"], text  # best first
    assert "flagged for review" in rows[0] and "0.90" in rows[1], text
    assert "hal" not in text
    # Gradescope's leaderboard, which students see, shows ranked speedups not flagged for review.
    ada = json.loads((res / "ada" / "raw.json").read_text())
    bo = json.loads((res / "bo" / "raw.json").read_text())
    assert gradescope(ada)["leaderboard"] == [dict(name="Task 4 speedup", value=0.9, order="desc")]
    assert "leaderboard" not in gradescope(bo)
