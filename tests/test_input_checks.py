"""The input-check runner of tasks 2, 4 and 5 (harness.shared_checks.run_input_checks), on the CPU.

A script calls ``expect_accepted`` (a valid input must work) and ``expect_refused`` (a bad one
must raise, leaving its outputs as they were); the runner fails, saying why, on a stub, on a
kernel that refuses everything, on one that accepts a bad input, and on one that raises only
after writing its output.
"""
from __future__ import annotations

import pytest

from harness.shared_checks import run_input_checks
from harness.compare import CheckFailed

SCRIPT = '''
import torch
from harness.shared_checks import expect_accepted, expect_refused

def kernel(x, out):
{body}

expect_accepted("valid float32", kernel, torch.ones(2), torch.zeros(2))
expect_refused("float64 input", kernel, torch.ones(2, dtype=torch.float64), torch.zeros(2), outputs=(1,))
'''
HONEST = '''    if x.dtype != torch.float32:
        raise RuntimeError("x must be float32")
    out.copy_(x)'''
STUB = '''    raise RuntimeError("not implemented yet: the kernel (README, Task 9)")'''
REFUSES_ALL = '''    raise RuntimeError("no")'''
ACCEPTS_ALL = '''    out.copy_(x.float())'''
WRITES_THEN_RAISES = '''    out.copy_(x.float())
    if x.dtype != torch.float32:
        raise RuntimeError("x must be float32")'''


def script(body: str) -> str:
    return SCRIPT.format(body=body)


def test_an_honest_kernel_passes():
    recorded = {}
    run_input_checks(script(HONEST), lambda name, **values: recorded.update({name: values}), timeout_s=120)
    cases = recorded["input_checks"]["cases"]
    assert recorded["input_checks"]["passed"] and any("float64 input: rejected: x must be float32" in c for c in cases)


@pytest.mark.parametrize("body, error, message", [
    (STUB, NotImplementedError, "not implemented yet"),
    (REFUSES_ALL, CheckFailed, "a valid input was refused: valid float32: CONTROL REFUSED: no"),
    (ACCEPTS_ALL, CheckFailed, "bad inputs were accepted instead of raising an error: float64 input: ACCEPTED"),
    (WRITES_THEN_RAISES, CheckFailed, "only after writing its output"),
], ids=["stub", "refuses everything", "accepts a bad input", "writes, then raises"])
def test_a_kernel_that_cheats_the_checks_fails_them(body, error, message):
    with pytest.raises(error, match=message):
        run_input_checks(script(body), lambda *a, **k: None, timeout_s=120)
