"""``python -m taskN.test`` as a student runs it: in a fresh handout made by ``grader release``
(no solutions/, so the tests take the student's files), as a subprocess, as from a terminal.

The first lines say which files are under test, the seed and the device; a stub says "not
implemented yet"; a file with a syntax error gives Python's one short message (file, line,
the line and a caret) and "0 checks ran", not one traceback per check; a corrected file passes.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from grader.release import release
from harness.tasks import REPO_ROOT

SOLUTION = (REPO_ROOT / "solutions" / "task1" / "attention.py").read_text()
#: Short enough to read at once: the header (4 lines), the error (4) and the verdict.
MAX_SYNTAX_ERROR_LINES = 12


@pytest.fixture(scope="module")
def handout(tmp_path_factory):
    out = tmp_path_factory.mktemp("handout") / "kit"
    assert release(out, build=False, tests=False)
    return out


def student_run(handout, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_")}
    env["PYTHONPATH"] = str(handout)
    return subprocess.run([sys.executable, "-m", "task1.test", *args], capture_output=True, text=True,
                          env=env, cwd=handout, timeout=600)


def test_the_stub_says_not_implemented_and_shows_the_run(handout):
    proc = student_run(handout, "--", "-x")
    head = proc.stdout.splitlines()[:4]
    assert proc.returncode != 0
    assert any(f"files under test: {handout / 'task1' / 'attention.py'}" in line for line in head), head
    assert any(line.strip().startswith("seed:") for line in head) and any("device:" in line for line in head), head
    assert "not implemented yet" in proc.stdout


def test_a_syntax_error_is_one_short_message_then_a_fix_passes(handout):
    student_file = handout / "task1" / "attention.py"
    stub = student_file.read_text()
    broken = SOLUTION.replace("probs = F.softmax(scores, dim=-1)", "probs = F.softmax(scores, dim=-1", 1)
    assert broken != SOLUTION
    try:
        student_file.write_text(broken)
        proc = student_run(handout)
        lines = proc.stdout.strip().splitlines()
        assert proc.returncode == 1 and len(lines) <= MAX_SYNTAX_ERROR_LINES, proc.stdout
        assert "SyntaxError" in proc.stdout and "^" in proc.stdout and "0 checks ran" in lines[-1], proc.stdout
        assert f'"{student_file}", line' in proc.stdout
        student_file.write_text(SOLUTION)
        fixed = student_run(handout, "--no-perf")
        assert fixed.returncode == 0, fixed.stdout[-3000:]
    finally:
        student_file.write_text(stub)
