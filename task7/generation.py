"""Task 7: run the model, through ``model.generate()`` timed per phase, or teacher-forced (provided).

* :func:`generate`: prefill tokens/s (batch x prompt length / time to the first
  logits) and decode tokens/s (batch x steps / time of the decode steps);
* :func:`teacher_forced`: the prefill of the prompt, then one decode step per
  given token, so two paths fed the same tokens give logits to compare;
* :func:`cache_argument` / :func:`returned_cache`: the KV cache under the name
  this transformers version uses.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from harness.compare import strict_float32

#: Tokens each case generates.
NEW_TOKENS = 64


@dataclass
class Generation:
    tokens: torch.Tensor  # [B, N] new tokens
    prefill_s: float
    decode_s: float
    batch: int
    prompt_len: int

    @property
    def new_tokens(self) -> int:
        return self.tokens.shape[1]

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.batch * self.prompt_len / self.prefill_s if self.prefill_s > 0 else math.inf

    @property
    def decode_tokens_per_s(self) -> float:
        steps = self.new_tokens - 1
        return self.batch * steps / self.decode_s if steps > 0 and self.decode_s > 0 else math.nan


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def generate(model, prompt: torch.Tensor, new_tokens: int, *, cache=None, sample: dict | None = None,
             seed: int = 0) -> Generation:
    """``model.generate()`` from ``prompt``: greedy, or sampled with ``sample`` (temperature, top_k) and ``seed``.

    A logits processor stamps the time after every forward pass (synchronising
    the GPU), so the first stamp ends the prefill and the others time the decode
    steps. ``eos_token_id=None``: always ``new_tokens`` tokens.
    """
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []
    device = prompt.device

    class _Clock(LogitsProcessor):
        def __call__(self, input_ids, scores):
            _sync(device)
            stamps.append(time.perf_counter())
            return scores

    kwargs = dict(do_sample=False)
    if sample:
        kwargs = dict(do_sample=True, temperature=sample["temperature"], top_k=sample["top_k"])
        torch.manual_seed(seed)
    with torch.no_grad(), strict_float32():
        _sync(device)
        t0 = time.perf_counter()
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=model.generation_config.pad_token_id,
            **cache_argument(model, cache),
            logits_processor=LogitsProcessorList([_Clock()]),
            **kwargs,
        )
    b, s = prompt.shape
    return Generation(out[:, s:], stamps[0] - t0, stamps[-1] - stamps[0], b, s)


def cache_argument(model, cache) -> dict:
    """The KV cache as this transformers version's ``forward`` and ``generate`` take it: ``cache=``
    (``past_key_values`` is deprecated from 5.2x and removed in 5.40), or ``past_key_values=`` in
    the releases before the rename."""
    import inspect

    return {"cache": cache} if "cache" in inspect.signature(model.forward).parameters else {"past_key_values": cache}


def returned_cache(out):
    """The cache a forward pass returns, under either name (see :func:`cache_argument`)."""
    return out["cache"] if "cache" in out else out.past_key_values


def teacher_forced(model, prompt: torch.Tensor, forced: torch.Tensor, cache=None) -> dict:
    """Prefill ``prompt``, then one decode step per token of ``forced[:, :-1]``.

    Returns ``prefill`` ``[B, S, V]`` (the logits of every prompt position) and
    ``steps`` ``[B, N-1, V]`` (decode step t's logits, t = 1 .. N-1, for the
    position after ``forced[:, t-1]``), in the model's dtype.
    """
    with torch.no_grad(), strict_float32():
        out = model(input_ids=prompt, **cache_argument(model, cache), use_cache=True)
        prefill, cache = out.logits, returned_cache(out)
        steps = []
        for t in range(forced.shape[1] - 1):
            out = model(input_ids=forced[:, t : t + 1], **cache_argument(model, cache), use_cache=True)
            steps.append(out.logits[:, -1])
            cache = returned_cache(out)
    v = prefill.shape[-1]
    b = prompt.shape[0]
    return dict(prefill=prefill, steps=torch.stack(steps, 1) if steps else prefill.new_zeros(b, 0, v))
