"""Hostile task-4 kernels on a GPU: no trick raises a speedup, and each says what it tried.

Each fixture is the reference kernel (``solutions/task4/attention_kernel.cu``) with one small,
commented change (marked ``ADVERSARIAL FIXTURE``) that a student who wants the speed points
without the speed could make:

* **side stream**: the work runs on a non-blocking CUDA stream of its own that PyTorch's
  current stream never waits for, so the CUDA events around a timed call miss it;
* **timer patched from the student's file**: at import, Python code run from C++ rewrites
  ``harness.timing._Runner.run_once`` in the worker, so the kernel's timed repetitions read
  4x shorter;
* **ATen does the work**: the host code computes attention with ``at::matmul`` and
  ``at::softmax`` and launches no kernel;
* **answer cached by input pointer**: a call whose inputs sit at addresses seen before
  returns the output remembered for them, computing nothing.

The side stream and the cache act only on the timed configurations (B 4 or 64, hidden 4096,
32 heads, as ``task4/test.py`` publishes them), so every correctness check sees the honest
kernel and only the timing checks can catch them; the timer patch acts only on timings.

The GPU proof grades every fixture the way a class run grades a student (``run_grading`` with
the reference solution timed beside it, harness.yardstick, so the implausible-speedup check is
live) and checks, for each: task 4's speed points are 0 with a reason naming what happened, its
correctness points are at most the honest ones, results.json is valid, the source scan flagged
what it should, and the kit's files are unchanged. Each grading runs in a process of its own, all
at once, so the builds overlap; their test stages take the GPU one at a time (see
:data:`TEST_STAGES_AT_ONCE`). ``ATTN_ADVERSARIAL_FIXTURES`` (a comma-separated list of the
fixtures' slugs, e.g. ``side-stream,aten-does-the-work``) grades only those.

Run it on a GPU node: ``pytest -m proof tests/test_adversarial_cuda.py -rs``. The CPU tests
(the fixtures' sources, the source scan over the kit) run in any ``pytest``.
"""
from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import os
import re
import secrets
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from grader.pipeline import CONTAINMENT, _can_compile_cuda
from grader.report import validate_gradescope
from grader.source_scan import scan_file
from harness.tasks import REPO_ROOT, TASKS

SOLUTIONS = REPO_ROOT / "solutions"
KERNEL = "task4/attention_kernel.cu"
REFERENCE_KERNEL = SOLUTIONS / KERNEL
MARK = "ADVERSARIAL FIXTURE"
CONTAINED = CONTAINMENT.startswith("landlock")

#: Test stages (the judge's pytest run) of the fixtures that may use the GPU at once. One task-4 test
#: stage needs 100 GB or more of GPU memory at its peak on B=64, S=4096 (the submission's worker
#: ~45 GB, the reference's worker timed beside it as much, the judge's own copies of the inputs and
#: its float64 re-check), so two would not fit on an H200 (141 GB), and an out-of-memory failure
#: would cost the speed points for the wrong reason. The builds (the other long part) all overlap.
TEST_STAGES_AT_ONCE = 1
#: Where the kit's own builds go while the fixtures are graded, unless ATTN_KIT_BUILD_DIR says:
#: the repository's build folder, warm when the suite ran first on this machine.
SHARED_BUILD_CACHE = REPO_ROOT / "build"
#: Grade only these fixtures (comma-separated slugs); unset: all of them.
FIXTURES_ENV = "ATTN_ADVERSARIAL_FIXTURES"

#: Only on the configurations task4/test.py times (B 4 or 64, hidden 4096, 32 heads): no
#: correctness case has that shape (its (1, 4096, 32, 128) case has B=1), so those see the
#: honest kernel.
TIMED_CONFIG = ("  const bool timed_config =\n"
                "      (q.size(0) == 4 || q.size(0) == 64) && q.size(2) == 4096 && num_heads == 32;\n")


def _once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the reference kernel changed: {old!r} is not there exactly once"
    return text.replace(old, new)


GUARD = "  const c10::cuda::CUDAGuard guard(q.device());\n"
EMPTY = "  if (q.numel() == 0) return torch::empty_like(q);\n"
MERGE = "  return merge_heads(oh, B, num_heads, head_dim);\n"
BINDING_END = 'py::arg("num_heads"), py::arg("causal") = false);\n}\n'
INCLUDE = "#include <string>\n"


