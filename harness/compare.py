"""Is an output right? Compare it with the float64 reference, explain when not.

The tolerance rule
------------------
Float32 results are never exact, and how far off they may be depends on the
problem (a 1000-long dot product rounds more than a 7-long one). So the
allowance is measured, not guessed: PyTorch computes the same thing in float32
(the reference functions with ``dtype=torch.float32``, TF32 off), we measure how
far *that* lands from float64, and the checked output may be at most
``TOLERANCE_FACTOR`` times as far, but is never asked to be closer than
``FLOOR_ULPS`` float32 units in the last place of the output's magnitude::

    allowed = max(TOLERANCE_FACTOR * max|torch32 - ref64|,
                  FLOOR_ULPS * eps32 * max|ref64|)

Summing in another order, tiling, an online softmax or ``__expf`` stay well
inside that; a wrong mask, a missing scale, an off-by-one at a tile edge or
TF32 arithmetic land far outside it. NaN or inf never passes.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch

#: How many times PyTorch's own float32 error a checked output may be off by.
TOLERANCE_FACTOR = 8.0
#: The smallest allowance, in float32 ulps of the output's largest magnitude.
FLOOR_ULPS = 64
FLOAT32_EPS = torch.finfo(torch.float32).eps


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """Disable TF32 so PyTorch's float32 matmuls really are float32."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


class CheckFailed(AssertionError):
    """A check of the harness failed; its message already explains everything.

    The pytest plugin shows only this message, without a traceback.
    """


@dataclass
class ErrorReport:
    """What a comparison measured; ``as_dict()`` is what tests record for the grader."""

    what: str
    passed: bool
    max_abs_error: float
    rel_error: float  # ||out - ref|| / ||ref||  (Frobenius)
    allowed: float
    torch32_error: float | None
    worst_index: dict[str, int] = field(default_factory=dict)
    worst_got: float = math.nan
    worst_expected: float = math.nan
    n_bad: int = 0
    n_total: int = 0
    hint: str = ""
    message: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("message")
        return d


def allowance(ref64: torch.Tensor, torch32: torch.Tensor | None) -> tuple[float, float | None]:
    """The error an output may have under the tolerance rule, and PyTorch's own float32 error."""
    scale = float(ref64.abs().max()) if ref64.numel() else 1.0
    floor = FLOOR_ULPS * FLOAT32_EPS * max(scale, 1e-30)
    if torch32 is None:
        return floor, None
    err32 = float((torch32.to(torch.float64) - ref64).abs().max()) if ref64.numel() else 0.0
    return max(TOLERANCE_FACTOR * err32, floor), err32


def _suffix_start(bad_along: torch.Tensor) -> int | None:
    """If the bad indices along one axis are exactly a non-empty suffix, where it starts."""
    idx = torch.nonzero(bad_along).flatten()
    if idx.numel() == 0:
        return None
    first, n = int(idx[0]), bad_along.numel()
    if first > 0 and int(idx[-1]) == n - 1 and idx.numel() == n - first:
        return first
    return None


def diagnose(
    out: torch.Tensor,
    ref: torch.Tensor,
    bad: torch.Tensor,
    dims: Sequence[str],
    context: dict | None = None,
) -> str:
    """A one-paragraph guess at the bug behind an error pattern, for a student."""
    context = context or {}
    hints: list[str] = []
    if not torch.isfinite(out).all():
        n = int((~torch.isfinite(out)).sum())
        return (
            f"{n} NaN/inf value(s) in the output: usually exp() overflowing because the row "
            "maximum was not subtracted first, a division by a zero row sum (a fully masked "
            "row, or a sum that was never accumulated), or reading memory nothing wrote."
        )
    flat_ref, flat_out = ref.flatten(), out.to(torch.float64).flatten()
    denom = float(flat_ref @ flat_ref)
    if denom > 0:
        c = float(flat_out @ flat_ref) / denom
        residual = float((flat_out - c * flat_ref).norm()) / math.sqrt(denom)
        if abs(c - 1) > 1e-3 and residual < 1e-2:
            return (
                f"the output is about {c:.4g} times the reference everywhere: a scale factor "
                "is off (the 1/sqrt(head_dim) scaling, or the softmax normalisation)."
            )
    for axis, name in enumerate(dims):
        if bad.dim() <= axis or bad.shape[axis] < 2:
            continue
        others = [a for a in range(bad.dim()) if a != axis]
        along = bad.any(dim=others) if others else bad
        start = _suffix_start(along)
        if start is not None and name in ("row", "col", "seq", "key"):
            hints.append(
                f"only {name}s >= {start} (of {bad.shape[axis]}) are wrong: a tile-boundary bug. "
                f"The last, partial tile is mishandled: check the bounds test on the {name} "
                "index when loading, computing and storing, and that partial tiles are padded "
                "with values that cannot change the result (0 for products, -inf for scores)."
            )
        elif name in ("batch", "head") and not bool(along[0]) and bool(along[1:].all()):
            hints.append(
                f"{name} 0 is right but the other {name}s are wrong: the offset of each "
                f"{name}'s slice in memory is computed wrongly (the stride of the {name} index)."
            )
    if hints:
        return " ".join(hints)
    if context.get("causal"):
        return (
            "this check uses causal=True. If the same shape passes with causal=False, the mask "
            "is the bug: query row i may see keys 0..i only (with a cached prefix of length P, "
            "keys 0..P+i), and fully skipped tiles must not change the running max or sum."
        )
    return (
        "the error is spread over the output: check the order of operations (which matrix is "
        "transposed, the softmax dimension, the head split) on the smallest failing shape."
    )


