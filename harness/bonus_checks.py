"""Task 4's bonus part, the tensor-core kernels: their inputs, float64 references, tolerances,
timing baselines and the bad inputs they must refuse (used by task4/test.py).

Two variants of one interface, ``kernel(q, k, v, num_heads, causal)`` on ``[B, S, heads*head_dim]``:

* ``"bf16"``: bfloat16 q, k, v, a bfloat16 output. The tolerance rule is the kit's
  (harness/compare.py) with PyTorch's own bf16 attention as the yardstick: the output may be
  at most ``TOLERANCE_FACTOR`` times as far from float64 (computed from the same bf16 inputs)
  as ``scaled_dot_product_attention`` in bf16 on the same inputs (its default backend: on an
  A100 or H100 FlashAttention-2 wherever it applies). Timed against SDPA's FlashAttention
  backend in bf16 (``SDPBackend.FLASH_ATTENTION``).
* ``"3xtf32"``: float32 in and out, at float32 accuracy: at most ``TOLERANCE_FACTOR`` times
  as far from float64 as float32 SDPA (TF32 off) on the same inputs, which plain TF32 (one
  product, 10 mantissa bits) misses by far. Timed against float32 SDPA (its default backend).
"""
from __future__ import annotations

from typing import Callable

import torch

from . import formulas
from .compare import ErrorReport, assert_close, strict_float32
from .inputs import randn, randn_seeded, seed_for

#: The two variants: the extension function's name, the input dtype, and what the tolerance's
#: baseline is called in a failure message.
VARIANTS = {
    "bf16": dict(function="custom_flash_attention_bf16", dtype=torch.bfloat16, baseline="PyTorch bf16 SDPA"),
    "3xtf32": dict(function="custom_flash_attention_3xtf32", dtype=torch.float32,
                   baseline="PyTorch float32 SDPA"),
}
#: Axis names of a ``[B, S, H]`` output, for error messages.
DIMS = ("batch", "row", "col")


def dtype_of(variant: str) -> torch.dtype:
    return VARIANTS[variant]["dtype"]


def sdpa(q, k, v, heads: int, causal: bool):
    """PyTorch's fused attention (its default backend) on ``[B, S, H]`` tensors, ``[B, S, H]`` out."""
    b, s, h = q.shape
    split = lambda t: t.view(b, s, heads, h // heads).transpose(1, 2)  # noqa: E731
    out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)
    return out.transpose(1, 2).reshape(b, s, h)


def sdpa_flash(q, k, v, heads: int, causal: bool):
    """:func:`sdpa` forced onto its FlashAttention backend (bf16 or fp16 only): the bf16 variant's baseline."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return sdpa(q, k, v, heads, causal)


def baseline_of(variant: str) -> Callable:
    """The function a variant is timed against."""
    return sdpa_flash if variant == "bf16" else sdpa


def references(q, k, v, heads: int, causal: bool, variant: str):
    """The float64 result of the attention core on the inputs as given (bf16 ones widened exactly),
    and PyTorch's own result in the variant's precision, as float32 (what the tolerance is measured
    against): bf16 SDPA for ``"bf16"``, float32 SDPA with TF32 off for ``"3xtf32"``."""
    qh, kh, vh = (formulas.split_heads(t, heads) for t in (q, k, v))
    ref = formulas.merge_heads(formulas.attention(qh, kh, vh, causal))
    with torch.no_grad(), strict_float32():
        own = sdpa(q, k, v, heads, causal).float()
    return ref, own


def check_output(out, q, k, v, heads: int, causal: bool, variant: str, *, what: str, context: dict) -> ErrorReport:
    """``out`` (the kernel's output for q, k, v) against float64 under the variant's tolerance."""
    ref, own = references(q, k, v, heads, causal, variant)
    if isinstance(out, torch.Tensor) and out.dtype != dtype_of(variant):
        from .compare import CheckFailed

        raise CheckFailed(f"{what}: the output is {out.dtype}, expected {dtype_of(variant)} (the inputs' dtype)")
    return assert_close(out.float() if isinstance(out, torch.Tensor) else out, ref, own, what=what, dims=DIMS,
                        context=context, baseline_name=VARIANTS[variant]["baseline"])


#: A pattern that is NaN as a float32 and as both bf16 halves, for the allocator's free memory.
NAN_BOTH_WAYS = 0x7FC07FC0


def poison_free_memory(nbytes: int, device="cuda") -> None:
    """Leave NaN in the allocator's free memory (as float32 and as bf16 alike), so an output the
    kernel never writes fails. Called through :func:`harness.remote.on_worker`."""
    torch.empty(max(nbytes // 4, 1) + 1024, dtype=torch.int32, device=device).fill_(NAN_BOTH_WAYS)


def inputs(case, *, variant: str, tag: str, device, std: float = 1.0):
    """Fresh q, k, v for ``case = (batch, seq_len, heads, head_dim)`` in the variant's dtype (q and
    k with standard deviation ``std``), drawn from the run's seed."""
    b, s, heads, d = case
    dtype = dtype_of(variant)
    q, k = (randn(b, s, heads * d, tag=f"{tag}/{n}", device=device, std=std, dtype=dtype) for n in "qk")
    return q, k, randn(b, s, heads * d, tag=f"{tag}/v", device=device, dtype=dtype)


