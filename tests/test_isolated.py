"""harness.shared_checks.run_isolated: a check that may break the CUDA context (task 2's offsets past
2^31 elements) runs again in a child pytest in a student's own run, and its verdict comes back here."""
import os

import pytest

from harness.compare import CheckFailed
from harness.shared_checks import run_isolated

IN_CHILD = os.environ.get("ATTN_KIT_ISOLATED") == "1"


def test_the_test_runs_again_in_a_child_and_passes_here(request):
    if run_isolated(request):
        assert not IN_CHILD
        return
    assert IN_CHILD  # the body ran in the child only


def test_a_failure_in_the_child_fails_here_with_its_output(request):
    if IN_CHILD:
        raise AssertionError("the child failed on purpose")
    with pytest.raises(CheckFailed, match="child process of its own") as err:
        run_isolated(request)
    assert "the child failed on purpose" in str(err.value)


def test_a_stub_in_the_child_is_not_implemented_here(request):
    if IN_CHILD:
        raise NotImplementedError("not implemented yet: test_batched_softmax (README, Task 2)")
    with pytest.raises(NotImplementedError, match="not implemented yet: test_batched_softmax"):
        run_isolated(request)


def test_a_skip_in_the_child_is_a_skip_here_with_its_reason(request):
    if IN_CHILD:
        pytest.skip("needs about 19 GiB of free GPU memory")
    with pytest.raises(pytest.skip.Exception, match="19 GiB"):
        run_isolated(request)
