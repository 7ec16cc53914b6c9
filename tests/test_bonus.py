"""Task 4's bonus part (the tensor-core kernels) on the CPU: it is scored apart from the task from
made-up test reports (as tests/test_scoring.py does), reported as extra credit in results.json,
report.md, the terminal, the gradebook and the leaderboards, and it is optional: a submission
without its file is staged without anything missing, and its build never fails the compile."""
from __future__ import annotations

import io
import json

import pytest

from grader import collect, leaderboard, report, rubric as rubric_mod
from grader.runner import TestRun as Run  # (aliased: pytest would take TestRun for a test class)
from grader.scoring import score_task
from grader.stage import stage_task
from harness import build
from harness.impl import IMPL_ENV
from harness.tasks import EXTENSIONS, REPO_ROOT, TASKS, editable_files, timed_test_functions

CONFIGS = ["B4-S128-full", "B4-S128-causal", "B64-S4096-full", "B64-S4096-causal"]
BONUS_FILE = "task4/attention_kernel_tc.cu"
MISSING = f"FileNotFoundError: {BONUS_FILE} is missing from /submission. It is a file you write"
NOT_IMPLEMENTED = "not implemented yet: the bf16 tensor-core kernel (README, Task 4 bonus)"


def _case(nodeid: str, outcome: str, message: str = "", measurements: dict | None = None) -> dict:
    case = {"nodeid": f"task4/test.py::{nodeid}", "outcome": outcome,
            "call": {"outcome": outcome, **({"longrepr": message} if message else {})}}
    if measurements:
        case["metadata"] = {"measurements": measurements}
    return case


def task4_report(core: str = "passed", bf16: str = "passed", tf32: str = "passed", message: str = "",
                 bf16_speed: float = 0.7, tf32_speed: float = 2.0, speed_always_runs: bool = False) -> Run:
    """A task-4 report: the core cases and timed configurations, and each bonus variant's cases
    passed or failed (with ``message``); a passed variant's speed tests (every variant's, with
    ``speed_always_runs``) record their speedup."""
    core_message = "" if core == "passed" else "not implemented yet: the fused FlashAttention kernel (README, Task 4)"
    tests = [_case(f"{t}[x]", core, core_message)
             for t in ("test_attention_core", "test_attention_core_large_scores", "test_module")]
    tests += [_case(f"test_core_speed[{cfg}]", core, core_message,
                    {"core_speedup": {"speedup": 0.6, "trusted": True, "distrust": []}} if core == "passed" else None)
              for cfg in CONFIGS]
    for variant, outcome, speed in (("bf16", bf16, bf16_speed), ("3xtf32", tf32, tf32_speed)):
        text = "" if outcome == "passed" else message
        tests += [_case(f"test_bonus_{variant}_core[x-{causal}]", outcome, text) for causal in ("full", "causal")]
        tests += [_case(f"test_bonus_{variant}_large_scores[x]", outcome, text),
                  _case(f"test_bonus_{variant}_rejects_bad_inputs", outcome, text)]
        timed = "passed" if speed_always_runs else outcome
        tests += [_case(f"test_bonus_{variant}_speed[{cfg}]", timed, "" if timed == "passed" else text,
                        {f"bonus_{variant}_speedup": {"speedup": speed, "trusted": True, "distrust": []}}
                        if timed == "passed" else None) for cfg in CONFIGS]
    return Run(proc=None, report={"tests": tests}, problem=None)


def score(run: Run, references: dict | None = None):
    rubric = rubric_mod.load()
    tr = rubric.tasks["task4"]
    refs = references if references is not None else {s.name: s.absolute_full_at for s in tr.all_speedups}
    return score_task(rubric, tr, run, refs)


