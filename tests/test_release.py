"""The student handout: no solutions in it, stubs that build, tests that fail cleanly.

Also compiles every reference solution's CUDA code, so CI proves that every
``.cu`` file of the kit (stubs here via the release, solutions below) compiles.
"""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from grader.release import release
from harness.tasks import EXTENSIONS, REPO_ROOT, TASKS

needs_nvcc = pytest.mark.skipif(torch.version.cuda is None or shutil.which("nvcc") is None,
                                reason="needs nvcc and a CUDA build of PyTorch")
#: One architecture is enough to prove the code compiles, and halves the build time.
CI_ARCH = "9.0"


@pytest.fixture(scope="module")
def build_cache(tmp_path_factory):
    """A build cache for this module, or the one ATTN_KIT_BUILD_DIR names (content-addressed, so shared safely)."""
    named = os.environ.get("ATTN_KIT_BUILD_DIR")
    return named if named else tmp_path_factory.mktemp("build-cache")


@pytest.mark.proof
def test_release_is_clean(tmp_path, monkeypatch, build_cache, capsys):
    monkeypatch.setenv("ATTN_KIT_CUDA_ARCH", CI_ARCH)
    can_build = torch.version.cuda is not None and shutil.which("nvcc") is not None
    ok = release(tmp_path / "handout", build=can_build, tests=True)
    printed = capsys.readouterr().out
    assert ok, printed
    handout = tmp_path / "handout"
    assert not (handout / "solutions").exists() and not (handout / "tests").exists()
    guide = (handout / "README.md").read_text()  # the student guide, without the staff's part
    assert "## For course staff" not in guide and "solutions/" not in guide and "## The tasks" in guide
    if not torch.cuda.is_available():  # what could not be proven here is said, not passed off as [ok]
        assert "[not proven] task4" in printed and "not proven here for" in printed, printed
    for task in TASKS.values():
        for rel in task.editable:
            if (REPO_ROOT / rel).exists():
                assert (handout / rel).exists(), f"the handout lacks {rel}"


@needs_nvcc
@pytest.mark.parametrize("task", sorted({e.task for e in EXTENSIONS.values()}))
def test_reference_solution_compiles(task, build_cache):
    if not (REPO_ROOT / task / "compile.py").exists():
        pytest.skip(f"{task} has no compile.py yet")
    env = dict(os.environ, ATTN_KIT_IMPL=str(REPO_ROOT / "solutions"), ATTN_KIT_CUDA_ARCH=CI_ARCH,
               ATTN_KIT_BUILD_DIR=str(build_cache))
    done = subprocess.run([sys.executable, "-m", f"{task}.compile"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
