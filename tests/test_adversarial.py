"""Hostile submissions: every trick gets 0 for its task, with a reason that names it.

Each fixture is a ``task1/attention.py`` written the way a student who wants
the points without the work would write it: its ``forward`` returns zeros (or
hands the work to PyTorch) and some extra code tries to fool the grader. The
grader runs the tests as a judge that never imports the file; the file runs
only in a contained worker. For every fixture:

* task 1 scores 0, and the reason says what happened;
* task 3, graded in the same run, keeps its full marks;
* the results are written and valid;
* the kit's own files (harness, tasks, solutions, grader) are unchanged, by hash.

Fixtures that try to reach outside print what the operating system answered;
the worker's log (in the grading output) shows it.
"""
from __future__ import annotations

import hashlib
import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from grader import rubric as rubric_mod
from grader.pipeline import CONTAINMENT, run_grading
from grader.report import validate_gradescope
from harness.tasks import REPO_ROOT

#: The grader's machinery, tested on tasks 1 and 3: on a GPU node the processes started here see
#: no GPU, as in CI (tests/conftest.py says why).
pytestmark = pytest.mark.grader_without_gpu

SOLUTIONS = REPO_ROOT / "solutions"
CONTAINED = CONTAINMENT.startswith("landlock")
needs_containment = pytest.mark.skipif(not CONTAINED, reason=f"the machine offers no containment ({CONTAINMENT})")

#: A module with the published class whose forward returns zeros; ``{setup}`` runs at
#: import, ``{trick}`` inside forward.
ZEROS = '''
import torch
from torch import nn
{setup}

class CustomSelfAttention(nn.Module):
    def __init__(self, w_q, w_k, w_v, w_o, hidden_dim, num_heads):
        super().__init__()
        self.w_q, self.w_k, self.w_v, self.w_o = w_q, w_k, w_v, w_o
        self.hidden_dim, self.num_heads = hidden_dim, num_heads

    def forward(self, x, causal=False):
        {trick}
        return torch.zeros_like(x)
'''

#: Finds the grader's pytest-json-report file from the judge's command line in /proc.
FIND_REPORT = '''
import glob, json, os
def _report_paths():
    for cmd in glob.glob("/proc/*/cmdline"):
        try:
            args = open(cmd, "rb").read().split(b"\\0")
        except OSError:
            continue
        for a in args:
            if a.startswith(b"--json-report-file="):
                yield a.split(b"=", 1)[1].decode()
def _forge():
    for path in _report_paths():
        doc = {"tests": [{"nodeid": "task1/test.py::test_attention[x]", "outcome": "passed"}] * 50}
        try:
            with open(path, "w") as f:
                json.dump(doc, f)
            print("FORGED", path, flush=True)
        except OSError as e:
            print("FORGE-FAILED", type(e).__name__, e, flush=True)
'''

#: Plain attention in PyTorch ops, to build the tricks that need a right answer first.
HONEST = '''
def _honest(self, x, causal):
    b, s, h = x.shape
    n = self.num_heads
    split = lambda t: t.view(b, s, n, h // n).transpose(1, 2)
    q, k, v = (split(x @ w.T) for w in (self.w_q, self.w_k, self.w_v))
    scores = q @ k.transpose(-1, -2) / (h // n) ** 0.5
    if causal:
        scores = scores.masked_fill(torch.triu(torch.ones(s, s, dtype=torch.bool), 1), float("-inf"))
    out = torch.softmax(scores, -1) @ v
    return out.transpose(1, 2).reshape(b, s, h) @ self.w_o.T
'''


def zeros_module(setup: str = "", trick: str = "pass") -> str:
    return ZEROS.format(setup=textwrap.dedent(setup), trick=trick)


