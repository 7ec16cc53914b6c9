"""Checks that several tasks share: an attention core (``[B, S, heads*head_dim]`` q, k, v)
and an attention module against float64 and against ``torch.nn.MultiheadAttention`` on
the same weights, and the bad inputs every attention kernel must refuse."""
from __future__ import annotations

from typing import Callable

import torch

from . import formulas
from .compare import CheckFailed, ErrorReport, assert_close, strict_float32
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


def tail_of_call_on_repeated(fn, base: torch.Tensor, total: int, tail: int, *args,
                             poison_bytes: int = 0) -> torch.Tensor:
    """Where the kernel runs: ``x``, ``total`` slices along dim 0 made of ``base``'s in turn
    (``x[i] = base[i % len(base)]``, contiguous), then ``fn(x, *args)``; only the result's last
    ``tail`` slices come back. The judge knows every element of an input too large to send (past
    2^31 elements, 8.6 GB) from ``base`` alone (:func:`repeated_indices`). ``poison_bytes`` of NaN
    are left in the free memory once ``x`` is made, where the output will be."""
    x = base.index_select(0, torch.arange(total, device=base.device) % base.shape[0])
    if poison_bytes:
        poison_free_memory(poison_bytes, x.device)
    out = fn(x, *args)
    kept = out[-tail:].clone()
    del x, out
    torch.cuda.empty_cache()  # 17 GB back before the next check
    return kept


def repeated_indices(distinct: int, total: int, tail: int) -> torch.Tensor:
    """Which of ``base``'s slices the last ``tail`` of :func:`tail_of_call_on_repeated`'s input are."""
    return torch.arange(total - tail, total) % distinct


