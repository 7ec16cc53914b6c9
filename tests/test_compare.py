"""The tolerance rule: it accepts honest float32 arithmetic and rejects real bugs."""
import math

import pytest
import torch

from harness import formulas
from harness.compare import CheckFailed, assert_close, compare, strict_float32
from harness.inputs import randn

B, HEADS, S, D = 2, 3, 133, 64


@pytest.fixture(scope="module")
def problem():
    q, k, v = (randn(B, HEADS, S, D, tag=f"tests/compare/{n}") for n in "qkv")
    ref = formulas.attention(q, k, v, causal=False)
    with strict_float32():
        torch32 = formulas.attention(q, k, v, causal=False, dtype=torch.float32)
    return q, k, v, ref, torch32


def blocked_float32_attention(q, k, v, block=16):
    """Attention in float32 summed another way: keys reversed, online softmax in blocks."""
    k, v = k.flip(-2), v.flip(-2)
    scale = 1 / math.sqrt(q.shape[-1])
    m = torch.full(q.shape[:-1], -math.inf)
    l = torch.zeros(q.shape[:-1])
    o = torch.zeros_like(q)
    for c in range(0, k.shape[-2], block):
        s = q @ k[..., c:c + block, :].transpose(-1, -2) * scale
        m_new = torch.maximum(m, s.amax(-1))
        p = torch.exp(s - m_new.unsqueeze(-1))
        corr = torch.exp(m - m_new)
        l = l * corr + p.sum(-1)
        o = o * corr.unsqueeze(-1) + p @ v[..., c:c + block, :]
        m = m_new
    return o / l.unsqueeze(-1)


def to_tf32(x):
    """Round float32 values to TF32's 10-bit mantissa (round to nearest)."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def test_accepts_float32_reordering(problem):
    q, k, v, ref, torch32 = problem
    out = blocked_float32_attention(q, k, v)
    report = compare(out, ref, torch32)
    assert report.passed, report.message
    assert report.max_abs_error > 0  # it really is a different float32 result


def test_accepts_fast_exp_sized_error(problem):
    """A few ulps more than PyTorch (e.g. __expf) must still pass."""
    _, _, _, ref, torch32 = problem
    noisy = torch32 * (1 + 4 * torch.finfo(torch.float32).eps * randn(*torch32.shape, tag="tests/ulps").sign())
    assert compare(noisy, ref, torch32).passed


@pytest.mark.parametrize(
    "plant, hint",
    [
        ("one element off by 1e-3", ""),
        ("tf32 rounding", ""),
        ("missing 1/sqrt(d)", ""),
        ("last rows wrong", "tile-boundary"),
        ("constant factor", "scale factor"),
        ("nan", "NaN"),
        ("head offset", "offset"),
    ],
)
def test_rejects_planted_errors(problem, plant, hint):
    q, k, v, ref, torch32 = problem
    out = torch32.clone()
    if plant == "one element off by 1e-3":
        out[1, 2, 100, 5] += 1e-3
    elif plant == "tf32 rounding":  # what tensor-core TF32 arithmetic would give
        out = blocked_float32_attention(to_tf32(q), to_tf32(k), to_tf32(v))
    elif plant == "missing 1/sqrt(d)":
        out = formulas.attention(q, k, v, scale=1.0).float()
    elif plant == "last rows wrong":  # rows 128..132: the partial tile left unnormalised
        out[..., 128:, :] *= 1.5
    elif plant == "constant factor":
        out = out * 1.25
    elif plant == "nan":
        out[0, 0, 3, 3] = float("nan")
    elif plant == "head offset":  # every head but the first reads head 0's values
        out[:, 1:] = out[:, :1]
    report = compare(out, ref, torch32, dims=("batch", "head", "row", "col"))
    assert not report.passed, f"the planted error '{plant}' was accepted"
    assert hint in report.message, report.message
    assert "max |error|" in report.message and "hint:" in report.message


def test_failure_message_names_worst_element(problem):
    _, _, _, ref, torch32 = problem
    out = torch32.clone()
    out[1, 2, 100, 5] += 0.5
    with pytest.raises(CheckFailed) as info:
        assert_close(out, ref, torch32, dims=("batch", "head", "row", "col"))
    assert "batch=1, head=2, row=100, col=5" in str(info.value)


def test_shape_and_dtype_mismatch_are_reported(problem):
    _, _, _, ref, torch32 = problem
    assert "shape" in compare(torch32[..., :-1], ref, torch32).message
    assert "dtype" in compare(torch32.double(), ref, torch32).message


def test_floor_applies_when_pytorch_is_exact():
    """With S=1 attention returns v exactly; an honest kernel is exact too, and a tiny
    rounding must not fail just because PyTorch's error was zero."""
    v = randn(1, 1, 1, 8, tag="tests/floor")
    ref = v.double()
    assert compare(v * (1 + 2 * torch.finfo(torch.float32).eps), ref, v.clone()).passed