def side_stream(ref: str) -> str:
    """The host code moves to a non-blocking stream of its own (created once) on the timed
    configurations: it waits for the caller's stream, which never waits for it."""
    code = GUARD + textwrap.indent(textwrap.dedent(f"""\
        // {MARK} (side stream): on the timed configurations only, everything below (the layout
        // copies, the kernel, the copy back) runs on a non-blocking CUDA stream of its own, created
        // once. It waits for the caller's stream, so its inputs are ready, but the caller's stream
        // never waits for it: CUDA events recorded on PyTorch's current stream around this call
        // miss the work, and the output may still be being written when the call returns.
        """), "  ") + TIMED_CONFIG + textwrap.indent(textwrap.dedent("""\
        static cudaStream_t side = nullptr;
        static cudaEvent_t inputs_ready = nullptr;
        if (side == nullptr) {
          C10_CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
          C10_CUDA_CHECK(cudaEventCreateWithFlags(&inputs_ready, cudaEventDisableTiming));
        }
        std::optional<c10::cuda::CUDAStreamGuard> on_side_stream;
        if (timed_config) {
          C10_CUDA_CHECK(cudaEventRecord(inputs_ready, c10::cuda::getCurrentCUDAStream()));
          C10_CUDA_CHECK(cudaStreamWaitEvent(side, inputs_ready, 0));
          on_side_stream.emplace(c10::cuda::getStreamFromExternal(side, q.device().index()));
        }
        """), "  ")
    return _once(_once(ref, GUARD, code), INCLUDE, INCLUDE + "#include <optional>  // " + MARK + "\n")


#: The Python the timer fixture runs in the worker when its extension is imported: every timed
#: repetition of a function that is (or wraps) the kernel reads 4x shorter, on either clock (its
#: CUDA start event is wrapped; a wall-clock sample is divided).
TIMER_PATCH = '''
import harness.timing as _timing

_run_once = _timing._Runner.run_once


class _Quarter:
    """A start event whose elapsed time to the end event reads 4x shorter."""

    def __init__(self, event):
        self.event = event

    def elapsed_time(self, end):
        return self.event.elapsed_time(end) / 4


def _is_kernel(fn):
    if fn is kernel:
        return True
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            if cell.cell_contents is kernel:
                return True
        except ValueError:  # an empty cell
            pass
    return False


def _run_once_shorter(self):
    out = _run_once(self)
    if _is_kernel(self.fn):
        if self.cuda:
            start, end = self.pending[-1]
            self.pending[-1] = (_Quarter(start), end)
        else:
            self.samples[-1] /= 4
    return out


_timing._Runner.run_once = _run_once_shorter
'''


def timer_patched(ref: str) -> str:
    """At import, Python run from C++ rewrites the kit's timer in the worker."""
    code = 'py::arg("num_heads"), py::arg("causal") = false);\n' + textwrap.indent(textwrap.dedent(f"""\
        // {MARK} (timer patched from the student's file): when the worker imports this
        // extension, Python code run from here rewrites harness.timing._Runner.run_once (the
        // kit's timer), so that every timed repetition of a function that is (or wraps) this
        // kernel reads 4x shorter: the speedup the worker reports is 4x the kernel's.
        py::dict scope;
        scope["__builtins__"] = py::module_::import("builtins");
        scope["kernel"] = m.attr("custom_flash_attention");
        """), "  ") + f'  py::exec(R"PY({TIMER_PATCH})PY", scope);\n}}\n'
    return _once(_once(ref, BINDING_END, code), INCLUDE, INCLUDE + "#include <pybind11/eval.h>  // " + MARK + "\n")


def aten_does_the_work(ref: str) -> str:
    """No kernel launch: ATen's matmul and softmax compute the attention."""
    start, end = ref.index("  switch (D) {\n"), ref.index(MERGE)
    code = textwrap.indent(textwrap.dedent(f"""\
        // {MARK} (ATen does the work): no kernel is launched; ATen's matmul and softmax compute
        // the attention on the padded [B*heads, S, D] layout (the zero columns change no dot
        // product). The rules forbid PyTorch's matrix products, softmax and attention in the host
        // code that does the work: the tests' operator recorder sees them.
        (void)scale_log2;
        torch::Tensor scores = at::matmul(qh, kh.transpose(1, 2)) * (1.0 / std::sqrt(double(head_dim)));
        if (causal) {{
          const int64_t S = q.size(1);
          scores.masked_fill_(torch::ones({{S, S}}, q.options().dtype(torch::kBool)).triu(1), -INFINITY);
        }}
        oh = at::matmul(at::softmax(scores, -1), vh);
        """), "  ")
    return ref[:start] + code + ref[end:]


