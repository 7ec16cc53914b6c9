"""The grader on fixture submissions: every path a real class produces.

Fixtures are made at test time from the kit's stubs and reference solutions,
with one planted behaviour each, so they never drift from the real files.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grader import rubric as rubric_mod
from grader.pipeline import run_grading
from grader.report import validate_gradescope
from harness.device import requires_cuda
from harness.tasks import REPO_ROOT, TASKS, task_names

SOLUTIONS = REPO_ROOT / "solutions"
CPU_TASKS = ["task1", "task3"]
#: Short limit for the hang fixture, so the test does not wait long.
HANG_TIMEOUT_S = 30


def make_submission(root: Path, base: Path, edits: dict[str, str] | None = None) -> Path:
    """A submission folder: the task-1 and task-3 files of ``base`` plus ``edits`` (path -> text)."""
    root.mkdir(parents=True)
    for rel in ("task1/attention.py", "task3/attention.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(base / rel, root / rel)
    shutil.copy(REPO_ROOT / "Results.md", root / "Results.md")
    for rel, text in (edits or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def inject(base: Path, rel: str, marker: str, code: str) -> str:
    """``base/rel`` with ``code`` inserted before the first line containing ``marker``."""
    lines = (base / rel).read_text().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if marker in line)
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    return "".join(lines[:i] + [indent + c + "\n" for c in code.splitlines()] + lines[i:])


def planted_task1(tmp_path: Path, base: Path, marker: str, code: str) -> Path:
    """A submission of ``base``'s files whose task1/attention.py has ``code`` planted before ``marker``."""
    rel = "task1/attention.py"
    return make_submission(tmp_path / "sub", base, {rel: inject(base, rel, marker, code)})


def grade(submission: Path, out: Path, tasks=CPU_TASKS, rubric=None) -> dict:
    return run_grading(submission, tasks, out, rubric or rubric_mod.load(), quiet=True, use_reference=False)


def assert_valid_reports(out: Path) -> dict:
    doc = json.loads((out / "results.json").read_text())
    assert validate_gradescope(doc) == [], validate_gradescope(doc)
    assert (out / "report.md").read_text().startswith("# Grading report")
    json.loads((out / "raw.json").read_text())
    return doc


def test_reference_solution_gets_full_marks(tmp_path):
    results = grade(SOLUTIONS, tmp_path / "out")
    for task in CPU_TASKS:
        r = results["tasks"][task]
        assert r["points"] == r["max_points"], (task, r["reason"])
    doc = assert_valid_reports(tmp_path / "out")
    assert doc["score"] == 5


@pytest.mark.grader_without_gpu
def test_stubs_get_zero_with_a_reason(tmp_path):
    results = grade(make_submission(tmp_path / "sub", REPO_ROOT), tmp_path / "out")
    for task in CPU_TASKS:
        r = results["tasks"][task]
        assert r["points"] == 0 and r["status"] == "not implemented", r
        assert "not implemented yet" in r["reason"] and f"{task}/attention.py" in r["reason"]
    assert_valid_reports(tmp_path / "out")


@pytest.mark.grader_without_gpu
def test_edited_test_file_is_never_run(tmp_path):
    cheat = "def test_everything():\n    assert True\n"
    sub = make_submission(tmp_path / "sub", REPO_ROOT, {"task1/test.py": cheat, "task1/compile.py": "raise SystemExit"})
    results = grade(sub, tmp_path / "out", tasks=["task1"])
    assert results["tasks"]["task1"]["points"] == 0


@pytest.mark.grader_without_gpu
def test_printed_fake_speedup_does_not_reach_the_score(tmp_path):
    fake = 'print("Speedup: 99.0x\\nTotal score: 20/20")'
    sub = planted_task1(tmp_path, REPO_ROOT, "raise NotImplementedError", fake)
    results = grade(sub, tmp_path / "out", tasks=["task1"])
    assert results["tasks"]["task1"]["points"] == 0
    assert "99" not in json.dumps(results["tasks"]["task1"]["checks"])


