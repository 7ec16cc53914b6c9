"""What a student's code may not call, caught as it happens.

No task lets the student's code hand the work to a ready-made attention:
``torch.nn.functional.scaled_dot_product_attention`` (and the functions behind
it), ``torch.nn.MultiheadAttention`` or ``F.multi_head_attention_forward``.
:func:`install` wraps those functions with a tripwire. A trip counts only when
a student-editable file is on the call stack, so the kit's own baselines (which
do call them) never trip. :func:`take_violations` hands over what tripped since
the last call; the test plugin (student runs) and the worker (grading runs)
turn each into a failed check that names the function.

This is a defence inside a process the submission also runs in: code that
goes out of its way (restoring the originals, calling private operators) can
get past it. The grader's source scan flags such code for review.
"""
from __future__ import annotations

import functools
import sys

import torch
import torch.nn.functional as F

#: (namespace, attribute, what a student is told it is).
LIBRARY_ATTENTION = (
    (F, "scaled_dot_product_attention", "torch.nn.functional.scaled_dot_product_attention"),
    (torch._C._nn, "scaled_dot_product_attention", "torch.nn.functional.scaled_dot_product_attention"),
    (F, "multi_head_attention_forward", "torch.nn.functional.multi_head_attention_forward"),
    (torch.nn.MultiheadAttention, "forward", "torch.nn.MultiheadAttention"),
    (torch, "_native_multi_head_attention", "torch._native_multi_head_attention"),
)
_violations: list[str] = []
_student_files: frozenset[str] = frozenset()
_installed = False


def _student_on_stack() -> str | None:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename in _student_files:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _tripwire(fn, what: str):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        where = _student_on_stack()
        if where is not None:
            _violations.append(f"{what} (called from {where})")
        return fn(*args, **kwargs)

    wrapped.__attn_kit_tripwire__ = True
    return wrapped


def install(student_files) -> None:
    """Wrap the forbidden functions (once per process); ``student_files`` are absolute paths."""
    global _installed, _student_files
    _student_files = frozenset(str(p) for p in student_files)
    if _installed:
        return
    for owner, name, what in LIBRARY_ATTENTION:
        fn = getattr(owner, name, None)
        if fn is not None and not getattr(fn, "__attn_kit_tripwire__", False):
            setattr(owner, name, _tripwire(fn, what))
    _installed = True


def take_violations() -> list[str]:
    """What tripped since the last call (and forget it)."""
    out = sorted(set(_violations))
    _violations.clear()
    return out


def violation_message(violations: list[str], what: str = "your code") -> str:
    return (
        f"{what} called {'; '.join(violations)}. This task asks you to compute attention "
        "yourself: a ready-made attention (scaled_dot_product_attention, nn.MultiheadAttention) "
        "does not count, so this check scores nothing."
    )
