"""Was the attention core really the student's kernel?

In the CUDA tasks the attention core must be computed by the student's own
kernels. :func:`ops_called` records every PyTorch operator that runs while a
function runs, including the ones a C++ extension calls through ATen (a
``TorchDispatchMode`` sees every call that goes through PyTorch's dispatcher),
and :func:`assert_own_kernel` fails when any of them does the work itself:
a matrix product, a softmax or a ready-made attention.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

from torch.utils._python_dispatch import TorchDispatchMode

from .compare import CheckFailed

#: Operators that would do the core's work for it (``aten::`` names, overload dropped).
FORBIDDEN_OPS = frozenset(
    {
        "mm", "bmm", "matmul", "addmm", "addbmm", "baddbmm", "addmv", "mv", "dot", "vdot",
        "einsum", "tensordot", "linear", "_scaled_mm", "bilinear",
        "softmax", "_softmax", "_safe_softmax", "log_softmax", "_log_softmax",
        "scaled_dot_product_attention", "_scaled_dot_product_attention_math",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_flash_attention_forward", "_efficient_attention_forward", "_fused_sdp_choice",
        "multi_head_attention_forward", "_native_multi_head_attention",
    }
)


#: Operators that copy a tensor's data (``contiguous()`` on a strided view runs ``clone``):
#: a kernel meant to read its inputs in place must call none of them.
COPY_OPS = frozenset(
    {"clone", "copy_", "_to_copy", "contiguous", "cat", "stack", "index_select", "gather",
     "narrow_copy", "slice_copy", "as_strided_copy", "_copy_from", "_copy_from_and_resize"}
)


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


class _CopyRecorder(TorchDispatchMode):
    """Each copying operator (:data:`COPY_OPS`) that runs, with the elements it wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import torch
        from torch.utils._pytree import tree_leaves

        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in COPY_OPS:
            outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
            if not (name.endswith("_") or name.startswith("_copy_from")):  # copy_ writes its input: counted
                # A new tensor only: contiguous() of a contiguous tensor returns it, and writes nothing.
                inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs))
                          if isinstance(t, torch.Tensor)}
                outputs = [t for t in outputs if t.untyped_storage().data_ptr() not in inputs]
            self.copies.append((name, max((t.numel() for t in outputs), default=0)))
        return out


def copies_made(fn: Callable, *args, **kwargs) -> tuple[object, list[tuple[str, int]]]:
    """Run ``fn`` here and return its result with every copying operator it ran and how many
    elements each wrote: a step that should read a large tensor in place must write none that large.
    Like every recorder here it sees what goes through PyTorch's dispatcher, not a kernel's own copies."""
    recorder = _CopyRecorder()
    with recorder:
        result = fn(*args, **kwargs)
    return result, recorder.copies


def ops_counted(fn: Callable, *args, **kwargs) -> tuple[object, dict[str, int]]:
    """Run ``fn`` and return its result with how many times each operator ran (in the worker
    for an object there: a count the submission's own process reports, so good for a teaching
    check of small weight, never for a rule)."""
    from .remote import is_remote

    if is_remote(fn):
        return fn.call(args, kwargs, record_ops=True, count_ops=True)
    result, names = ops_called(fn, *args, **kwargs)
    return result, dict(Counter(names))


def ops_called(fn: Callable, *args, keep_result: bool = False, outputs: tuple = (),
               **kwargs) -> tuple[object, list[str]]:
    """Run ``fn`` and return its result with the names of the operators it called, in order.

    For an object in the worker (harness.remote) the recording happens there, around the call;
    ``keep_result`` leaves a large result there and ``outputs`` names the arguments whose values
    after the call come back (see :meth:`harness.remote.RemoteObject.call`).
    """
    from .remote import is_remote

    if is_remote(fn):
        return fn.call(args, kwargs, record_ops=True, keep=keep_result, outputs=outputs)
    recorder = _OpRecorder()
    with recorder:
        result = fn(*args, **kwargs)
    return result, recorder.names


def assert_own_kernel(fn: Callable, *args, what: str = "the attention core", keep_result: bool = False,
                      outputs: tuple = (), **kwargs):
    """Run ``fn``; fail with a clear message if it used an operator from :data:`FORBIDDEN_OPS`."""
    result, names = ops_called(fn, *args, keep_result=keep_result, outputs=outputs, **kwargs)
    used = sorted(set(names) & FORBIDDEN_OPS)
    if used:
        raise CheckFailed(
            f"{what} called PyTorch's {', '.join(used)}: in this task the matrix products, the "
            "softmax and the attention itself must be computed by your own CUDA kernels, not by "
            "PyTorch (at::matmul, torch::softmax and friends count as PyTorch)."
        )
    return result
