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


def reference_run(model, prompt: torch.Tensor, new_tokens: int, model64=None) -> tuple[Generation, dict, dict]:
    """The reference path (transformers' attention): timed greedy generate(), its tokens
    teacher-forced in float32 and in float64 (a copy of ``model`` unless ``model64`` is given)."""
    model.set_attn_implementation(REFERENCE_ATTENTION)
    ref = generate(model, prompt, new_tokens)
    ref_tf = teacher_forced(model, prompt, ref.tokens)
    own64 = model64 is None
    if own64:
        model64 = copy.deepcopy(model).to(torch.float64)
    ref64_tf = teacher_forced(model64, prompt, ref.tokens)
    if own64:
        del model64
    return ref, ref_tf, ref64_tf


def kernels_run(model, kernels, attn_name: str, prompt: torch.Tensor, new_tokens: int, forced: torch.Tensor, *,
                nan_fill: bool = False) -> tuple[Generation, dict, dict]:
    """The kernels path: timed greedy generate() with the kernel cache, how often it called each
    kernel, and the logits teacher-forced on ``forced`` (the reference's tokens)."""
    s = prompt.shape[1]
    model.set_attn_implementation(attn_name)
    try:
        kernels.reset_counts()
        custom = generate(model, prompt, new_tokens, cache=_kernel_cache(model, kernels, s, new_tokens, nan_fill))
        calls = dict(kernels.calls)
        custom_tf = teacher_forced(model, prompt, forced, cache=_kernel_cache(model, kernels, s, new_tokens, nan_fill))
    finally:
        model.set_attn_implementation(REFERENCE_ATTENTION)
    return custom, custom_tf, calls


def verdict_of(custom_tf: dict, ref_tf: dict, ref64_tf: dict, custom_tokens, ref_tokens, calls: dict,
               n_layers: int, new_tokens: int) -> Verdict:
    """The judgement of one case: logits and tokens (task7.verdict), and the kernel calls."""
    verdict = judge(custom_tf, ref_tf, ref64_tf, custom_tokens, ref_tokens)
    expected = expected_kernel_calls(n_layers, new_tokens)
    if {k: calls.get(k, 0) for k in expected} != expected or calls.get("prefill_after_prefix", 0):
        verdict.failures.append(
            f"generate() did not run the kernels as expected: calls {calls}, expected {expected} "
            "(one task-4 prefill per layer, then one task-5 decode and one cache update per layer and step)"
        )
        verdict.passed = False
    return verdict


def run_case(model, kernels, attn_name: str, prompt: torch.Tensor, new_tokens: int, *, label: str,
             model64=None, sample: dict | None = None, seed: int = 0, nan_fill: bool = False) -> CaseResult:
    """Both paths on one prompt batch, in this process: timed greedy generate(), teacher-forced
    logits, verdict (``python -m task7.inference``; the graded test splits it, see kernels_case)."""
    b, s = prompt.shape
    ref, ref_tf, ref64_tf = reference_run(model, prompt, new_tokens, model64)
    custom, custom_tf, calls = kernels_run(model, kernels, attn_name, prompt, new_tokens, ref.tokens,
                                           nan_fill=nan_fill)
    display = {"reference": ref.tokens, "kernels": custom.tokens}
    if sample:
        model.set_attn_implementation(REFERENCE_ATTENTION)
        display["reference"] = generate(model, prompt, new_tokens, sample=sample, seed=seed).tokens
        model.set_attn_implementation(attn_name)
        display["kernels"] = generate(model, prompt, new_tokens, cache=_kernel_cache(model, kernels, s, new_tokens, nan_fill),
                                      sample=sample, seed=seed).tokens
        model.set_attn_implementation(REFERENCE_ATTENTION)
    verdict = verdict_of(custom_tf, ref_tf, ref64_tf, custom.tokens, ref.tokens, calls, model.config.n_layer,
                         new_tokens)
    return CaseResult(label, b, s, new_tokens, verdict, ref, custom, calls, prompt, display)


def _kernel_cache(model, kernels, prompt_len: int, new_tokens: int, nan_fill: bool):
    """A fresh kernel KV cache for one generation (NaN in its unwritten rows with ``nan_fill``)."""
    from .kv_cache import KernelKVCache

    return KernelKVCache(model.config, prompt_len + new_tokens, kernels, fill=float("nan") if nan_fill else None)


# ------------------------------------------------------------------ the kernels path as data
# In the grader the kernels path runs in the worker (the process of the submission's code) and
# the reference path, the float64 copy and the verdict in the judge: kernels_case is what the
# judge calls there (harness.remote.on_worker), and it returns only data.
_kernels_model: dict = {}


def kernels_model() -> dict:
    """The offline GPT-2 on the GPU with the student's kernels registered and warmed up (once per
    process): ``{"model", "kernels", "name"}``."""
    if not _kernels_model:
        from .attention import ATTN_NAME, cuda_kernels, register
        from .kv_cache import KernelKVCache
        from .loading import load
        from .prompts import make_prompts

        kernels = cuda_kernels()
        name = register(kernels, ATTN_NAME)
        model, tok, _ = load(device="cuda")
        warm = make_prompts(tok, 8, 1).cuda()
        model.set_attn_implementation(name)
        generate(model, warm, 2, cache=KernelKVCache(model.config, 10, kernels))
        model.set_attn_implementation(REFERENCE_ATTENTION)
        _kernels_model.update(model=model, kernels=kernels, name=name)
    return _kernels_model


def kernels_case(prompt: torch.Tensor, new_tokens: int, forced: torch.Tensor) -> dict:
    """:func:`kernels_run` on the kit's model with the student's kernels, as data: the greedy
    ``tokens``, the teacher-forced logits ``tf`` (``prefill``, ``steps``), the kernel ``calls``
    and the generate() times."""
    g = kernels_model()
    custom, tf, calls = kernels_run(g["model"], g["kernels"], g["name"], prompt, new_tokens, forced)
    return dict(tokens=custom.tokens, tf=dict(prefill=tf["prefill"], steps=tf["steps"]),
                calls={k: int(v) for k, v in calls.items()}, prefill_s=float(custom.prefill_s),
                decode_s=float(custom.decode_s))


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