FIXTURES = {
    "patches pytest's reports": (zeros_module('''
        import _pytest.reports as R
        _init = R.TestReport.__init__
        def _passing(self, *a, **k):
            _init(self, *a, **k)
            self.outcome, self.longrepr = "passed", None
        R.TestReport.__init__ = _passing
    '''), "differs from the float64 reference"),
    "rewrites the JSON report at exit": (zeros_module(FIND_REPORT + '''
        import atexit
        atexit.register(_forge)
    '''), "differs from the float64 reference"),
    "writes a passing report and exits": (zeros_module(FIND_REPORT, "_forge(); os._exit(0)"),
                                          "ended without answering"),
    "leaves a process that rewrites the report": (zeros_module(FIND_REPORT + '''
        import time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open("daemon.pid", "w") as f:
                    f.write(str(os.getpid()))
                for _ in range(600):
                    _forge()
                    time.sleep(0.1)
            os._exit(0)
    '''), "differs from the float64 reference"),
    "patches the harness, torch.allclose and the reference": (zeros_module('''
        import harness.compare, harness.formulas, harness.shared_checks
        harness.compare.TOLERANCE_FACTOR = 1e30
        harness.compare.assert_close = lambda *a, **k: None
        harness.shared_checks.assert_close = lambda *a, **k: None
        harness.formulas.mha = lambda x, *a, **k: torch.zeros_like(x, dtype=torch.float64)
        torch.allclose = lambda *a, **k: True
    '''), "differs from the float64 reference"),
    "calls scaled_dot_product_attention": (zeros_module('''
        import torch.nn.functional as F
    ''', '''b, s, h = x.shape
        n = self.num_heads
        split = lambda t: t.view(b, s, n, h // n).transpose(1, 2)
        q, k, v = (split(x @ w.T) for w in (self.w_q, self.w_k, self.w_v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return out.transpose(1, 2).reshape(b, s, h) @ self.w_o.T'''), "scaled_dot_product_attention"),
    "uses nn.MultiheadAttention": (zeros_module("", '''mha = nn.MultiheadAttention(self.hidden_dim, self.num_heads, bias=False, batch_first=True)
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([self.w_q, self.w_k, self.w_v]))
            mha.out_proj.weight.copy_(self.w_o)
        s = x.shape[1]
        mask = torch.triu(torch.ones(s, s, dtype=torch.bool), 1) if causal else None
        return mha(x, x, x, attn_mask=mask, need_weights=False)[0]'''), "nn.MultiheadAttention"),
    "caches answers by input shape": (zeros_module(HONEST + "\n_cache = {}\n", '''key = (tuple(x.shape), self.num_heads)
        if key not in _cache:
            _cache[key] = _honest(self, x, causal)
        return _cache[key]'''), "differs from the float64 reference"),
    "loads the staff's solution": (zeros_module() + textwrap.dedent('''
        import os, sys
        import harness
        _found = None
        # The kit's own folder first (where the worker imports harness from: it holds solutions/
        # in a staff checkout, whatever the Python or the working folder), then the usual places.
        kit = os.path.dirname(os.path.dirname(harness.__file__))
        for start in (kit, os.getcwd(), os.environ.get("VIRTUAL_ENV", ""), sys.executable, __file__):
            d = os.path.abspath(start)
            for _ in range(12):
                cand = os.path.join(d, "solutions", "task1", "attention.py")
                try:
                    _found = open(cand).read()
                    print("SOLUTION-READ", cand, flush=True)
                    break
                except PermissionError as e:
                    print("SOLUTION-DENIED", cand, e, flush=True)
                except OSError:
                    pass
                d = os.path.dirname(d)
            if _found:
                break
        if _found:
            _ns = {"__name__": "stolen"}
            exec(compile(_found, "stolen", "exec"), _ns)
            CustomSelfAttention = _ns["CustomSelfAttention"]
    '''), "differs from the float64 reference"),
    "edits and deletes the kit's files": (zeros_module('''
        import os, sys
        import harness
        kit = os.path.dirname(os.path.dirname(harness.__file__))
        repo = os.path.dirname(os.path.dirname(os.path.abspath(os.environ.get("VIRTUAL_ENV", sys.prefix))))
        targets = [os.path.join(kit, "harness", "compare.py"), os.path.join(kit, "task1", "test.py")]
        for root in {os.path.dirname(os.path.abspath(sys.prefix)), repo}:
            targets += [os.path.join(root, "harness", "compare.py"), os.path.join(root, "solutions", "task1", "attention.py")]
        for t in targets:
            try:
                with open(t, "a") as f:
                    f.write("\\nTOLERANCE_FACTOR = 1e30\\n")
                print("KIT-WRITTEN", t, flush=True)
            except OSError as e:
                print("KIT-WRITE-DENIED", t, type(e).__name__, flush=True)
            try:
                os.remove(t)
                print("KIT-DELETED", t, flush=True)
            except OSError as e:
                print("KIT-DELETE-DENIED", t, type(e).__name__, flush=True)
        home = os.path.expanduser("~root")
        try:
            open(os.path.join(home, "attn-kit-was-here"), "w").write("x")
            print("HOME-WRITTEN", home, flush=True)
        except OSError as e:
            print("HOME-WRITE-DENIED", home, type(e).__name__, flush=True)
    '''), "differs from the float64 reference"),
    "writes into the grader's output folder": (zeros_module('''
        import os
        OUT = "@OUT@"  # the grading run's output folder (the test fills it in): results, reports, logs
        for name in ("results.json", "report.md", "raw.json", "forged.txt", os.path.join("logs", "forged.txt")):
            path = os.path.join(OUT, name)
            try:
                with open(path, "w") as f:
                    f.write("forged")
                print("OUT-WRITTEN", path, flush=True)
            except OSError as e:
                print("OUT-WRITE-DENIED", path, type(e).__name__, flush=True)
    '''), "differs from the float64 reference"),
    "returns a tensor that lies to comparisons": (zeros_module('''
        class _Liar(torch.Tensor):
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                out = super().__torch_function__(func, types, args, kwargs or {})
                return torch.zeros_like(out.as_subclass(torch.Tensor)) if isinstance(out, torch.Tensor) else out
    ''', "return torch.zeros_like(x).as_subclass(_Liar)"), "differs from the float64 reference"),
    "zeroes the judge's weights in place": (zeros_module("", "[w.zero_() for w in (self.w_q, self.w_k, self.w_v, self.w_o)]"),
                                            "differs from the float64 reference"),
    "returns an output a thread fills in later": (zeros_module('''
        import math, threading, time

        def _right(x, m, causal):  # honest multi-head attention, done a moment too late
            b, s, h = x.shape
            d = h // m.num_heads
            q, k, v = ((x @ w.T).view(b, s, m.num_heads, d).transpose(1, 2) for w in (m.w_q, m.w_k, m.w_v))
            scores = q @ k.transpose(-1, -2) / math.sqrt(d)
            if causal:
                scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
            return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h) @ m.w_o.T

        def _later(out, x, m, causal):
            time.sleep(0.05)
            out.copy_(_right(x, m, causal))
    ''', "out = torch.zeros_like(x); threading.Thread(target=_later, args=(out, x.clone(), self, causal)).start(); "
        "return out"), "differs from the float64 reference"),
    "prints a fake report": (zeros_module('''
        print("task1/test.py::test_attention PASSED\\n48 passed in 0.1s\\nTotal score: 20/20", flush=True)
        print('{"tests": [{"outcome": "passed"}], "summary": {"passed": 48}}', flush=True)
    '''), "differs from the float64 reference"),
}