def run_isolated(request, marker_env: str = "ATTN_KIT_ISOLATED") -> bool:
    """In a student's own run, run this test again in a child pytest and return True (its verdict
    raised here): a kernel that writes past its buffer leaves this process's CUDA context broken for
    every later test. In the grader (the kernel runs in the worker, not here; such tests come last
    in their file, so a broken context there costs only them) and in the child itself, return
    False: run the test here."""
    import os
    import re
    import subprocess
    import sys

    from .remote import is_judge
    from .tasks import REPO_ROOT

    if is_judge() or os.environ.get(marker_env) == "1":
        return False
    env = {**os.environ, marker_env: "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "-rfEs", request.node.nodeid], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=ISOLATED_TIMEOUT_S)
    out = proc.stdout.strip()
    said = re.findall(r"not implemented yet[^\n]*", out)
    if proc.returncode != 0 and said:  # a stub (the plugin's "not implemented" verdict): the same one here
        raise NotImplementedError(said[-1].strip())
    if proc.returncode != 0:
        raise CheckFailed(f"(run in a child process of its own, exit status {proc.returncode}; a negative status "
                          f"is a signal)\n{out[-3000:]}\n{proc.stderr.strip()[-1500:]}")
    skipped = [line.split(":", 2)[-1].strip() for line in out.splitlines() if line.startswith("SKIPPED")]
    if skipped:
        import pytest

        pytest.skip(skipped[0])
    return True


#: Seconds a test run again in a child process (:func:`run_isolated`) may take.
ISOLATED_TIMEOUT_S = 600


#: Standard deviation of the hidden states in the large-score checks: scores of a few hundred,
#: far past float32's exp range (exp(89) is inf), so a softmax that does not subtract the row
#: maximum returns inf / inf = NaN there. With std 1 the scores stay near 1 and it would pass.
LARGE_SCORES_STD = 10.0


def mha_problem(batch: int, seq_len: int, hidden: int, *, device, tag: str, x_std: float = 1.0):
    """Hidden states ``x [B, S, H]`` (standard deviation ``x_std``) and the four weights, drawn
    from the run's seed."""
    x = randn(batch, seq_len, hidden, tag=f"{tag}/x", device=device, std=x_std)
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
    x_std: float = 1.0,
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
        x, weights = mha_problem(batch, seq_len, hidden, device=device, tag=f"{tag}/{against}/set{i}", x_std=x_std)
        module = make_module(*weights, hidden, num_heads)
        with torch.no_grad():
            out = module(x, causal=causal)
        ref = formulas.mha(x, *weights, num_heads, causal)
        with strict_float32():
            if against == "float64":
                baseline = formulas.mha(x, *weights, num_heads, causal, dtype=torch.float32)
            else:
                baseline = run_nn_mha(nn_multihead_attention(weights, hidden, num_heads, device), x, causal)
        context = dict(B=batch, S=seq_len, H=hidden, heads=num_heads, x_std=x_std, causal=causal, device=str(device),
                       input_set=i)
        reports.append(assert_close(
            out, ref, baseline, what=f"{what} vs {against}", dims=MODULE_DIMS, context=context
        ))
    return max(reports, key=lambda r: r.max_abs_error / r.allowed if r.allowed else r.max_abs_error)


def attention_references(q, k, v, heads: int, causal: bool):
    """The float64 result of the attention core on ``[B, S, heads*head_dim]`` q, k, v, and
    PyTorch's float32 result of the same formula (what the tolerance is measured against)."""
    qh, kh, vh = (formulas.split_heads(t, heads) for t in (q, k, v))
    ref = formulas.merge_heads(formulas.attention(qh, kh, vh, causal))
    with strict_float32():
        t32 = formulas.merge_heads(formulas.attention(qh, kh, vh, causal, dtype=torch.float32))
    return ref, t32


#: How many timed repetitions of a scored speed test keep their output for a float64 re-check
#: (drawn at random when the timing starts; see harness.timing's ``keep_outputs``).
TIMED_SAMPLES = 2


def check_timed_samples(cmp, reference_for: Callable, what: str, **compare_kwargs) -> ErrorReport:
    """The outputs kept from random timed repetitions (``cmp.samples``, batch item 0) against
    float64: ``reference_for(i)`` gives the float64 result and PyTorch's float32 one for the
    input set (or step) ``i`` the repetition used. A kernel that is right only when it is not
    timed (one that counts its calls, or leaves its work on a stream the events do not see)
    fails here; the worst report is returned."""
    if not cmp.samples:
        raise CheckFailed(f"{what}: no output of a timed repetition came back to be checked")
    reports = []
    for i, out in zip(cmp.sampled_sets, cmp.samples):
        ref, t32 = reference_for(i)
        reports.append(assert_close(out, ref, t32, what=f"{what} (a timed repetition drawn at random: input "
                                    f"set {i}, batch item 0)", **compare_kwargs))
        del ref, t32
    return max(reports, key=lambda r: r.max_abs_error / r.allowed if r.allowed else r.max_abs_error)


def check_attention_core(kernel: Callable, what: str, case, causal: bool, *, tag: str, device,
                         std: float = 1.0, hint: str = "") -> ErrorReport:
    """``kernel(q, k, v, heads, causal)`` for ``case = (batch, seq_len, heads, head_dim)``, on
    fresh inputs (q and k with standard deviation ``std``), against float64.

    The kernel must write every output element (the free memory it could leave unwritten is
    NaN first) and call no PyTorch attention, matmul or softmax of its own. ``hint`` says, in
    a failure message, what a failure here usually means.
    """
    from .op_recorder import assert_own_kernel
    from .remote import on_worker

    b, s, heads, d = case
    q, k = (randn(b, s, heads * d, tag=f"{tag}/{n}", device=device, std=std) for n in "qk")
    v = randn(b, s, heads * d, tag=f"{tag}/v", device=device)
    on_worker(poison_free_memory)(q.numel() * 4, device)
    out = assert_own_kernel(kernel, q, k, v, heads, causal, what=what)
    ref, t32 = attention_references(q, k, v, heads, causal)
    context = dict(B=b, S=s, heads=heads, head_dim=d, causal=causal, **({"std": std} if std != 1.0 else {}))
    return assert_close(out, ref, t32, what=what + (f" ({hint})" if hint else ""), dims=MODULE_DIMS,
                        context=context)


#: Module shapes (batch, seq_len, hidden, num_heads) every attention module is checked on:
#: one token, lengths that are no multiple of a tile, head_dims of 16, 32, 64 and 128.
MODULE_SHAPES = [
    (1, 1, 64, 2),
    (2, 7, 64, 4),
    (2, 129, 256, 2),
    (3, 64, 512, 8),
    (1, 300, 96, 3),
]


def module_id(shape) -> str:
    return "B{}-S{}-H{}-heads{}".format(*shape)


def module_test(make_module: Callable, *, task: str, what: str, shapes=None, devices=None):
    """The module check every attention task runs, as a pytest test function (assign it to
    ``test_module`` in the task's test file): ``make_module(w_q, w_k, w_v, w_o, hidden, heads)``
    against float64 and against ``nn.MultiheadAttention`` over ``shapes`` (default
    :data:`MODULE_SHAPES`), causal and not, on each of ``devices`` (default: CUDA)."""
    import pytest

    @pytest.mark.parametrize("device", devices or ["cuda"])
    @pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
    @pytest.mark.parametrize("shape", shapes or MODULE_SHAPES, ids=module_id)
    @pytest.mark.parametrize("against", ["float64", "nn.MultiheadAttention"])
    def test_module(shape, causal, device, against, record):
        b, s, h, n = shape
        report = check_attention_module(
            make_module, batch=b, seq_len=s, hidden=h, num_heads=n, causal=causal, device=device,
            tag=f"{task}/module/{module_id(shape)}/{causal}", against=against, what=what,
        )
        record("error", **report.as_dict())

    return test_module


def core_id(case) -> str:
    return "B{}-S{}-heads{}-d{}".format(*case)


def expect_attention_input_checks(kernel: Callable) -> None:
    """In an input-check script: the inputs every ``kernel(q, k, v, heads, causal)`` of the kit
    must refuse (and one it must accept), each a mistake that would otherwise read memory
    wrongly or silently compute something else."""
    q = torch.randn(1, 8, 256, device="cuda")
    expect_accepted("valid q, k, v (8 tokens, 2 heads)", kernel, q, q, q, 2, False)
    cases = {
        "float64": ((q.double(),) * 3, 2),
        "cpu": ((q.cpu(),) * 3, 2),
        "non-contiguous": ((torch.randn(2, 8, 256, device="cuda").transpose(0, 1),) * 3, 2),
        "head_dim > 128": ((q,) * 3, 1),
        "heads do not divide hidden": ((q,) * 3, 3),
        "shapes differ": ((q, q[:, :4].contiguous(), q), 2),
    }
    for what, (tensors, heads) in cases.items():
        expect_refused(what, kernel, *tensors, heads, False)


# ---------------------------------------------------------------- calls made where the kernels run
# In the grader these run in the worker (through harness.remote.on_worker), because what they
# set up (a strided view, a caught error) would not survive the trip as data.

def narrowed_call(fn: Callable, views, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the arguments at the positions in ``views`` replaced by
    narrowed views of themselves: ``views`` holds ``(position, dim, start, length)``. A view
    sent as data would arrive as a dense copy; made here it keeps its strides."""
    args = list(args)
    for position, dim, start, length in views:
        args[position] = args[position].narrow(dim, start, length)
    return fn(*args, **kwargs)


#: Errors a kernel's input checks may raise (TORCH_CHECK raises RuntimeError or a subclass).
INPUT_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)
#: How a stub says it is one (the pytest plugin counts such checks as "not implemented").
NOT_IMPLEMENTED_PREFIX = "not implemented yet"


def call_reporting_error(fn: Callable, outputs, *args, **kwargs):
    """``fn(*args, **kwargs)``, returning ``(error, [args[i] for i in outputs])``: the first line
    of the error it raised (None if it raised none) and its output arguments after the call,
    so the caller can check both that a bad input was refused and that nothing was written.
    A stub's "not implemented yet" error is no refusal: it is raised as NotImplementedError."""
    error = None
    try:
        fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except NotImplementedError:
        raise
    except INPUT_ERRORS as exc:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if NOT_IMPLEMENTED_PREFIX in str(exc).lower():
            raise NotImplementedError(str(exc).strip().splitlines()[0]) from None
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return error, [args[i] for i in outputs]


# Input-check scripts (tasks 2, 4, 5) run in a child process, so a check that crashes instead of
# raising fails its test, says which input did it, and the rest of the run goes on. They call
# expect_accepted (a valid input first: checks that refuse everything earn nothing) and
# expect_refused for each bad input; run_input_checks reads the lines they print.
ACCEPTED, REFUSED_CONTROL, CONTROL_OK = "ACCEPTED", "CONTROL REFUSED", "control ok"


def expect_accepted(what: str, fn: Callable, *args, **kwargs) -> None:
    """In an input-check script: a valid input must work."""
    from .remote import on_worker

    error, _ = on_worker(call_reporting_error)(fn, [], *args, **kwargs)
    print(f"{what}: {CONTROL_OK}" if error is None else f"{what}: {REFUSED_CONTROL}: {error}", flush=True)


def expect_refused(what: str, fn: Callable, *args, outputs=(), **kwargs) -> None:
    """In an input-check script: a bad input must raise and leave the ``outputs`` arguments unchanged."""
    from .remote import on_worker

    print(what, "...", flush=True)  # the last line printed names the input, should the call crash
    before = [args[i].clone() for i in outputs]
    error, after = on_worker(call_reporting_error)(fn, list(outputs), *args, **kwargs)
    if error is None:
        print(f"{what}: {ACCEPTED}", flush=True)
        return
    changed = [i for i, a, b in zip(outputs, after, before) if not torch.equal(a, b)]
    verdict = f"{ACCEPTED} (it raised, but only after writing its output)" if changed else "rejected"
    print(f"{what}: {verdict}: {error}", flush=True)


def run_input_checks(script: str, record, timeout_s: float = 600) -> None:
    """Run an input-check script in a child process and fail, saying why, unless every valid
    input worked and every bad one was refused."""
    import os
    import subprocess
    import sys

    from .compare import CheckFailed
    from .tasks import REPO_ROOT

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=timeout_s)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        if "NotImplementedError" in proc.stderr:
            raise NotImplementedError(proc.stderr.strip().splitlines()[-1].split(":", 1)[-1].strip())
        last = lines[-1] if lines else "(nothing printed)"
        raise CheckFailed(
            f"checking bad inputs ended with exit status {proc.returncode} (a negative status is a "
            f"signal: -11 is a segmentation fault) at: {last}\n{proc.stderr[-2000:]}"
        )
    refused = [line for line in lines if REFUSED_CONTROL in line]
    if refused or not any(CONTROL_OK in line for line in lines):
        raise CheckFailed("a valid input was refused: " + ("; ".join(refused) or "(no valid input was tried)")
                          + ". Input checks count only when valid inputs still work.")
    accepted = [line for line in lines if ACCEPTED in line]
    if accepted:
        raise CheckFailed("bad inputs were accepted instead of raising an error: " + "; ".join(accepted))
    record("input_checks", passed=True, cases=[line for line in lines if not line.endswith("...")])


class SdpaCacheAttention:
    """A decode baseline: the module's projections and KV cache, PyTorch SDPA for attention.

    Called like the CUDA tasks' cached modules: ``(x, kv_cache, decode, current_pos, causal)``.
    """

    def __init__(self, weights, heads: int):
        self.w_q, self.w_k, self.w_v, self.w_o = weights
        self.heads = heads

    def __call__(self, x, kv_cache, decode=False, current_pos=0, causal=False):
        F = torch.nn.functional
        b, s, h = x.shape
        d = h // self.heads
        k_cache, v_cache = kv_cache
        q, k, v = F.linear(x, self.w_q), F.linear(x, self.w_k), F.linear(x, self.w_v)
        k_cache[:, current_pos : current_pos + s] = k
        v_cache[:, current_pos : current_pos + s] = v
        end = current_pos + s
        heads = lambda t, n: t.view(b, n, self.heads, d).transpose(1, 2)  # noqa: E731 (views, no copy)
        # SDPA's is_causal aligns the mask to the top-left; a decode query is the
        # last position and sees every key, so decode runs without a mask.
        out = F.scaled_dot_product_attention(
            heads(q, s), heads(k_cache[:, :end], end), heads(v_cache[:, :end], end),
            is_causal=causal and not decode and current_pos == 0,
        )
        return F.linear(out.transpose(1, 2).reshape(b, s, h), self.w_o)


def new_cache_pair(batch: int, max_seq_len: int, hidden: int, device="cuda"):
    """An empty float32 ``(k_cache, v_cache)`` for :class:`SdpaCacheAttention`."""
    return tuple(torch.zeros(batch, max_seq_len, hidden, device=device) for _ in range(2))
