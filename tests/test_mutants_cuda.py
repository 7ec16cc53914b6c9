"""The CUDA tasks' property checks catch what they name (GPU node, ``pytest -m proof``): the
reference kernel with one property broken must fail the check that names it, with its message,
while it still computes the right answer. As tests/test_mutants.py does for the CPU tasks: each
mutant is one textual edit of a copy of solutions/, tested as a student runs the tests.

Each mutant costs one build of its task's kernel (about 85 s on the H200's 16 cores), so these
are proofs, not part of the README's quick ``pytest``.
"""
from __future__ import annotations

import pytest
import torch

from test_mutants import _mutant_copy, _run  # tests/ is on sys.path (pytest prepends it)

pytestmark = [
    pytest.mark.proof,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the mutants are CUDA kernels"),
]

#: (name, file, its edits as (text replaced, replacement), the property test, what its failure must
#: say, a correctness test the mutant must still pass: the property check is what catches it).
MUTANTS = [
    ("causal key tiles computed and masked, not skipped", "task4/attention_kernel.cu",
     [("const int kv_end = causal ? min(seq_len, q0 + BR) : seq_len;", "const int kv_end = seq_len;")],
     "causal_skips_key_tiles", "runs to the end of the sequence",
     "test_attention_core and causal and not large"),
]


@pytest.mark.parametrize("name, rel, edits, selection, message, still_right", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_a_broken_cuda_property_fails_its_check(name, rel, edits, selection, message, still_right, tmp_path):
    task = rel.split("/")[0]
    impl = _mutant_copy(tmp_path, rel, edits)
    right = _run(impl, f"{task}/test.py", still_right)
    assert right.returncode == 0 and " passed" in right.stdout, (name, right.stdout[-2000:], right.stderr[-2000:])
    done = _run(impl, f"{task}/test.py", selection)
    assert done.returncode == 1 and " failed" in done.stdout, (name, done.stdout[-2000:], done.stderr[-2000:])
    assert message in done.stdout, (name, message, done.stdout[-3000:])
    # What the check said, for the log of a GPU run (pytest -s): the figures that caught the mutant.
    print(f"{name}: " + next(line.strip() for line in done.stdout.splitlines() if message in line)[:600])
