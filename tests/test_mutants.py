"""The task checks catch what the student text asks for (CPU): the reference solution with one
property broken must fail the check that names it, with its message, and the untouched
reference must pass. Each mutant is one textual edit of solutions/, run as a student runs the
tests (``ATTN_KIT_IMPL`` pointing at a copy).

The CUDA tasks' checks (the large batch x heads case, the decode kernel reading the cache in
place) need a GPU: their mutants are for a GPU node.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.tasks import REPO_ROOT

#: These mutants are CPU ones (tasks 1 and 3): on a GPU node their test runs see no GPU, as in CI
#: (tests/conftest.py says why).
pytestmark = pytest.mark.grader_without_gpu

SOLUTIONS = REPO_ROOT / "solutions"

#: (name, file, its edits as (text replaced, replacement), the tests run, what the failure must say).
MUTANTS = [
    ("m starts at 0", "task3/attention.py",
     [('m = torch.full((*lead, r1 - r0), float("-inf"), dtype=q.dtype, device=q.device)',
       "m = torch.zeros((*lead, r1 - r0), dtype=q.dtype, device=q.device)")],
     "negative_scores", "did not start at -inf"),
    ("no causal tile skipping", "task3/attention.py",
     [("k_end = r1 if causal else seq_len", "k_end = seq_len")],
     "skips", "matrix products"),
    ("Q K^T for every tile, only P V skipped", "task3/attention.py",
     [("k_end = r1 if causal else seq_len", "k_end = seq_len"),
      ("                s = (q_i @ k[..., c0:c1, :].transpose(-2, -1)) * scale  # line 8\n",
       "                s = (q_i @ k[..., c0:c1, :].transpose(-2, -1)) * scale  # line 8\n"
       "                if causal and c0 > r1 - 1:\n                    continue\n")],
     "skips", "matrix products"),
    ("the paper's typo taken literally", "task3/attention.py",
     [("o_new = o_prev * correction.unsqueeze(-1) + p @ v", "o_new = o_prev / correction.unsqueeze(-1) + p @ v")],
     "worked_example", "flash-attention issue #991"),
    ("softmax without the row maximum", "task1/attention.py",
     [("F.softmax(scores, dim=-1)", "(scores.exp() / scores.exp().sum(dim=-1, keepdim=True))")],
     "large_scores", "subtract the row maximum"),
]


def _mutant_copy(tmp_path: Path, rel: str, edits: list[tuple[str, str]], whole: bool = False) -> Path:
    """A copy of ``rel`` (``whole``: of all of solutions/, for a task that runs others' files too)
    with ``edits`` made to it."""
    impl = tmp_path / "impl"
    if whole:
        shutil.copytree(SOLUTIONS, impl)
    else:
        (impl / rel).parent.mkdir(parents=True)
    text = (SOLUTIONS / rel).read_text()
    for old, new in edits:
        assert text.count(old) == 1, f"the mutation of {rel} no longer applies: {old!r}"
        text = text.replace(old, new)
    (impl / rel).write_text(text)
    return impl


def _run(impl: Path, test_file: str, selection: str, keep_env: tuple[str, ...] = (),
         timeout_s: float = 300) -> subprocess.CompletedProcess:
    """The task's tests on ``impl``, as a student runs them; ``keep_env``: this run's ATTN_KIT_
    variables kept (the build cache: content-addressed, so an untouched kernel is not rebuilt)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTN_KIT_") or k in keep_env}
    env.update(ATTN_KIT_IMPL=str(impl), ATTN_KIT_SEED="12345")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           test_file, "-k", selection], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.mark.parametrize("name, rel, edits, selection, message", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_a_broken_property_fails_its_check(name, rel, edits, selection, message, tmp_path):
    task = rel.split("/")[0]
    impl = _mutant_copy(tmp_path, rel, edits)
    done = _run(impl, f"{task}/test.py", selection)
    assert done.returncode == 1 and " failed" in done.stdout, (name, done.stdout[-2000:], done.stderr[-2000:])
    assert message in done.stdout, (name, message, done.stdout[-3000:])


@pytest.mark.parametrize("task, selection", [("task1", "large_scores"),
                                             ("task3", "negative_scores or skips or worked_example")])
def test_the_reference_passes_those_checks(task, selection, tmp_path):
    impl = tmp_path / "impl"
    shutil.copytree(SOLUTIONS / task, impl / task)
    done = _run(impl, f"{task}/test.py", selection)
    assert done.returncode == 0 and " passed" in done.stdout, (done.stdout[-2000:], done.stderr[-2000:])