def test_the_bonus_is_outside_the_assignments_points():
    rubric = rubric_mod.load()
    assert rubric.total == 20 and rubric.bonus_total == 2
    tr = rubric.tasks["task4"]
    assert sum(c.points for c in tr.checks) + sum(s.points for s in tr.speedups) == tr.points == 4
    assert [b.name for b in tr.bonus] == ["tensor cores, bf16", "tensor cores, 3xTF32"]
    assert all(t.startswith("test_bonus_") for t in tr.bonus_tests)


def test_a_full_bonus_adds_to_a_full_task():
    s = score(task4_report())
    assert s.points == s.max_points == 4 and s.status == "graded", s.reason
    assert s.bonus_points == s.bonus_max_points == 2, [(b.name, b.reason) for b in s.bonus]


@pytest.mark.parametrize("why", [MISSING, NOT_IMPLEMENTED])
def test_no_bonus_file_or_a_bonus_stub_keeps_the_tasks_score(why):
    s = score(task4_report(bf16="failed", tf32="failed", message=why))
    assert s.points == 4 and s.status == "graded" and s.reason == "every check passed", (s.status, s.reason)
    assert s.bonus_points == 0 and s.bonus_max_points == 2
    assert all(why.split(":")[0] in b.reason for b in s.bonus), [b.reason for b in s.bonus]
    assert all(sp.points == 0 and why in sp.reason for b in s.bonus for sp in b.speedups)


def test_a_missing_or_broken_bonus_file_is_one_clear_line():
    """On the H200, a submission without the bonus file read "case = (2, 1, 2, 16), causal = False"
    (the top of a traceback) as its bonus reason: the bonus tests now say what happened."""
    from harness.impl import MissingSubmissionFile
    from harness.remote import RemoteError
    from task4.test import _tc_failure

    for exc in (MissingSubmissionFile(f"{BONUS_FILE} is missing from /s"),
                RemoteError(f"MissingSubmissionFile: {BONUS_FILE} is missing from /s")):
        assert _tc_failure(exc).startswith("no bonus file: task4/attention_kernel_tc.cu"), _tc_failure(exc)
    broken = RuntimeError("error building custom_flash_attention_tc\nattention_kernel_tc.cu(12): error: expected ';'")
    assert "expected ';'" in _tc_failure(broken, whole=True)  # the first test shows the compiler's message
    assert _tc_failure(broken) == ("the bonus extension custom_flash_attention_tc did not build or load: "
                                   "error building custom_flash_attention_tc")


def test_a_task_stub_is_still_not_implemented_whatever_the_bonus_did():
    s = score(task4_report(core="failed", bf16="failed", tf32="failed", message=MISSING))
    assert s.points == 0 and s.status == "not implemented", (s.status, s.reason)
    half = score(task4_report(core="failed", tf32="failed", message=NOT_IMPLEMENTED))
    assert half.status == "not implemented" and half.bonus_points == 1  # the bonus is paid on its own


def test_each_bonus_part_is_gated_by_its_own_checks():
    """bf16 right and fast, 3xTF32 fast but wrong: the bf16 speed is paid, the 3xTF32 speed is not."""
    s = score(task4_report(tf32="failed", message="CheckFailed: differs from the float64 reference",
                           speed_always_runs=True))
    bf16, tf32 = s.bonus
    assert bf16.points == bf16.max_points == 1 and tf32.points == 0
    assert tf32.speedups[0].status == "failed" and "speed is scored only" in tf32.speedups[0].reason
    assert s.points == 4


def test_a_slow_bonus_earns_part_of_its_speed_points():
    tr = rubric_mod.load().tasks["task4"]
    bf16_speed = tr.bonus[0].speedups[0]
    middle = (bf16_speed.absolute_full_at + bf16_speed.absolute_zero_at) / 2
    s = score(task4_report(bf16_speed=middle), references={})  # no reference: the absolute thresholds
    assert s.bonus[0].speedups[0].points == pytest.approx(bf16_speed.points / 2, abs=1e-3)
    assert s.bonus[0].speedups[0].basis.startswith("absolute")