def cached_by_pointer(ref: str) -> str:
    """On the timed configurations, an output is remembered by its inputs' addresses."""
    lookup = EMPTY + textwrap.indent(textwrap.dedent(f"""\
        // {MARK} (answer cached by input pointer): on the timed configurations only, the output
        // is remembered by the inputs' addresses, and a later call with inputs at the same
        // addresses returns it without computing anything. The first values of q, k and v are
        // compared too (one tiny copy), so freed and reused memory holding other inputs is not
        // mistaken for the remembered ones. (Never freed: no destructor runs at exit.)
        """), "  ") + TIMED_CONFIG + textwrap.indent(textwrap.dedent("""\
        using Key = std::tuple<const void*, const void*, const void*, int64_t, int64_t, bool>;
        static auto* cache = new std::map<Key, std::pair<torch::Tensor, torch::Tensor>>();  // probe, output
        const Key key{q.data_ptr(), k.data_ptr(), v.data_ptr(), q.size(0), q.size(1), causal};
        torch::Tensor probe;
        if (timed_config) {
          probe = torch::cat({q.view(-1).narrow(0, 0, 8), k.view(-1).narrow(0, 0, 8), v.view(-1).narrow(0, 0, 8)});
          const auto hit = cache->find(key);
          if (hit != cache->end() && torch::equal(hit->second.first, probe)) return hit->second.second;
        }
        """), "  ")
    store = textwrap.indent(textwrap.dedent(f"""\
        torch::Tensor out = merge_heads(oh, B, num_heads, head_dim);
        if (timed_config) (*cache)[key] = {{probe, out}};  // {MARK}: remembered
        return out;
        """), "  ")
    text = _once(_once(ref, EMPTY, lookup), MERGE, store)
    return _once(text, INCLUDE, INCLUDE + "#include <map>  // " + MARK + "\n#include <tuple>\n#include <utility>\n")


#: Distrust texts of harness/timing.py: the judge's clocks did not believe the worker's numbers.
DISTRUST = ("unaccounted for", "tampered with", "slowed the baseline or rewrote the timer")
#: An implausible speedup held (grader/scoring.py, pay_implausible_before_review = false).
IMPLAUSIBLE_HOLD = "held for review (rubric: pay_implausible_before_review = false)"
#: A kept timed output was wrong (task4/test.py's check of random timed repetitions).
TIMED_OUTPUT_WRONG = "timed output (a timed repetition drawn at random"
#: The operator recorder (harness/op_recorder.py).
OP_RECORDER = "called PyTorch's"
#: The source scan's messages (grader/source_scan.py).
SCAN_STREAM = "uses a CUDA stream of its own"
SCAN_PYTHON = "runs Python code from C++"
SCAN_IMPORT = "imports Python modules from C++"


@dataclass(frozen=True)
class Fixture:
    make: Callable[[str], str]
    #: The speed result's reason must contain one of these (what caught the trick).
    caught_by: tuple[str, ...]
    #: The source scan's messages expected among the task's flags (and no other scan flag).
    scan: tuple[str, ...] = ()
    #: Every correctness case runs the honest kernel, so the correctness points are full.
    honest_correctness: bool = True
    #: Where the correctness points are partial: a message the failing checks must carry.
    check_message: str = ""