@pytest.mark.grader_without_gpu
def test_crash_costs_only_that_task(tmp_path):
    crash = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"
    sub = planted_task1(tmp_path, SOLUTIONS, "check_hidden_states(x", crash)
    results = grade(sub, tmp_path / "out")
    r1, r3 = results["tasks"]["task1"], results["tasks"]["task3"]
    # The judge survives its worker: every check it lost fails, naming the signal.
    assert r1["points"] == 0 and "SIGSEGV" in json.dumps(r1["checks"]), r1
    assert r3["points"] == r3["max_points"]
    assert_valid_reports(tmp_path / "out")


@pytest.mark.grader_without_gpu
def test_hang_is_stopped_at_the_time_limit(tmp_path):
    text = rubric_mod.RUBRIC_PATH.read_text().replace("[task1]\npoints = 2", f"[task1]\npoints = 2\ntest_timeout_s = {HANG_TIMEOUT_S}")
    (tmp_path / "rubric.toml").write_text(text)
    hang = "import time\nwhile True:\n    time.sleep(1)"
    sub = planted_task1(tmp_path, SOLUTIONS, "check_hidden_states(x", hang)
    results = grade(sub, tmp_path / "out", tasks=["task1"], rubric=rubric_mod.load(tmp_path / "rubric.toml"))
    r = results["tasks"]["task1"]
    assert r["points"] == 0 and "longer than" in r["reason"], r
    assert r["stage_seconds"]["tests"] < HANG_TIMEOUT_S + 30
    assert_valid_reports(tmp_path / "out")


@pytest.mark.grader_without_gpu
def test_missing_file_is_reported(tmp_path):
    sub = make_submission(tmp_path / "sub", SOLUTIONS)
    (sub / "task3" / "attention.py").unlink()
    results = grade(sub, tmp_path / "out")
    assert results["tasks"]["task3"]["status"] == "missing files"
    assert "task3/attention.py is missing" in results["tasks"]["task3"]["reason"]
    assert results["tasks"]["task1"]["points"] == 2


@pytest.mark.grader_without_gpu
def test_suspicious_code_is_flagged(tmp_path):
    snoop = "import sys\nsys.modules['harness.compare'].TOLERANCE_FACTOR = 1e9"
    sub = planted_task1(tmp_path, SOLUTIONS, "class CustomSelfAttention", snoop)
    results = grade(sub, tmp_path / "out", tasks=["task1"])
    assert any("flagged for review" in f for f in results["tasks"]["task1"]["flags"])


needs_nvcc = pytest.mark.skipif(torch.version.cuda is None or shutil.which("nvcc") is None,
                                reason="needs nvcc and a CUDA build of PyTorch")


