"""Checks that several tasks share: an attention module against float64 and against
``torch.nn.MultiheadAttention`` on the same weights."""
from __future__ import annotations

from typing import Callable

import torch

from . import reference
from .compare import ErrorReport, assert_close, strict_float32
from .inputs import mha_weights, randn

#: Fresh input sets each check runs on: an answer remembered by shape, size or
#: address from the first set is wrong on the second.
INPUT_SETS_PER_CHECK = 2
#: Axis names of a module's ``[B, S, H]`` output, for error messages.
MODULE_DIMS = ("batch", "row", "col")
#: Axis names of an attention core's ``[B, heads, S, head_dim]`` output.
CORE_DIMS = ("batch", "head", "row", "col")


def poison_free_memory(nbytes: int, device="cuda") -> None:
    """Leave NaN in the allocator's free memory, so an output the kernel never writes fails.

    Tests call it through :func:`harness.remote.on_worker`: the memory that matters is
    the allocator's of the process that runs the kernel.
    """
    torch.empty(max(nbytes // 4, 1) + 1024, device=device).fill_(float("nan"))


def mha_problem(batch: int, seq_len: int, hidden: int, *, device, tag: str):
    """Hidden states ``x [B, S, H]`` and the four weights, drawn from the run's seed."""
    x = randn(batch, seq_len, hidden, tag=f"{tag}/x", device=device)
    return x, mha_weights(hidden, tag=tag, device=device)


def nn_multihead_attention(weights, hidden: int, num_heads: int, device) -> torch.nn.MultiheadAttention:
    """``torch.nn.MultiheadAttention`` (no bias, batch first) carrying the given weights."""
    w_q, w_k, w_v, w_o = weights
    mha = torch.nn.MultiheadAttention(hidden, num_heads, bias=False, batch_first=True, device=device)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w_q, w_k, w_v], dim=0))
        mha.out_proj.weight.copy_(w_o)
    return mha.eval()


def run_nn_mha(mha: torch.nn.MultiheadAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    mask = None
    if causal:
        s = x.shape[1]
        mask = torch.triu(torch.ones(s, s, dtype=torch.bool, device=x.device), diagonal=1)
    with torch.no_grad():
        return mha(x, x, x, attn_mask=mask, need_weights=False)[0]


def mha_forward(x: torch.Tensor, mha: torch.nn.MultiheadAttention, causal: bool) -> torch.Tensor:
    """:func:`run_nn_mha` with the input first, so it can be timed like a kernel."""
    return run_nn_mha(mha, x, causal)


def sdpa_core(q, k, v, heads: int, causal: bool):
    """PyTorch's fused attention on ``[B, S, H]`` tensors, returning ``[B, S, H]`` (the CUDA tasks' baseline)."""
    b, s, h = q.shape
    split = lambda t: t.view(b, s, heads, h // heads).transpose(1, 2)  # noqa: E731
    out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)
    return out.transpose(1, 2).reshape(b, s, h)


def first_item_of(fn, *args):
    """``fn(*args)[:1]`` as a copy: a large output's first batch item, to re-check it against float64."""
    return fn(*args)[:1].clone()


def check_attention_module(
    make_module: Callable,
    *,
    batch: int,
    seq_len: int,
    hidden: int,
    num_heads: int,
    causal: bool,
    device,
    tag: str,
    against: str = "float64",
    what: str = "module output",
) -> ErrorReport:
    """Run ``make_module(w_q, w_k, w_v, w_o, hidden, heads)(x, causal=...)`` and check it.

    ``against="float64"``: the tolerance comes from PyTorch's float32 computation of
    the same formula. ``against="nn.MultiheadAttention"``: the tolerance comes from
    ``nn.MultiheadAttention``'s own float32 error on the same weights, so the module
    must be about as accurate as PyTorch's module. Runs on
    :data:`INPUT_SETS_PER_CHECK` input sets and returns the report of the worst.
    """
    reports = []
    for i in range(INPUT_SETS_PER_CHECK):
        x, weights = mha_problem(batch, seq_len, hidden, device=device, tag=f"{tag}/{against}/set{i}")
        module = make_module(*weights, hidden, num_heads)
        with torch.no_grad():
            out = module(x, causal=causal)
        ref = reference.mha(x, *weights, num_heads, causal)
        with strict_float32():
            if against == "float64":
                baseline = reference.mha(x, *weights, num_heads, causal, dtype=torch.float32)
            else:
                baseline = run_nn_mha(nn_multihead_attention(weights, hidden, num_heads, device), x, causal)
        context = dict(B=batch, S=seq_len, H=hidden, heads=num_heads, causal=causal, device=str(device),
                       input_set=i)
        reports.append(assert_close(
            out, ref, baseline, what=f"{what} vs {against}", dims=MODULE_DIMS, context=context
        ))
    return max(reports, key=lambda r: r.max_abs_error / r.allowed if r.allowed else r.max_abs_error)