FIXTURES = {
    # The kept timed outputs are copied on the current stream right after the repetition: the side
    # stream has not written them yet (a stale answer from an earlier repetition on the same input
    # set can pass, on the large configurations); then the judge's clock (work unaccounted for), its
    # own baseline timing (the side work slowed the worker's baseline) or the implausible speedup.
    "side stream": Fixture(side_stream, (TIMED_OUTPUT_WRONG, *DISTRUST, IMPLAUSIBLE_HOLD), scan=(SCAN_STREAM,)),
    # 4x the reference's own speedup is above implausible_factor (3x); on B=64, S=4096 the judge's
    # clock may also see the missing time (it is near its allowance there).
    "timer patched from the student's file": Fixture(timer_patched, (IMPLAUSIBLE_HOLD, *DISTRUST),
                                                     scan=(SCAN_PYTHON, SCAN_IMPORT)),
    # Every core check fails naming the operators; the module checks (no recorder) pass; the timed
    # test's own recorder check fails first.
    "ATen does the work": Fixture(aten_does_the_work, (OP_RECORDER,), honest_correctness=False,
                                  check_message=OP_RECORDER),
    # Nothing is computed while timed: the speedup is thousands of times the reference's. Without the
    # reference timed beside it (an absolute basis) it would earn full speed points: the yardstick is
    # what holds it.
    "answer cached by input pointer": Fixture(cached_by_pointer, (IMPLAUSIBLE_HOLD, *DISTRUST)),
}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def kit_fingerprint() -> str:
    digest = hashlib.sha256()
    for top in ("harness", "grader", "solutions", "task4"):
        for path in sorted((REPO_ROOT / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO_ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()


def submission(root: Path, kernel_source: str) -> Path:
    (root / "task4").mkdir(parents=True)
    (root / KERNEL).write_text(kernel_source)
    (root / "Results.md").write_bytes((REPO_ROOT / "Results.md").read_bytes())
    return root


def scan_messages(flags: list[str]) -> list[str]:
    """The source scan's flags on the task's kernel file, among a result's flags."""
    return [f for f in flags if f.startswith(f"{KERNEL}:") and f.endswith("flagged for review")]


# ---------------------------------------------------------------- CPU: the fixtures and the scan

@pytest.mark.parametrize("name", list(FIXTURES))
def test_fixture_source_is_the_reference_with_one_marked_change(name, tmp_path):
    """Each fixture is produced, carries its marked comment, changes only the host side of the
    reference (the kernel itself stays the reference's), and trips exactly the expected flags."""
    ref = REFERENCE_KERNEL.read_text()
    fixture = FIXTURES[name]
    text = fixture.make(ref)
    assert text != ref and MARK in text
    host = ref.index("// Host side")
    kernel = ref[ref.index("template <int D, int BR, int BC, int THREADS, int TM, bool PREFETCH_K>\n__global__"):host]
    assert kernel in text, "the fixture changed the kernel itself"
    ref_lines, lines = ref.splitlines(), text.splitlines()
    first_host_line = ref[:host].count("\n")
    changed = [op for op in difflib.SequenceMatcher(a=ref_lines, b=lines, autojunk=False).get_opcodes()
               if op[0] != "equal"]
    assert changed, "no change"
    for tag, i1, i2, j1, j2 in changed:
        added = lines[j1:j2]
        if i1 < first_host_line:  # only #include lines may be added above the host side
            assert tag == "insert" and all(a.startswith("#include") for a in added), (tag, added)
    assert any(MARK in line for op in changed for line in lines[op[3]:op[4]]), "the change is not commented"
    (tmp_path / "task4").mkdir()
    (tmp_path / KERNEL).write_text(text)
    flags = scan_file(tmp_path / KERNEL, KERNEL)
    for expected in fixture.scan:
        assert any(expected in f for f in flags), (expected, flags)
    assert len(flags) == len(fixture.scan), flags


def test_kit_sources_raise_no_scan_flags():
    """The reference solutions and the stubs contain nothing the source scan flags."""
    for task in TASKS.values():
        for rel in task.editable:
            for root in (SOLUTIONS, REPO_ROOT):
                if (root / rel).is_file():
                    assert scan_file(root / rel, rel) == [], (root / rel, scan_file(root / rel, rel))


@pytest.mark.parametrize("line, expected", [
    ('py::exec("import harness.timing");', SCAN_PYTHON),
    ("auto r = py::eval(\"1\");", SCAN_PYTHON),
    ('PyRun_SimpleString("x = 1");', SCAN_PYTHON),
    ("cudaStream_t s; cudaStreamCreate(&s);", SCAN_STREAM),
    ("cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);", SCAN_STREAM),
    ("auto s = at::cuda::getStreamFromPool();", SCAN_STREAM),
    ("kernel<<<1, 1, 0, cudaStreamPerThread>>>();", SCAN_STREAM),
])
def test_scan_flags_python_and_streams_in_a_kernel_file(line, expected, tmp_path):
    path = tmp_path / "attention_kernel.cu"
    path.write_text(f"// a kernel file\n{line}\n")
    flags = scan_file(path, KERNEL)
    assert len(flags) == 1 and expected in flags[0] and flags[0].startswith(f"{KERNEL}:2 "), flags


def test_the_timer_patch_would_raise_the_speedup(monkeypatch):
    """The timer fixture's Python, run here on the wall clock, makes the kit's compare_speed report
    about 4x the honest speedup of a function against an equal one: a patch that really would pay,
    if nothing in the judge caught it (the GPU proof shows that something does)."""
    from harness import timing

    monkeypatch.setattr(timing._Runner, "run_once", timing._Runner.run_once)  # restored afterwards

    def kernel(x):
        time.sleep(0.002)

    def baseline(x):
        time.sleep(0.002)

    options = dict(warmup=1, min_reps=15, max_reps=15, budget_s=0.01)
    honest = timing.compare_speed(timing.bind_tail(kernel), baseline, [(0,)], **options)
    exec(compile(TIMER_PATCH, "timer fixture", "exec"), {"kernel": kernel})
    patched = timing.compare_speed(timing.bind_tail(kernel), baseline, [(0,)], **options)
    assert honest.speedup < 1.5 and patched.speedup > 3, (honest.summary(), patched.summary())
    assert patched.baseline.median_ms > 1.5, patched.summary()  # the baseline reads what it took


# ---------------------------------------------------------------- GPU: every fixture graded

def _test_stages_take_turns(pipeline, lock_path: Path) -> None:
    """In a grading process: its test stage waits for its turn on the GPU (flocks on files shared
    by the grading processes, :data:`TEST_STAGES_AT_ONCE` of them)."""
    run_tests = pipeline.run_tests

    def run_tests_in_turn(*args, **kwargs):
        while True:
            for slot in range(TEST_STAGES_AT_ONCE):
                with open(f"{lock_path}.{slot}", "a") as handle:  # closing it releases the lock
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if TEST_STAGES_AT_ONCE > 1 else 0))
                    except BlockingIOError:
                        continue
                    return run_tests(*args, **kwargs)
            time.sleep(1)

    pipeline.run_tests = run_tests_in_turn


