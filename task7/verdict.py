"""Task 7: the verdict, whether the kernels path agrees with transformers' attention (provided).

The kernels path and the reference path (transformers' own attention, "sdpa",
with its default cache) generate greedily from the same prompt; then both, and
the reference path in float64, are *teacher-forced* on the reference's tokens
(prefill of the prompt, then one decode step per token, each fed the same
token), so every step compares logits computed from the same inputs. TF32 is
off. The tolerance is the kit's rule (``harness/compare.py``): the kernels
path's logits may be at most 8 times as far from the float64 run as the
float32 reference path is (never asked to be closer than 64 float32 ulps of
the logits' magnitude), measured over the prompt's logits and over the decode
steps' logits separately. The greedy tokens of the two ``generate()`` runs must
agree; a difference where the float64 logits' two best tokens are closer than
twice the allowance is a tie the rounding may break either way: it is reported,
not failed, and that sequence is not compared after it. On a failure the
verdict names the first step (0 = the prompt, t = decode step t) and the
sequence and position where the paths diverge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from harness.compare import ErrorReport, compare

#: A greedy-token difference is a tie when the float64 top-2 margin is below this many allowances.
TIE_MARGIN_ALLOWANCES = 2.0


@dataclass
class Verdict:
    passed: bool
    prefill: ErrorReport
    steps: ErrorReport
    tokens_agree: int
    tokens_total: int
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_divergence: dict | None = None

    def as_dict(self) -> dict:
        return dict(
            passed=self.passed, prefill_logits=self.prefill.as_dict(), decode_logits=self.steps.as_dict(),
            tokens_agree=self.tokens_agree, tokens_total=self.tokens_total, failures=self.failures,
            notes=self.notes, first_divergence=self.first_divergence,
        )


def _first_bad(got: torch.Tensor, ref64: torch.Tensor, allowed: float) -> tuple[int, int, float] | None:
    """For ``[B, T, V]`` logits: the first (t, b) with an element beyond ``allowed``, and its error."""
    err = (got.to(torch.float64) - ref64.to(torch.float64)).abs()
    err = torch.where(torch.isfinite(got.to(torch.float64)), err, torch.full_like(err, math.inf))
    per = err.amax(-1)  # [B, T]
    bad = per > allowed
    if not bool(bad.any()):
        return None
    t = int(bad.any(0).nonzero()[0])
    b = int(bad[:, t].nonzero()[0])
    return t, b, float(per[b, t])


def judge(custom: dict, ref32: dict, ref64: dict, custom_tokens: torch.Tensor, ref_tokens: torch.Tensor) -> Verdict:
    """Compare the kernels path with the reference path (see the module docstring).

    ``custom``, ``ref32``, ``ref64``: :func:`teacher_forced` outputs, all forced
    on ``ref_tokens``; ``custom_tokens``, ``ref_tokens``: ``[B, N]`` greedy tokens
    of the two ``generate()`` runs.
    """
    b, s, _ = ref64["prefill"].shape
    n = ref_tokens.shape[1]
    dims = ("batch", "position", "vocab")
    pre = compare(custom["prefill"], ref64["prefill"], ref32["prefill"], what="prompt logits (prefill)",
                  dims=dims, context=dict(B=b, prompt=s))
    stp = compare(custom["steps"], ref64["steps"], ref32["steps"], what="decode-step logits",
                  dims=("batch", "step", "vocab"), context=dict(B=b, prompt=s, steps=n - 1))
    failures, notes = [], []
    divergence = None

    if not pre.passed:
        where = _first_bad(custom["prefill"], ref64["prefill"], pre.allowed)
        if where is not None:
            p, row, e = where
            divergence = dict(kind="logits", step=0, sequence=row, position=p, error=e, allowed=pre.allowed)
            failures.append(
                f"logits diverge at step 0 (the prefill, task-4 kernel): sequence {row}, prompt position {p} of {s}: "
                f"|error| {e:.3e} > allowed {pre.allowed:.3e}"
            )
        failures.append(pre.message or "prefill logits: shape or dtype mismatch")
    if not stp.passed:
        where = _first_bad(custom["steps"], ref64["steps"], stp.allowed)
        if where is not None:
            t, row, e = where
            if divergence is None:
                divergence = dict(kind="logits", step=t + 1, sequence=row, position=s + t, error=e, allowed=stp.allowed)
            failures.append(
                f"logits diverge at decode step {t + 1} (task-5 kernels, position {s + t}): sequence {row}: "
                f"|error| {e:.3e} > allowed {stp.allowed:.3e}"
            )
        failures.append(stp.message or "decode-step logits: shape or dtype mismatch")

    # Greedy tokens of the two generate() runs.
    if custom_tokens.shape != ref_tokens.shape:
        failures.append(f"generated {tuple(custom_tokens.shape)} tokens, the reference {tuple(ref_tokens.shape)}")
        agree = 0
    else:
        ref_logits = torch.cat([ref64["prefill"][:, -1:], ref64["steps"]], 1).to(torch.float64)  # [B, N, V]
        top2 = ref_logits.topk(2, dim=-1).values
        margin = top2[..., 0] - top2[..., 1]
        differ = (custom_tokens.to(ref_tokens.device) != ref_tokens)
        agree = int((~differ).sum())
        token_fail = None
        for row in range(b):
            idx = differ[row].nonzero()
            if idx.numel() == 0:
                continue
            t = int(idx[0])
            allowed = pre.allowed if t == 0 else stp.allowed
            tie = float(margin[row, t]) < TIE_MARGIN_ALLOWANCES * allowed
            what = "the prefill" if t == 0 else f"decode step {t}"
            desc = (
                f"sequence {row}, token {t} ({what}, position {s + t - 1}): yours {int(custom_tokens[row, t])}, "
                f"reference {int(ref_tokens[row, t])}; float64 top-2 margin {float(margin[row, t]):.3e}"
            )
            if tie:
                notes.append(f"greedy tie broken differently at {desc} (< {TIE_MARGIN_ALLOWANCES:g} x allowed "
                             f"{allowed:.3e}): not a failure; this sequence is not compared after it")
            elif token_fail is None or t < token_fail[0]:
                token_fail = (t, row, desc)
        if token_fail is not None:
            t, row, desc = token_fail
            failures.insert(0, f"greedy tokens diverge at step {t}: {desc}")
            if divergence is None or t < divergence["step"]:
                divergence = dict(kind="tokens", step=t, sequence=row, position=s + t - 1)
    passed = not failures
    return Verdict(passed, pre, stp, agree, int(ref_tokens.numel()), failures, notes, divergence)