def check_core(kernel: Callable, variant: str, case, causal: bool, *, tag: str, device, std: float = 1.0,
               hint: str = "") -> ErrorReport:
    """``kernel(q, k, v, heads, causal)`` on fresh inputs against float64: it must write every output
    element (the free memory is NaN first) and call no PyTorch attention, matmul or softmax."""
    from .op_recorder import assert_own_kernel
    from .remote import on_worker

    b, s, heads, d = case
    q, k, v = inputs(case, variant=variant, tag=tag, device=device, std=std)
    what = VARIANTS[variant]["function"] + (" with large scores" if std != 1.0 else "")
    on_worker(poison_free_memory)(q.numel() * 4, device)
    out = assert_own_kernel(kernel, q, k, v, heads, causal, what=what)
    context = dict(B=b, S=s, heads=heads, head_dim=d, causal=causal, **({"std": std} if std != 1.0 else {}))
    return check_output(out, q, k, v, heads, causal, variant, what=what + (f" ({hint})" if hint else ""),
                        context=context)


def worker_randn_as(dtype: torch.dtype, *shape: int, tag: str, device="cpu"):
    """:func:`harness.remote.worker_randn` in ``dtype``: drawn where the kernels run (kept there
    in the judge), the same values the judge's ``randn(..., dtype=dtype)`` draws."""
    from .remote import is_judge, on_worker

    if not is_judge():
        return randn(*shape, tag=tag, device=device, dtype=dtype)
    return on_worker(randn_seeded).call(shape, dict(seed=seed_for(tag), device=device, dtype=dtype), keep=True)


def expect_input_checks(kernel: Callable, variant: str) -> None:
    """In an input-check script: what the variant's kernel must refuse (and one input it must accept)."""
    from .shared_checks import expect_accepted, expect_refused

    dtype = dtype_of(variant)
    other = torch.float32 if dtype == torch.bfloat16 else torch.bfloat16
    q = torch.randn(1, 8, 256, device="cuda", dtype=dtype)
    expect_accepted(f"valid {dtype} q, k, v (8 tokens, 2 heads)", kernel, q, q, q, 2, False)
    cases = {
        f"{other} (the other variant's dtype)": ((q.to(other),) * 3, 2),
        "float64": ((q.double(),) * 3, 2),
        "cpu": ((q.cpu(),) * 3, 2),
        "non-contiguous": ((torch.randn(2, 8, 256, device="cuda", dtype=dtype).transpose(0, 1),) * 3, 2),
        "head_dim > 128": ((q,) * 3, 1),
        "heads do not divide hidden": ((q,) * 3, 3),
        "shapes differ": ((q, q[:, :4].contiguous(), q), 2),
        "one of q, k, v in another dtype": ((q, q.to(other), q), 2),
    }
    for what, (tensors, heads) in cases.items():
        expect_refused(what, kernel, *tensors, heads, False)