def _grade_fixture(sub: Path, out: Path, seed: int, lock_path: Path) -> dict:
    """In its own process (each is the subreaper of its own tree, so no grading ends another's
    processes): ``run_grading`` of task 4 as a class run does it, the reference timed beside it."""
    from grader import pipeline
    from grader import rubric as rubric_mod

    # The kit's own builds (the reference timed beside each fixture) go to one shared cache, as on
    # a class's node: built once (or found warm from the suite), not once per fixture. The
    # fixtures' own builds stay in their scratch, as every submission's do.
    os.environ.setdefault("ATTN_KIT_BUILD_DIR", str(SHARED_BUILD_CACHE))
    _test_stages_take_turns(pipeline, lock_path)
    pipeline.run_grading(sub, ["task4"], out, rubric_mod.load(), quiet=True, use_reference=True, seed=seed)
    return json.loads((out / "raw.json").read_text())


def _gpu_problem() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU; none is visible on this machine"
    if not _can_compile_cuda():
        return "needs nvcc and a CUDA build of PyTorch"
    if not CONTAINED:
        return f"the machine offers no containment ({CONTAINMENT})"
    return None


def _module_cases() -> int:
    """Correctness cases of task 4's module check (no operator recorder there)."""
    from task4 import test as task4_test

    return 2 * 2 * len(task4_test.MODULE_SHAPES)  # causal or not, against float64 and nn.MultiheadAttention