@needs_nvcc
def test_compile_error_is_reported_with_the_compiler_message(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_KIT_CUDA_ARCH", "9.0")  # one architecture keeps it quick
    broken = (REPO_ROOT / "task2" / "attention_kernel.cu").read_text() + "\nthis is not C++;\n"
    sub = make_submission(tmp_path / "sub", SOLUTIONS, {"task2/attention_kernel.cu": broken})
    results = grade(sub, tmp_path / "out", tasks=["task2"])
    r = results["tasks"]["task2"]
    assert r["status"] == "build failed" and r["points"] == 0
    assert "error" in r["build"]["log_tail"].lower() and "attention_kernel.cu" in r["build"]["log_tail"]
    doc = assert_valid_reports(tmp_path / "out")
    assert "Compiler output" in doc["tests"][0]["output"]


@pytest.mark.grader_without_gpu
def test_results_written_even_when_the_grader_fails(tmp_path, monkeypatch):
    import grader.pipeline as pipeline

    def boom(*args, **kwargs):
        raise RuntimeError("planted grader failure")

    monkeypatch.setattr(pipeline, "check_results_md", boom)
    with pytest.raises(RuntimeError):
        grade(make_submission(tmp_path / "sub", SOLUTIONS), tmp_path / "out", tasks=["task1"])
    doc = assert_valid_reports(tmp_path / "out")
    assert "planted grader failure" in doc["output"]
    assert doc["score"] == 2  # what it had is kept


@pytest.mark.grader_without_gpu
def test_cli_exit_codes(tmp_path):
    run = [sys.executable, "-m", "grader"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_")}
    missing = subprocess.run(run + ["run", "--submission", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert missing.returncode == 3 and "does not exist" in missing.stderr
    bad = subprocess.run(run + ["run", "--tasks", "9"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    ok = subprocess.run(run + ["run", "--submission", str(SOLUTIONS), "--tasks", "1", "--out", str(tmp_path / "o"),
                               "--no-reference"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "task1  2" in ok.stdout and "total 2 / 2" in ok.stdout


@requires_cuda
@pytest.mark.gpu
@pytest.mark.proof
def test_every_gpu_task_on_a_gpu(tmp_path, record):
    """On a GPU: the reference solution gets full marks in every GPU task, the untouched stubs zero.

    This is the grader's whole job over the CUDA tasks, end to end (build, tests,
    scoring, reports); its wall time is recorded.
    """
    gpu_tasks = [t for t in task_names() if TASKS[t].needs_gpu]
    rubric = rubric_mod.load()
    ref = run_grading(SOLUTIONS, gpu_tasks, tmp_path / "ref", rubric, quiet=True)
    assert_valid_reports(tmp_path / "ref")
    stubs = run_grading(REPO_ROOT, gpu_tasks, tmp_path / "stubs", rubric, quiet=True, use_reference=False)
    assert_valid_reports(tmp_path / "stubs")
    record("gpu_grading", reference_seconds=ref["execution_time"], stub_seconds=stubs["execution_time"],
           reference_points={t: ref["tasks"][t]["points"] for t in gpu_tasks},
           display=f"grader over the GPU tasks {', '.join(gpu_tasks)}: reference solution "
           f"{sum(ref['tasks'][t]['points'] for t in gpu_tasks)}/{sum(ref['tasks'][t]['max_points'] for t in gpu_tasks)} "
           f"in {ref['execution_time']:.0f} s, stubs {sum(stubs['tasks'][t]['points'] for t in gpu_tasks)} "
           f"in {stubs['execution_time']:.0f} s")
    for task in gpu_tasks:
        r = ref["tasks"][task]
        assert r["points"] == r["max_points"], (task, r["status"], r["reason"])
        s = stubs["tasks"][task]
        assert s["points"] == 0, (task, s["status"], s["reason"])
        assert s["reason"], (task, "a zero needs a reason")


@pytest.mark.grader_without_gpu
def test_the_published_layout_is_mapped(tmp_path, monkeypatch):
    """A submission in the original assignment's layout (kernels in taskN/cuda/) is staged as the
    same files in ours, and the result says the layout was mapped."""
    from grader.stage import stage_task

    sub = tmp_path / "published"
    for task in ("task2", "task4", "task5"):
        (sub / task / "cuda").mkdir(parents=True)
        shutil.copy(REPO_ROOT / "solutions" / task / "attention_kernel.cu", sub / task / "cuda" / "attention_kernel.cu")
    stage = stage_task("task5", sub, tmp_path / "work")
    assert stage.missing == [], stage.missing
    assert stage.mapped == {f"{t}/attention_kernel.cu": f"{t}/cuda/attention_kernel.cu" for t in ("task2", "task4", "task5")}
    staged = stage.submission / "task5" / "attention_kernel.cu"
    assert staged.read_bytes() == (REPO_ROOT / "solutions" / "task5" / "attention_kernel.cu").read_bytes()
    from grader import pipeline

    monkeypatch.setattr(pipeline, "_can_compile_cuda", lambda: False)  # the note comes before the build
    results = run_grading(sub, ["task2"], tmp_path / "out", rubric_mod.load(), quiet=True, use_reference=False)
    assert any("layout was mapped: task2/cuda/attention_kernel.cu" in n for n in results["tasks"]["task2"]["notes"])


@pytest.mark.grader_without_gpu
def test_a_published_layout_submission_scores_as_ours(tmp_path):
    """The same files, once in our layout with our Results.md and once as a student of the
    original assignment hands them in (task 4's kernel in task4/cuda/, a Results.md in its
    style), get the same points for tasks 1 and 3, with no flag about either file."""
    from tests.test_results_md import PUBLISHED_STYLE

    ours = make_submission(tmp_path / "ours", SOLUTIONS)
    published = make_submission(tmp_path / "published", SOLUTIONS, {"Results.md": PUBLISHED_STYLE})
    (published / "task4" / "cuda").mkdir(parents=True)
    shutil.copy(SOLUTIONS / "task4" / "attention_kernel.cu", published / "task4" / "cuda" / "attention_kernel.cu")
    a, b = grade(ours, tmp_path / "out-ours"), grade(published, tmp_path / "out-published")
    for task in CPU_TASKS:
        assert a["tasks"][task]["points"] == b["tasks"][task]["points"] == a["tasks"][task]["max_points"], (
            task, a["tasks"][task]["reason"], b["tasks"][task]["reason"])
    assert not [f for f in b["flags"] if "Results.md" in f], b["flags"]
    assert_valid_reports(tmp_path / "out-published")


@pytest.mark.grader_without_gpu
def test_only_the_named_tests_run(tmp_path):
    """grade_task(only=...) runs just the named test functions (here a CPU stand-in for a timed test)."""
    from grader.pipeline import Progress, grade_task

    result = grade_task("task1", SOLUTIONS, tmp_path, rubric_mod.load(), seed=1, progress=Progress(True),
                        label="reference/", only=("test_large_scores",))
    assert set(result["tests"]["duration_by_test"]) == {"test_large_scores"}, result["tests"]


class _FakeGrading:
    """A stand-in for pipeline.TaskGrading that sleeps through its stages and logs when each ran."""

    events: list = []  # (task, stage, start, end)
    made: list = []  # (task, label, yardstick, self_reference)

    def __init__(self, task, submission, out, rubric, seed, progress, label="", self_reference=False, only=(),
                 yardstick=False):
        from harness.tasks import TASKS

        from grader.pipeline import has_timed_tests

        self.task, self.yardstick, self.builds = task, yardstick, bool(TASKS[task].extensions)
        self.timed = has_timed_tests(task)
        self.made.append((task, label, yardstick, self_reference))
        self.result = dict(task=task, points=0.0, max_points=rubric.tasks[task].points, status="skipped",
                           reason="", flags=[], checks=[], speedups=[])

    def _stage(self, name, seconds):
        start = time.perf_counter()
        time.sleep(seconds)
        self.events.append((self.task, name, start, time.perf_counter()))

    def prepare(self):
        self._stage("prepare", 0.4 if self.builds else 0.0)

    def check(self):
        self._stage("check", 0.1)

    def time(self):
        self._stage("time", 0.05)

    def finish(self, references=None):
        self._stage("finish", 0.0)
        return self.result


@pytest.fixture
def fake_gradings(monkeypatch):
    """pipeline.run_grading with _FakeGrading for every task and a reference build that logs itself."""
    from grader import pipeline

    _FakeGrading.events, _FakeGrading.made = [], []
    references = []

    def fake_build_reference(tasks, out, seed, rubric, progress):
        start = time.perf_counter()
        time.sleep(0.3)
        references.append(list(tasks))
        _FakeGrading.events.append(("reference", "prepare", start, time.perf_counter()))
        return dict(ok=True)

    monkeypatch.setattr(pipeline, "TaskGrading", _FakeGrading)
    monkeypatch.setattr(pipeline, "build_reference", fake_build_reference)
    return pipeline, _FakeGrading, references


def test_a_students_timed_tasks_time_the_reference_beside_it(tmp_path, fake_gradings):
    """run_grading never grades the reference solution separately: each task with a scored speedup
    is graded once, with the yardstick (the reference timed beside it in its own worker, see
    harness.yardstick), whose builds are made once for the run; tasks without one, and the
    reference graded as itself, get none."""
    pipeline, fake, references = fake_gradings
    sub = tmp_path / "sub"
    sub.mkdir()
    pipeline.run_grading(sub, ["task1", "task4", "task5"], tmp_path / "out", rubric_mod.load(), quiet=True)
    assert fake.made == [("task1", "", False, False), ("task4", "", True, False), ("task5", "", True, False)]
    assert references == [["task4", "task5"]]
    fake.made.clear()
    references.clear()
    pipeline.run_grading(SOLUTIONS, ["task4"], tmp_path / "out2", rubric_mod.load(), quiet=True)
    assert fake.made == [("task4", "", False, True)]
    assert references == []


def test_builds_and_checks_overlap_and_timed_tests_run_alone_in_task_order(tmp_path, fake_gradings):
    """rubric overlap_stages: every build (the reference's too) starts at once and each task's
    correctness tests follow its build; no timed test starts before all of them have ended, and the
    timed tests run one at a time, in task order. With overlap_stages = false: one task after another."""
    import dataclasses

    pipeline, fake, _ = fake_gradings
    sub = tmp_path / "sub"
    sub.mkdir()
    tasks = ["task1", "task2", "task4", "task5"]
    results = pipeline.run_grading(sub, tasks, tmp_path / "out", rubric_mod.load(), quiet=True)
    assert list(results["tasks"]) == tasks
    events = fake.events
    early = [e for e in events if e[1] in ("prepare", "check")]
    timed = [e for e in events if e[1] == "time"]
    builds = [e for e in early if e[1] == "prepare" and e[0] in ("task2", "task4", "task5", "reference")]
    assert max(e[2] for e in builds) < min(e[3] for e in builds), "the builds did not run at once"
    assert min(e[2] for e in timed) >= max(e[3] for e in early), "a timed test started beside a build or check"
    assert [e[0] for e in timed] == tasks, "the timed tests ran out of task order"
    for a, b in zip(timed, timed[1:]):
        assert b[2] >= a[3], f"{a[0]}'s and {b[0]}'s timed tests overlapped"
    fake.events.clear()
    serial = dataclasses.replace(rubric_mod.load(), overlap_stages=False)
    pipeline.run_grading(sub, tasks, tmp_path / "out2", serial, quiet=True)
    stages = [(e[0], e[1]) for e in fake.events if e[0] != "reference"]
    assert stages == [(t, s) for t in tasks for s in ("prepare", "check", "time", "finish")], stages
    for a, b in zip(fake.events, fake.events[1:]):
        assert b[2] >= a[3], f"{a[:2]} and {b[:2]} overlapped with overlap_stages = false"


@pytest.mark.grader_without_gpu
def test_a_machinery_test_hides_the_gpu_from_the_grader_processes(tmp_path):
    """tests/conftest.py's marker reaches the environment the grader gives its judge and worker
    (on a GPU node that is what keeps these gradings at their CI cost)."""
    from grader.pipeline import child_env

    assert child_env(seed=1, build_cache=tmp_path)["CUDA_VISIBLE_DEVICES"] == ""


def test_a_submissions_tasks_share_one_build_folder_of_their_own(tmp_path, monkeypatch):
    """Tasks 4 to 7 build the same kernels: one submission's tasks build into one scratch folder of
    that submission (content-addressed, so the first build serves the others), never the node's
    shared cache, and never another submission's folder."""
    from grader import pipeline
    from grader.builder import BuildResult
    from grader.proc import ProcResult
    from harness.spawn import WORKER_BUILD_ENV

    seen = {}

    def fake_build(stage, *, env, timeout_s, logs):
        seen[(stage.task, str(tmp_path / "out" / "work"))] = env[WORKER_BUILD_ENV]
        return BuildResult(True, "built", ProcResult(0, False, 0.1, "", "build.log"))

    monkeypatch.setattr(pipeline, "_can_compile_cuda", lambda: True)
    monkeypatch.setattr(pipeline, "_gpu_available", lambda: False)
    monkeypatch.setattr(pipeline, "build_task", fake_build)
    rubric = rubric_mod.load()
    folders = {}
    for label in ("", "other/"):
        for task in ("task4", "task5"):
            grading = pipeline.TaskGrading(task, SOLUTIONS, tmp_path / "out", rubric, 1, pipeline.Progress(True),
                                           label=label)
            grading.prepare()
            folders[label, task] = seen.pop((task, str(tmp_path / "out" / "work")))
    assert folders["", "task4"] == folders["", "task5"] != folders["other/", "task4"], folders
    assert folders["other/", "task4"] == folders["other/", "task5"], folders
    assert all(str(tmp_path / "out" / "work") in f for f in folders.values()), folders