def kit_fingerprint() -> str:
    digest = hashlib.sha256()
    for top in ("harness", "grader", "solutions", "task1", "task3", "conftest.py"):
        base = REPO_ROOT / top
        for path in sorted([base] if base.is_file() else base.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO_ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()


def submission(root: Path, task1_source: str | None = None) -> Path:
    for rel in ("task1/attention.py", "task3/attention.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((SOLUTIONS / rel).read_bytes())
    if task1_source is not None:
        (root / "task1" / "attention.py").write_text(task1_source)
    (root / "Results.md").write_bytes((REPO_ROOT / "Results.md").read_bytes())
    return root


def grade(sub: Path, out: Path) -> dict:
    return run_grading(sub, ["task1", "task3"], out, rubric_mod.load(), quiet=True, use_reference=False)


def reasons(result: dict) -> str:
    return json.dumps([result["reason"], *[m for c in result["checks"] for m in c["messages"]]])


def worker_log(out: Path) -> str:
    path = out / "work" / "submission" / "task1" / "worker" / "worker.log"
    return path.read_text(errors="replace") if path.exists() else ""


@needs_containment
@pytest.mark.parametrize("name", list(FIXTURES))
def test_trick_scores_nothing(name, tmp_path, record):
    source, expected = FIXTURES[name]
    before = kit_fingerprint()
    out = tmp_path / "out"
    results = grade(submission(tmp_path / "sub", source.replace("@OUT@", str(out))), out)
    time.sleep(0.5)  # a process left behind would act now
    t1, t3 = results["tasks"]["task1"], results["tasks"]["task3"]
    log = worker_log(out)
    record("adversarial", fixture=name, points=t1["points"], status=t1["status"], reason=t1["reason"],
           worker_log=log[-2000:], containment=t1.get("containment"))
    assert t1["points"] == 0, (name, t1["status"], t1["reason"])
    assert expected in reasons(t1), (name, reasons(t1)[:2000])
    assert t3["points"] == t3["max_points"], (name, t3["reason"])
    doc = json.loads((out / "results.json").read_text())
    assert validate_gradescope(doc) == [] and doc["score"] == 3
    assert kit_fingerprint() == before, f"{name}: the kit's files changed"
    assert "FORGED" not in log and "KIT-WRITTEN" not in log and "KIT-DELETED" not in log, log[-2000:]
    assert "SOLUTION-READ" not in log and "HOME-WRITTEN" not in log, log[-2000:]
    if name == "loads the staff's solution":
        assert "SOLUTION-DENIED" in log, log[-2000:]
    assert "OUT-WRITTEN" not in log and not (out / "forged.txt").exists(), log[-2000:]
    if name == "writes into the grader's output folder":
        assert "OUT-WRITE-DENIED" in log and "PermissionError" in log, log[-2000:]
    if name == "edits and deletes the kit's files":
        assert "KIT-WRITE-DENIED" in log and "PermissionError" in log, log[-2000:]
    pid_file = out / "work" / "submission" / "task1" / "worker" / "daemon.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the task"


def worker_containment(tmp_path) -> str:
    """What a worker on this machine says of its containment (limits included)."""
    from harness import remote

    (tmp_path / "probe" / "submission").mkdir(parents=True)
    client = remote.Client(tmp_path / "probe", tmp_path / "probe" / "submission", REPO_ROOT)
    try:
        client.import_module("harness.inputs")
        return client.info["containment"]
    finally:
        client.close()


#: A short wait for the worker, so a hung check costs seconds, not minutes.
SHORT_CALL_TIMEOUT_S = 15


#: A small memory bound, so the allocation fixture reaches it in a second.
SMALL_MEMORY_GB = 2


def short_rubric(tmp_path):
    text = rubric_mod.RUBRIC_PATH.read_text().replace("call_timeout_s = 300", f"call_timeout_s = {SHORT_CALL_TIMEOUT_S}")
    text = text.replace("worker_memory_gb = 0", f"worker_memory_gb = {SMALL_MEMORY_GB}")
    (tmp_path / "rubric.toml").write_text(text)
    return rubric_mod.load(tmp_path / "rubric.toml")


FORK_BOMB = zeros_module("import os", """while True:
            try:
                os.fork()
            except OSError:
                pass""")
# 100 GB in 1 GiB pieces, each written: the worker's memory limit is what stops it.
ALLOCATE_100_GB = zeros_module("", "kept = [torch.ones(2**30 // 4) for _ in range(100)]")


def test_fork_bomb_is_bounded(tmp_path):
    if "processes" not in worker_containment(tmp_path):
        pytest.skip("this machine gives the worker no process limit")
    start = time.monotonic()
    results = run_grading(submission(tmp_path / "sub", FORK_BOMB), ["task1", "task3"], tmp_path / "out",
                          short_rubric(tmp_path), quiet=True, use_reference=False)
    t1, t3 = results["tasks"]["task1"], results["tasks"]["task3"]
    assert t1["points"] == 0 and "no answer within" in reasons(t1), reasons(t1)[:2000]
    assert t3["points"] == t3["max_points"]
    assert time.monotonic() - start < 300
    left = [p for p in os.listdir("/proc") if p.isdigit() and _works_in(p, tmp_path)]
    assert not left, f"processes of this submission left behind: {left}"


def _works_in(pid: str, folder: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(str(folder / "out"))
    except OSError:
        return False


def test_a_100_gb_allocation_is_stopped(tmp_path):
    said = worker_containment(tmp_path)
    if "memory at most" not in said:  # without a bound, the machine's OOM killer would pick a victim
        pytest.skip(f"this machine gives the worker no memory limit ({said})")
    results = run_grading(submission(tmp_path / "sub", ALLOCATE_100_GB), ["task1", "task3"], tmp_path / "out",
                          short_rubric(tmp_path), quiet=True, use_reference=False)
    t1, t3 = results["tasks"]["task1"], results["tasks"]["task3"]
    assert t1["points"] == 0 and "the worker's memory limit" in reasons(t1), reasons(t1)[:2000]
    assert t3["points"] == t3["max_points"]


def test_reference_copy_is_graded_in_full(tmp_path):
    """The same grading path gives a copy of the reference full marks (nothing above is luck)."""
    results = grade(submission(tmp_path / "sub"), tmp_path / "out")
    assert [results["tasks"][t]["points"] for t in ("task1", "task3")] == [2, 3], results["tasks"]["task1"]["reason"]
    assert results["containment"] == CONTAINMENT


def test_symlinked_task_folder_is_rejected(tmp_path):
    sub = submission(tmp_path / "sub")
    import shutil

    shutil.rmtree(sub / "task3")
    os.symlink(SOLUTIONS / "task3", sub / "task3")
    results = grade(sub, tmp_path / "out")
    t3 = results["tasks"]["task3"]
    assert t3["points"] == 0 and "symbolic link" in t3["reason"], t3["reason"]
    assert results["tasks"]["task1"]["points"] == 2


@pytest.mark.parametrize("kind", ["fifo", "folder", "link"])
def test_bad_results_md_costs_nothing(kind, tmp_path):
    sub = submission(tmp_path / "sub")
    (sub / "Results.md").unlink()
    if kind == "fifo":
        os.mkfifo(sub / "Results.md")
    elif kind == "folder":
        (sub / "Results.md").mkdir()
    else:
        os.symlink("/etc/passwd", sub / "Results.md")
    start = time.monotonic()
    results = grade(sub, tmp_path / "out")
    assert time.monotonic() - start < 120
    assert [results["tasks"][t]["points"] for t in ("task1", "task3")] == [2, 3]
    assert any("Results.md was not read" in f for f in results["flags"]), results["flags"]


#: Task 3's reference with its tiled core replaced by PyTorch's fused attention.
TASK3_SDPA = (SOLUTIONS / "task3" / "attention.py").read_text() + textwrap.dedent('''

    import torch.nn.functional as _F


    def _handed_over(self, q, k, v, T_r=8, T_c=8, causal=False):
        return _F.scaled_dot_product_attention(q, k, v, is_causal=causal)


    CustomFlashAttention._flash_attention = _handed_over
''')


@needs_containment
def test_task3_core_handed_to_sdpa_keeps_only_its_honest_part(tmp_path):
    """The online-softmax step is the student's own (0.5 points); the tiled core and the
    module hand the work to SDPA and score nothing, saying so; task 1 is untouched."""
    sub = submission(tmp_path / "sub")
    (sub / "task3" / "attention.py").write_text(TASK3_SDPA)
    results = grade(sub, tmp_path / "out")
    t1, t3 = results["tasks"]["task1"], results["tasks"]["task3"]
    assert t3["points"] == 0.5, (t3["points"], t3["reason"])
    assert "scaled_dot_product_attention" in reasons(t3)
    assert t1["points"] == t1["max_points"]
