"""The CUDA tasks' property checks catch what they name (GPU node, ``pytest -m proof``): the
reference kernel with one property broken must fail the check that names it, with its message,
while it still computes the right answer. As tests/test_mutants.py does for the CPU tasks: each
mutant is one textual edit of a copy of solutions/, tested as a student runs the tests.

A kernel's mutant costs one build of it (about 85 s on the H200's 16 cores; task 6's mutant
edits Python only and reuses the reference's builds), so these are proofs, not part of the
README's quick ``pytest``.
"""
from __future__ import annotations

import pytest
import torch

from test_mutants import _mutant_copy, _run  # tests/ is on sys.path (pytest puts it there)

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
    ("task 6's decode step copies the cache's valid rows", "task6/model.py",
     [("q, k_cache, v_cache, self.num_heads, True, seq_len=current_pos + 1",
       "q, k_cache[:, :current_pos + 1].contiguous(), v_cache[:, :current_pos + 1].contiguous(), self.num_heads, "
       "True, seq_len=current_pos + 1")],
     "decode_reads_the_cache_in_place", "it copied the cache", "test_small_model_vs_float64"),
]


#: What the student-like runs keep of this run's environment.
KEPT_ENV = ("ATTN_KIT_BUILD_DIR", "ATTN_KIT_CUDA_ARCH")
#: Seconds one run of a mutant's tests may take (a cold build of its kernels included).
MUTANT_TIMEOUT_S = 600


@pytest.mark.parametrize("name, rel, edits, selection, message, still_right", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_a_broken_cuda_property_fails_its_check(name, rel, edits, selection, message, still_right, tmp_path):
    task = rel.split("/")[0]
    impl = _mutant_copy(tmp_path, rel, edits, whole=True)  # task 6 runs task 4's and 5's kernels too
    right = _run(impl, f"{task}/test.py", still_right, KEPT_ENV, MUTANT_TIMEOUT_S)
    assert right.returncode == 0 and " passed" in right.stdout, (name, right.stdout[-2000:], right.stderr[-2000:])
    done = _run(impl, f"{task}/test.py", selection, KEPT_ENV, MUTANT_TIMEOUT_S)
    assert done.returncode == 1 and " failed" in done.stdout, (name, done.stdout[-2000:], done.stderr[-2000:])
    assert message in done.stdout, (name, message, done.stdout[-3000:])
    # What the check said, for the log of a GPU run (pytest -s): the figures that caught the mutant.
    print(f"{name}: " + next(line.strip() for line in done.stdout.splitlines() if message in line)[:600])
