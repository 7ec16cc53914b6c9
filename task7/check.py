"""Task 7: check one case, a prompt batch run on both paths and judged (provided).

:func:`run_case` generates on the reference path (transformers' attention)
and on the kernels path, teacher-forces both (and a float64 copy of the
reference) on the reference's tokens, judges them (``task7.verdict``) and
checks that ``generate()`` called the kernels as often as it must;
:func:`format_case` gives the lines ``python -m task7.inference`` prints for it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .generation import Generation, generate, teacher_forced
from .loading import REFERENCE_ATTENTION
from .verdict import Verdict, judge


@dataclass
class CaseResult:
    label: str
    batch: int
    prompt_len: int
    new_tokens: int
    verdict: Verdict
    ref: Generation
    custom: Generation
    kernel_calls: dict
    prompt: torch.Tensor
    display: dict  # path -> [B, N] tokens shown as text (greedy, or sampled with --sample)

    @property
    def passed(self) -> bool:
        return self.verdict.passed


def expected_kernel_calls(n_layers: int, new_tokens: int) -> dict:
    """What one generate() of ``new_tokens`` tokens must call: one prefill, then decode steps."""
    return {"prefill": n_layers, "decode": n_layers * (new_tokens - 1), "update_kv_cache": n_layers * new_tokens}


def run_case(model, kernels, attn_name: str, prompt: torch.Tensor, new_tokens: int, *, label: str,
             model64=None, sample: dict | None = None, seed: int = 0, nan_fill: bool = False) -> CaseResult:
    """Both paths on one prompt batch: timed greedy generate(), teacher-forced logits, verdict."""
    from .kv_cache import KernelKVCache

    b, s = prompt.shape
    n_layers = model.config.n_layer
    fill = float("nan") if nan_fill else None
    new_cache = lambda: KernelKVCache(model.config, s + new_tokens, kernels, fill=fill)  # noqa: E731

    model.set_attn_implementation(REFERENCE_ATTENTION)
    ref = generate(model, prompt, new_tokens)
    ref_tf = teacher_forced(model, prompt, ref.tokens)
    model.set_attn_implementation(attn_name)
    kernels.reset_counts()
    custom = generate(model, prompt, new_tokens, cache=new_cache())
    calls = dict(kernels.calls)
    custom_tf = teacher_forced(model, prompt, ref.tokens, cache=new_cache())
    display = {"reference": ref.tokens, "kernels": custom.tokens}
    if sample:
        model.set_attn_implementation(REFERENCE_ATTENTION)
        display["reference"] = generate(model, prompt, new_tokens, sample=sample, seed=seed).tokens
        model.set_attn_implementation(attn_name)
        display["kernels"] = generate(model, prompt, new_tokens, cache=new_cache(), sample=sample, seed=seed).tokens
    model.set_attn_implementation(REFERENCE_ATTENTION)

    own64 = model64 is None
    if own64:
        model64 = copy.deepcopy(model).to(torch.float64)
    ref64_tf = teacher_forced(model64, prompt, ref.tokens)
    if own64:
        del model64

    verdict = judge(custom_tf, ref_tf, ref64_tf, custom.tokens, ref.tokens)
    expected = expected_kernel_calls(n_layers, new_tokens)
    if {k: calls.get(k, 0) for k in expected} != expected or calls.get("prefill_after_prefix", 0):
        verdict.failures.append(
            f"generate() did not run the kernels as expected: calls {calls}, expected {expected} "
            "(one task-4 prefill per layer, then one task-5 decode and one cache update per layer and step)"
        )
        verdict.passed = False
    return CaseResult(label, b, s, new_tokens, verdict, ref, custom, calls, prompt, display)


def format_case(case: CaseResult, path: str = "your kernels") -> list[str]:
    """The lines ``python -m task7.inference`` prints for a case; ``path`` names the path under test."""
    v = case.verdict
    lines = [
        f"case {case.label}: batch {case.batch}, prompt {case.prompt_len} tokens, {case.new_tokens} new tokens",
        f"  tokens/s   reference ({REFERENCE_ATTENTION}): prefill {case.ref.prefill_tokens_per_s:,.0f}, "
        f"decode {case.ref.decode_tokens_per_s:,.0f}",
        f"  tokens/s   {path + ':':<17} prefill {case.custom.prefill_tokens_per_s:,.0f}, "
        f"decode {case.custom.decode_tokens_per_s:,.0f}   (kernel calls: "
        + ", ".join(f"{k} {val}" for k, val in sorted(case.kernel_calls.items())) + ")",
        f"  logits vs float64: prefill max |error| {v.prefill.max_abs_error:.2e} (allowed {v.prefill.allowed:.2e}), "
        f"decode steps {v.steps.max_abs_error:.2e} (allowed {v.steps.allowed:.2e})",
        f"  greedy tokens: {v.tokens_agree}/{v.tokens_total} agree",
    ]
    lines += [f"  note: {n}" for n in v.notes]
    if v.passed:
        lines.append("  -> agree")
    else:
        lines.append("  -> DIFFER:")
        lines += ["     " + line for f in v.failures for line in f.splitlines()]
    return lines