def _results(points_run: Run) -> dict:
    """What grader.pipeline.grade_task keeps of a task-4 score (the fields the reports read)."""
    from dataclasses import asdict

    s = score(points_run)
    task = dict(task="task4", title=TASKS["task4"].title, max_points=s.max_points, points=s.points, status=s.status,
                reason=s.reason, flags=s.flags, checks=[asdict(c) for c in s.checks],
                speedups=[asdict(x) for x in s.speedups], bonus=[asdict(b) for b in s.bonus],
                bonus_points=s.bonus_points, bonus_max_points=s.bonus_max_points)
    return dict(submission="/s", seed=1, gpu="test", execution_time=1.0, tasks={"task4": task}, flags=[])


def test_results_json_carries_the_bonus_as_extra_credit_and_on_the_leaderboard():
    results = _results(task4_report(tf32="failed", message=NOT_IMPLEMENTED))
    doc = report.gradescope(results)
    assert report.validate_gradescope(doc) == [], report.validate_gradescope(doc)
    bonus = [t for t in doc["tests"] if " - bonus (" in t["name"]]
    assert len(bonus) == 4 and all(t["max_score"] == 0 for t in bonus)
    assert sum(t["score"] for t in bonus) == 1 and doc["score"] == 5  # the task's 4 and the bonus's 1
    names = [e["name"] for e in doc["leaderboard"]]
    assert names == ["Task 4 speedup", "Task 4 bonus tensor cores, bf16 speedup"], names
    json.dumps(doc, allow_nan=False)
    # Extra credit is a max_score of 0; any other test may still not score above its max.
    doc["tests"][0]["score"] = doc["tests"][0]["max_score"] + 1
    assert any("scores more than its max_score" in p for p in report.validate_gradescope(doc))


def test_report_md_and_the_terminal_show_the_bonus_apart():
    results = _results(task4_report(tf32="failed", message=NOT_IMPLEMENTED))
    md = report.markdown(results)
    assert md.startswith("# Grading report: 4 / 4 (bonus: 1 / 2 more)"), md.splitlines()[0]
    assert "Bonus (extra points, outside the task's 4): 1 / 2" in md and "**bonus, tensor cores, 3xTF32**: 0 / 1" in md
    text = report.summary_text(results)
    assert "total 4 / 4" in text and "bonus 1 / 2" in text, text


def test_the_gradebook_and_the_class_leaderboard_carry_the_bonus(tmp_path):
    rows = []
    for student, tf32 in (("ada", "passed"), ("bob", "failed")):
        raw = _results(task4_report(tf32=tf32, message=NOT_IMPLEMENTED, tf32_speed=3.0 if student == "ada" else 2.0))
        (tmp_path / student).mkdir()
        (tmp_path / student / "raw.json").write_text(json.dumps(raw))
        (tmp_path / student / "results.json").write_text(json.dumps(report.gradescope(raw)))
        rows.append(dict(student=student, raw=raw))
    boards = leaderboard.boards(rows)
    tf32_board = "task4 bonus (tensor cores, 3xTF32): 3xTF32 tensor cores vs SDPA (float32)"
    assert [e["student"] for e in boards[tf32_board]] == ["ada"]  # bob's failed checks keep him off
    assert len(boards["task4 bonus (tensor cores, bf16): bf16 tensor cores vs SDPA's FlashAttention backend (bf16)"]) == 2
    collect.collect(tmp_path, plots=False, out=io.StringIO())
    book = {line.split(",")[0]: line for line in (tmp_path / collect.GRADEBOOK).read_text().splitlines()}
    header = book["student"].split(",")
    assert "bonus" in header and "task4_bonus" in header
    assert book["ada"].split(",")[header.index("bonus")] == "2" and book["bob"].split(",")[header.index("bonus")] == "1"
    assert book["ada"].split(",")[header.index("total")] == "4"
    assert "task4 bonus (tensor cores, 3xTF32)" in (tmp_path / leaderboard.LEADERBOARD_MD).read_text()