def compare(
    out: torch.Tensor,
    ref64: torch.Tensor,
    torch32: torch.Tensor | None = None,
    *,
    what: str = "output",
    dims: Sequence[str] | None = None,
    context: dict | None = None,
    baseline_name: str = "PyTorch float32",
) -> ErrorReport:
    """Measure ``out`` against ``ref64`` under the tolerance rule; never raises on a mismatch.

    ``baseline_name`` says in a failure message what computed ``torch32`` (task 4's bonus
    measures its bf16 kernel against PyTorch's bf16 SDPA: "PyTorch bf16 SDPA")."""
    context = dict(context or {})
    shape_note = ", ".join(f"{k}={v}" for k, v in context.items())
    label = f"{what} ({shape_note})" if shape_note else what
    if not isinstance(out, torch.Tensor):
        msg = f"{label}: expected a tensor, got {type(out).__name__}."
        return ErrorReport(what, False, math.inf, math.inf, 0.0, None, message=msg, hint=msg)
    if tuple(out.shape) != tuple(ref64.shape):
        msg = (
            f"{label}: shape {tuple(out.shape)} but the reference has {tuple(ref64.shape)}; "
            "check the reshapes and transposes around the kernel."
        )
        return ErrorReport(what, False, math.inf, math.inf, 0.0, None, message=msg, hint=msg)
    if out.dtype != torch.float32:
        msg = f"{label}: dtype {out.dtype}, expected torch.float32."
        return ErrorReport(what, False, math.inf, math.inf, 0.0, None, message=msg, hint=msg)
    dims = list(dims) if dims is not None else [f"dim{i}" for i in range(out.dim())]
    dims = (["dim"] * (out.dim() - len(dims)) + dims)[-out.dim():] if out.dim() else []
    ref64 = ref64.to(torch.float64)
    out64 = out.detach().to(device=ref64.device, dtype=torch.float64)
    allowed, err32 = allowance(ref64, torch32.to(ref64.device) if torch32 is not None else None)
    err = (out64 - ref64).abs()
    err = torch.where(torch.isfinite(out64), err, torch.full_like(err, math.inf))
    n_total = err.numel()
    if n_total == 0:
        return ErrorReport(what, True, 0.0, 0.0, allowed, err32, n_total=0)
    bad = err > allowed
    max_err = float(err.max())
    flat = int(err.argmax())
    index = [int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape)] if err.dim() else []
    worst = {name: i for name, i in zip(dims, index)}
    ref_norm = float(ref64.norm())
    rel = float((out64 - ref64).norm()) / ref_norm if ref_norm > 0 else float(err.max())
    if not math.isfinite(rel):
        rel = math.inf
    report = ErrorReport(
        what=what,
        passed=not bool(bad.any()),
        max_abs_error=max_err,
        rel_error=rel,
        allowed=allowed,
        torch32_error=err32,
        worst_index=worst,
        worst_got=float(out64.flatten()[flat]),
        worst_expected=float(ref64.flatten()[flat]),
        n_bad=int(bad.sum()),
        n_total=n_total,
    )
    if not report.passed:
        report.hint = diagnose(out64, ref64, bad, dims, context)
        where = ", ".join(f"{k}={v}" for k, v in worst.items())
        rule = (
            f"{TOLERANCE_FACTOR:g} x {baseline_name}'s own error {err32:.2e}, floor "
            f"{FLOOR_ULPS} ulps"
            if err32 is not None
            else f"{FLOOR_ULPS} float32 ulps of the output's magnitude"
        )
        report.message = (
            f"{label} differs from the float64 reference:\n"
            f"  max |error| {max_err:.3e} at ({where}): got {report.worst_got:.6g}, "
            f"expected {report.worst_expected:.6g}\n"
            f"  allowed {allowed:.3e} ({rule})\n"
            f"  relative error {rel:.3e}; {report.n_bad} of {n_total} elements beyond the allowance\n"
            f"  hint: {report.hint}"
        )
    return report


def assert_close(
    out: torch.Tensor,
    ref64: torch.Tensor,
    torch32: torch.Tensor | None = None,
    **kwargs,
) -> ErrorReport:
    """:func:`compare`, raising :class:`CheckFailed` with the full explanation on a mismatch."""
    report = compare(out, ref64, torch32, **kwargs)
    if not report.passed:
        raise CheckFailed(report.message)
    return report
