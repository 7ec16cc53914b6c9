"""``python -m taskN.test`` as a student runs it (a subprocess, as from a terminal).

The first lines say which files are under test, the seed and the device; a stub says "not
implemented yet"; a file with a syntax error gives Python's one short message (file, line,
the line and a caret) and "0 checks ran", not one traceback per check; a corrected file passes.
"""
from __future__ import annotations

import os
import subprocess
import sys

from harness.tasks import REPO_ROOT

SOLUTION = (REPO_ROOT / "solutions" / "task1" / "attention.py").read_text()
#: Short enough to read at once: the header (4 lines), the error (4) and the verdict.
MAX_SYNTAX_ERROR_LINES = 12


def student_run(impl, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATTN_KIT_IMPL": str(impl), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "task1.test", *args], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=600)


def test_the_stub_says_not_implemented_and_shows_the_run():
    proc = student_run(REPO_ROOT, "--", "-x")
    head = proc.stdout.splitlines()[:4]
    assert proc.returncode != 0
    assert any("files under test:" in line and "task1/attention.py" in line for line in head), head
    assert any(line.strip().startswith("seed:") for line in head) and any("device:" in line for line in head), head
    assert "not implemented yet" in proc.stdout


def test_a_syntax_error_is_one_short_message_then_a_fix_passes(tmp_path):
    broken = SOLUTION.replace("probs = F.softmax(scores, dim=-1)", "probs = F.softmax(scores, dim=-1", 1)
    assert broken != SOLUTION
    (tmp_path / "task1").mkdir()
    (tmp_path / "task1" / "attention.py").write_text(broken)
    proc = student_run(tmp_path)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1 and len(lines) <= MAX_SYNTAX_ERROR_LINES, proc.stdout
    assert "SyntaxError" in proc.stdout and "^" in proc.stdout and "0 checks ran" in lines[-1], proc.stdout
    assert f'"{tmp_path / "task1" / "attention.py"}", line' in proc.stdout
    (tmp_path / "task1" / "attention.py").write_text(SOLUTION)
    fixed = student_run(tmp_path, "--no-perf")
    assert fixed.returncode == 0, fixed.stdout[-3000:]