def test_a_bonus_may_not_share_tests_with_the_tasks_own_checks(tmp_path):
    text = rubric_mod.RUBRIC_PATH.read_text()
    bad = text.replace('tests = ["test_bonus_bf16_core", ', 'tests = ["test_attention_core", ')
    assert bad != text
    (tmp_path / "rubric.toml").write_text(bad)
    with pytest.raises(rubric_mod.RubricError, match="bonus names tests its own checks"):
        rubric_mod.load(tmp_path / "rubric.toml")
    unknown = text.replace('test = "test_bonus_bf16_speed"', 'test = "test_bonus_bf16_speedy"')
    (tmp_path / "rubric.toml").write_text(unknown)
    with pytest.raises(rubric_mod.RubricError, match="test_bonus_bf16_speedy"):
        rubric_mod.load(tmp_path / "rubric.toml")


# ------------------------------------------------------------------ optional for grading

def test_the_bonus_file_is_optional_in_the_manifest():
    task = TASKS["task4"]
    assert BONUS_FILE in task.optional and BONUS_FILE not in task.editable and BONUS_FILE in editable_files()
    assert EXTENSIONS["custom_flash_attention_tc"].sources == (BONUS_FILE,)
    assert task.bonus_extensions == ("custom_flash_attention_tc",) and "custom_flash_attention_tc" not in task.extensions


@pytest.mark.parametrize("layout", ["ours", "original"])
def test_a_submission_without_the_bonus_file_misses_nothing(tmp_path, layout):
    sub = tmp_path / "sub"
    kernel = sub / ("task4/attention_kernel.cu" if layout == "ours" else "task4/cuda/attention_kernel.cu")
    kernel.parent.mkdir(parents=True)
    kernel.write_text("// a kernel\n")
    stage = stage_task("task4", sub, tmp_path / "work")
    assert stage.missing == [] and not stage.rejected
    assert not (stage.submission / BONUS_FILE).exists()
    (sub / "task4" / ("cuda" if layout == "original" else "") / "attention_kernel_tc.cu").write_text("// bonus\n")
    stage = stage_task("task4", sub, tmp_path / "work")
    assert (stage.submission / BONUS_FILE).read_text() == "// bonus\n"


def _fake_compile(monkeypatch, tmp_path, *, bonus_file: bool, fail: tuple[str, ...] = ()):
    """compile_main("task4") with a submission folder and a fake build (no compiler runs)."""
    impl = tmp_path / "impl"
    (impl / "task4").mkdir(parents=True)
    (impl / "task4/attention_kernel.cu").write_text("// kernel\n")
    if bonus_file:
        (impl / BONUS_FILE).write_text("// bonus\n")
    monkeypatch.setenv(IMPL_ENV, str(impl))
    built = []

    def fake_load(name, verbose=False):
        if name in fail:
            raise build.BuildError(name, f"error: {name} does not compile")
        built.append(name)

    monkeypatch.setattr(build, "load_extension", fake_load)
    monkeypatch.setattr(build, "prebuild_in_parallel", lambda names: built.append(("parallel", tuple(names))))
    monkeypatch.setattr(build, "write_import_shim", lambda name: None)
    monkeypatch.setattr(build, "target_archs", lambda: "9.0")
    return built


def test_compile_skips_an_absent_bonus_file(monkeypatch, tmp_path, capsys):
    built = _fake_compile(monkeypatch, tmp_path, bonus_file=False)
    assert build.compile_main("task4", []) == 0
    assert built == ["custom_flash_attention"]
    assert "skipped: custom_flash_attention_tc (the optional bonus part)" in capsys.readouterr().out