def _check(name: str, fixture: Fixture, raw: dict, out: Path) -> list[str]:
    """What is wrong with one fixture's grading (empty: it scored as it should)."""
    problems = []
    t4 = raw["tasks"]["task4"]
    say = lambda text: problems.append(f"{name}: {text}")  # noqa: E731
    if t4.get("status") in ("build failed", "error", "skipped", "missing files", "crashed"):
        return [f"{name}: not graded ({t4.get('status')}: {t4.get('reason')})"]
    checks, speed = t4["checks"], t4["speedups"][0]
    # What it earned, whether paid or held (rubric: pay_flagged_before_review = false holds a task
    # the source scan flagged, keeping its points in held_points).
    held = t4.get("status") == "held for review"
    correct = sum(c.get("held_points", c["points"]) for c in checks)
    if speed.get("held_points", speed["points"]) != 0:
        say(f"earned {speed.get('held_points', speed['points'])} speed points ({speed['reason']})")
    if not any(why in speed["reason"] for why in fixture.caught_by):
        say(f"the speed reason names none of {fixture.caught_by}: {speed['reason'][:600]}")
    if IMPLAUSIBLE_HOLD in speed["reason"] and not any("implausible speedup" in f for f in t4["flags"]):
        say(f"held as implausible without the flag: {t4['flags']}")
    if fixture.honest_correctness:
        if correct != sum(c["max_points"] for c in checks):
            say(f"correctness {correct}: every correctness case runs the honest kernel ({t4['reason']})")
    else:
        check = checks[0]
        bound = check["max_points"] * _module_cases() / max(check["ran"], 1)
        if check["passed"] > _module_cases() or correct > bound + 1e-6:
            say(f"correctness {correct} ({check['passed']}/{check['ran']}) is above the honest {bound:.3g}")
        if not any(fixture.check_message in m for m in check["messages"]):
            say(f"no check message names {fixture.check_message!r}: {check['messages'][:2]}")
    if abs(t4["points"] - (0.0 if held else correct)) > 1e-9:
        say(f"task points {t4['points']} != correctness {correct}" + (" (held: 0)" if held else ""))
    scan = scan_messages(t4["flags"])
    for expected in fixture.scan:
        if not any(expected in f for f in scan):
            say(f"no source-scan flag {expected!r} among {t4['flags']}")
    if len(scan) != len(fixture.scan):
        say(f"unexpected source-scan flags: {scan}")
    if not str(t4.get("containment", "")).startswith("landlock"):
        say(f"the worker was not contained: {t4.get('containment')}")
    if IMPLAUSIBLE_HOLD in speed["reason"] and not t4.get("reference_speedups"):
        say("held as implausible, but no reference speedup was recorded")
    try:
        doc = json.loads((out / "results.json").read_text())
        bad = validate_gradescope(doc)
        if bad or abs(doc["score"] - t4["points"]) > 1e-9:
            say(f"results.json: {bad or doc['score']}")
    except (OSError, ValueError, KeyError) as exc:
        say(f"results.json does not read: {exc!r}")
    return problems


@pytest.mark.proof
@pytest.mark.gpu
def test_hostile_kernels_earn_no_speed_points(tmp_path, record):
    """On a GPU: every fixture is graded as a class run grades a student, all at once, and none
    earns a speed point; each says what caught it (see FIXTURES for what to expect)."""
    why_not = _gpu_problem()
    if why_not:
        pytest.skip(why_not)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chosen = [n for n in FIXTURES if not os.environ.get(FIXTURES_ENV)
              or _slug(n) in os.environ[FIXTURES_ENV].split(",")]
    if not chosen:
        pytest.skip(f"{FIXTURES_ENV}={os.environ[FIXTURES_ENV]} names none of {[_slug(n) for n in FIXTURES]}")
    before = kit_fingerprint()
    seed = secrets.randbelow(2**63)
    lock_path = tmp_path / "gpu.lock"
    start = time.monotonic()
    problems: list[str] = []
    graded: dict[str, dict] = {}
    # Processes, not threads: a grading process is the subreaper of its tree and ends every process
    # left in it after each stage, which would end another grading's processes in the same process.
    with ProcessPoolExecutor(max_workers=len(chosen), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {}
        for name in chosen:
            sub = submission(tmp_path / "subs" / _slug(name), FIXTURES[name].make(REFERENCE_KERNEL.read_text()))
            futures[name] = pool.submit(_grade_fixture, sub, tmp_path / "out" / _slug(name), seed, lock_path)
        for name, future in futures.items():
            try:
                graded[name] = future.result()
            except Exception as exc:  # noqa: BLE001 - reported with the rest
                problems.append(f"{name}: the grading failed: {exc!r}")
    seconds = time.monotonic() - start
    record("adversarial_cuda", seed=seed, fixtures=chosen, seconds=round(seconds, 1))
    for name, raw in graded.items():
        t4 = raw["tasks"]["task4"]
        speed = (t4.get("speedups") or [{}])[0]
        record("adversarial_cuda", fixture=name, points=t4.get("points"), status=t4.get("status"),
               reason=t4.get("reason"), correctness=sum(c.get("held_points", c["points"]) for c in t4.get("checks", [])),
               speed_points=speed.get("points"), speed_reason=speed.get("reason"), speed_value=speed.get("value"),
               flags=t4.get("flags"), stage_seconds=t4.get("stage_seconds"),
               display=(f"hostile task-4 kernel '{name}': {t4.get('points')}/{t4.get('max_points')} "
                        f"({t4.get('status')}); speed {speed.get('points')}: {str(speed.get('reason'))[:300]}"))
        problems += _check(name, FIXTURES[name], raw, tmp_path / "out" / _slug(name))
    if kit_fingerprint() != before:
        problems.append("the kit's files changed")
    assert not problems, (f"{len(problems)} problem(s) in {seconds:.0f} s (each fixture's reports and logs are "
                          f"under {tmp_path / 'out'}):\n" + "\n".join(problems))