def test_a_bonus_that_does_not_build_never_fails_the_compile(monkeypatch, tmp_path, capsys):
    built = _fake_compile(monkeypatch, tmp_path, bonus_file=True, fail=("custom_flash_attention_tc",))
    assert build.compile_main("task4", []) == 0
    assert built == [("parallel", ("custom_flash_attention", "custom_flash_attention_tc")), "custom_flash_attention"]
    err = capsys.readouterr().err
    assert "FAILED: custom_flash_attention_tc (bonus) did not build" in err and "the bonus part only" in err
    _fake_compile(monkeypatch, tmp_path / "core", bonus_file=True, fail=("custom_flash_attention",))
    assert build.compile_main("task4", []) == 1  # the task's own extension still fails it


def test_a_bonus_that_hangs_costs_only_the_bonus(tmp_path, monkeypatch):
    """The bonus tests run beside the task's own (the correctness part) or after them (the timed
    part), in runs of their own with their own time limit: when their correctness run hangs (no report), task 4 keeps its 4 points, the bonus
    scores 0 and says why, and the bonus's timed tests are not started. Before, both shared one
    pytest run, and a hang there lost the task's report too."""
    from grader import pipeline
    from grader.builder import BuildResult
    from grader.proc import ProcResult

    rubric = rubric_mod.load()
    tr = rubric.tasks["task4"]
    full = task4_report()
    timed = timed_test_functions(REPO_ROOT / "task4" / "test.py")
    assert {"test_core_speed", "test_causal_skips_key_tiles"} <= timed, timed
    core_tests = [t for t in full.tests if not t["nodeid"].split("::")[-1].startswith("test_bonus_")]
    calls = []

    def fake_run_tests(stage, *, env, timeout_s, logs, only=(), exclude=(), part="", marker=""):
        calls.append(dict(timeout_s=timeout_s, only=set(only), exclude=set(exclude), part=part, marker=marker))
        proc = ProcResult(returncode=0, timed_out=False, seconds=1.0, output_tail="", log_path=str(logs / "x.log"))
        if part.startswith("bonus"):
            hung = ProcResult(returncode=None, timed_out=True, seconds=timeout_s, output_tail="", log_path="b.log")
            return Run(proc=hung, report=None, problem=f"the tests ran longer than {timeout_s:.0f} s (a hang?) "
                                                          "and were stopped")
        is_timed = marker == "perf"
        mine = [t for t in core_tests if (t["nodeid"].split("::")[-1].split("[")[0] in timed) == is_timed]
        return Run(proc=proc, report={"tests": mine}, problem=None)

    monkeypatch.setattr(pipeline, "_can_compile_cuda", lambda: True)
    monkeypatch.setattr(pipeline, "_gpu_available", lambda: True)
    monkeypatch.setattr(pipeline, "build_task", lambda stage, **kw: BuildResult(True, "built", ProcResult(
        0, False, 1.0, "", "build.log")))
    monkeypatch.setattr(pipeline, "run_tests", fake_run_tests)
    result = pipeline.grade_task("task4", REPO_ROOT / "solutions", tmp_path, rubric, seed=1,
                                 progress=pipeline.Progress(True), self_reference=True)
    assert [(c["part"], c["marker"]) for c in calls] == [
        ("checks", "not perf"), ("bonus-checks", "not perf"), ("timed", "perf")], calls
    assert calls[0]["exclude"] == calls[1]["only"] == calls[2]["exclude"] == tr.bonus_tests, calls
    assert not calls[0]["only"] and not calls[2]["only"], calls
    assert calls[0]["timeout_s"] == tr.test_timeout_s and calls[1]["timeout_s"] == tr.bonus_test_timeout_s
    assert any("bonus part's timed tests were not run" in f for f in result["flags"]), result["flags"]
    assert result["points"] == 4 and result["status"] == "graded", (result["status"], result["reason"])
    assert result["bonus_points"] == 0 and result["bonus_tests"]["problem"].startswith("the tests ran longer")
    assert all(b["reason"].startswith("the bonus tests' run: the tests ran longer") for b in result["bonus"]), [
        b["reason"] for b in result["bonus"]]
