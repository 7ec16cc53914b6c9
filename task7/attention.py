"""Task 7: your kernels as an attention implementation of Hugging Face transformers (provided).

transformers lets a model's attention layers call any registered function
(``AttentionInterface.register(name, fn)``, then ``attn_implementation=name``).
GPT-2's attention layer projects the input itself (``c_attn``, with its biases),
splits the heads, hands the keys and values to the KV cache (``task7.kv_cache``:
its update is your ``update_kv_cache`` kernel) and then calls the registered
function with::

    fn(module, query, key, value, attention_mask, dropout=0.0, scaling=1/sqrt(head_dim), **kwargs)

* ``query``: ``[B, heads, S, head_dim]``, this call's ``S`` new positions;
* ``key``, ``value``: ``[B, heads, L, head_dim]``, what the cache returned: a
  view of the first ``L`` rows of its ``[B, max_seq_len, H]`` buffers (no copy);
* it must return ``(out [B, S, heads, head_dim], attention weights or None)``.

The kernels take the kit's ``[B, S, H]`` layout (``H = heads * head_dim``, head
``h`` owning the columns ``[h*head_dim, (h+1)*head_dim)``), so the function
undoes the head split: ``query.transpose(1, 2)`` is ``[B, S, heads, head_dim]``,
and merging the last two dimensions gives ``[B, S, H]``. For the cache's keys
that merge is a *view* with row stride ``H`` and batch stride ``max_seq_len * H``:
exactly the strided cache the decode kernel reads in place.

* Prefill (``S == L``: the whole prompt, the cache was empty; also a one-token
  prompt): the task-4 kernel
  ``custom_flash_attention(q, k, v, num_heads, causal=True)``; it takes
  contiguous tensors of equal shapes, so q, k and v are made contiguous.
* Decode (``S == 1 < L``): the task-5 kernel
  ``custom_flash_attention_decode(q, k_cache_view, v_cache_view, num_heads, True, seq_len=L)``,
  reading the cache where it is.
* ``1 < S < L`` (a chunk after a cached prefix, e.g. chunked prefill): the task-4
  kernel with the queries padded at the front, as in ``task5/attention.py``.

The mask: a name transformers has no mask function for gets ``attention_mask=None``
(masking_utils: "custom attention without equivalent mask creation"), so the
kernels apply the causal mask themselves. Padding is not supported: every
prompt of a batch has the same length (``task7.prompts`` cuts them so).

GPT-2's softmax scale is ``1/sqrt(head_dim)`` (``scale_attn_weights``), which the
kernels use; another scale (``scale_attn_by_inverse_layer_idx``) is folded into q.

:class:`Kernels` wraps the three kernel calls with counters, so a run can prove
which kernel ran how often. :func:`torch_stand_in` gives the same three calls in
plain PyTorch (CPU or GPU), with the kernels' input checks, for testing the
plumbing without CUDA: it is never what the verdict measures.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch

#: The name the kernels are registered under (``attn_implementation``).
ATTN_NAME = "attention_kit_kernels"
#: The name of the plain-PyTorch stand-in (plumbing tests only).
STAND_IN_NAME = "attention_kit_torch_stand_in"


@dataclass
class Kernels:
    """The three kernel calls task 7 uses, and how often each ran."""

    flash: Callable  # custom_flash_attention(q, k, v, num_heads, causal) -> [B, S, H]
    update_kv_cache: Callable  # (k_cache, v_cache, k, v, current_pos) -> None, in place
    decode: Callable  # custom_flash_attention_decode(q, k, v, num_heads, causal, seq_len=...) -> [B, 1, H]
    label: str = "your CUDA kernels"
    calls: Counter = field(default_factory=Counter)

    def reset_counts(self) -> None:
        self.calls.clear()


def cuda_kernels() -> Kernels:
    """Your task-4 and task-5 extensions (built on first use, like ``python -m task5.compile``)."""
    from harness.build import load_extension

    flash = load_extension("custom_flash_attention")
    decode = load_extension("custom_flash_attention_decode")
    return Kernels(
        flash=flash.custom_flash_attention,
        update_kv_cache=decode.update_kv_cache,
        decode=decode.custom_flash_attention_decode,
        label="your CUDA kernels (custom_flash_attention, custom_flash_attention_decode)",
    )


# ------------------------------------------------------------------ the PyTorch stand-in
def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, s, h = x.shape
    return x.reshape(b, s, num_heads, h // num_heads).transpose(1, 2)


def _attend(q, k, v, num_heads: int, causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in [B, S, H] layout; the queries are the LAST rows of the keys."""
    b, s, h = q.shape
    d = h // num_heads
    scores = _heads(q, num_heads) @ _heads(k, num_heads).transpose(-1, -2) / math.sqrt(d)
    if causal:
        n = k.shape[1]
        mask = torch.ones(s, n, dtype=torch.bool, device=q.device).triu(n - s + 1)
        scores = scores.masked_fill(mask, float("-inf"))
    out = scores.softmax(-1) @ _heads(v, num_heads)
    return out.transpose(1, 2).reshape(b, s, h)


def _stand_in_flash(q, k, v, num_heads, causal=False):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3 or not t.is_contiguous() or t.shape != q.shape or t.dtype != torch.float32:
            raise RuntimeError(
                f"custom_flash_attention: {name} must be a contiguous float32 [B, S, H] tensor of q's shape "
                f"{tuple(q.shape)}, got {tuple(t.shape)} {t.dtype} contiguous={t.is_contiguous()}"
            )
    return _attend(q, k, v, num_heads, causal)


def _stand_in_update(k_cache, v_cache, k, v, current_pos):
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()) or k_cache.shape != v_cache.shape:
        raise RuntimeError("update_kv_cache: the caches must be contiguous tensors of one shape")
    if k.dim() == 2:
        k, v = k[:, None], v[:, None]
    b, max_len, h = k_cache.shape
    if k.shape != v.shape or k.dim() != 3 or k.shape[0] != b or k.shape[2] != h or k.stride(2) != 1:
        raise RuntimeError(f"update_kv_cache: k, v must be [B={b}, S_new, H={h}] with unit column stride, got {tuple(k.shape)}")
    s = k.shape[1]
    if current_pos < 0 or current_pos + s > max_len:
        raise RuntimeError(f"update_kv_cache: rows [{current_pos}, {current_pos + s}) do not fit max_seq_len={max_len}")
    k_cache[:, current_pos : current_pos + s] = k
    v_cache[:, current_pos : current_pos + s] = v


def _stand_in_decode(q, k, v, num_heads, causal=False, seq_len=-1, num_splits=0):
    if q.dim() == 2:
        q = q[:, None]
    if q.dim() != 3 or q.shape[1] != 1:
        raise RuntimeError(f"custom_flash_attention_decode: q must be [B, 1, H], got {tuple(q.shape)}")
    if k.shape != v.shape or k.dim() != 3 or k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        raise RuntimeError(f"custom_flash_attention_decode: k, v must be [B, L, H], got {tuple(k.shape)}")
    if k.stride(2) != 1 or v.stride(2) != 1:
        raise RuntimeError("custom_flash_attention_decode: k and v need unit stride in the last dimension")
    n = k.shape[1] if seq_len < 0 else seq_len
    if not 1 <= n <= k.shape[1]:
        raise RuntimeError(f"custom_flash_attention_decode: seq_len={seq_len} outside [1, {k.shape[1]}]")
    return _attend(q, k[:, :n], v[:, :n], num_heads, causal=False)


def torch_stand_in() -> Kernels:
    """Plain-PyTorch versions of the three kernels, with their input checks (not your kernels)."""
    return Kernels(
        flash=_stand_in_flash,
        update_kv_cache=_stand_in_update,
        decode=_stand_in_decode,
        label="a plain-PyTorch stand-in for the kernels (plumbing check only)",
    )


# ------------------------------------------------------------------ the attention function
def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, S, d] -> [B, S, heads*d]: a view whenever the memory allows (always for the cache)."""
    b, nh, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, nh * d)


def kernel_attention_forward(
    kernels: Kernels,
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The registered attention function: transformers' layout in, the kernels in the middle."""
    if attention_mask is not None:
        raise ValueError(
            f"{ATTN_NAME}: got an attention mask, but the kernels only apply the causal mask "
            "(prompts must all have the same length, without padding)"
        )
    if dropout:
        raise ValueError(f"{ATTN_NAME} is for inference: call model.eval() (attention dropout {dropout})")
    if not getattr(module, "is_causal", True):
        raise ValueError(f"{ATTN_NAME} only supports causal self-attention")
    b, nh, s, d = query.shape
    n = key.shape[2]
    if key.shape[:2] != (b, nh) or key.shape[-1] != d or value.shape != key.shape:
        raise ValueError(
            f"{ATTN_NAME}: key {tuple(key.shape)} / value {tuple(value.shape)} do not match query {tuple(query.shape)} "
            "(grouped-query attention is not supported)"
        )
    if n < s:
        raise ValueError(f"{ATTN_NAME}: {s} queries but only {n} keys")
    q = _merge_heads(query)
    if scaling is not None and abs(scaling * math.sqrt(d) - 1.0) > 1e-6:
        q = q * (scaling * math.sqrt(d))  # the kernels scale by 1/sqrt(head_dim)
    k = _merge_heads(key)  # a view of the cache: [B, L, H], row stride H
    v = _merge_heads(value)
    if s == n:  # the prompt, on an empty cache (a one-token prompt too)
        kernels.calls["prefill"] += 1
        out = kernels.flash(q.contiguous(), k.contiguous(), v.contiguous(), nh, True)
    elif s == 1:  # one new token over the cache, read in place
        kernels.calls["decode"] += 1
        out = kernels.decode(q, k, v, nh, True, seq_len=n)
    else:  # a chunk of s queries after n - s cached keys: pad the queries at the front
        kernels.calls["prefill_after_prefix"] += 1
        padded = q.new_zeros(b, n, nh * d)
        padded[:, n - s :] = q
        out = kernels.flash(padded, k.contiguous(), v.contiguous(), nh, True)[:, n - s :]
    return out.reshape(b, s, nh, d), None


def register(kernels: Kernels, name: str = ATTN_NAME) -> str:
    """Register ``kernels`` with transformers under ``name``; set ``attn_implementation=name`` to use it."""
    from transformers import AttentionInterface

    def attention(module, query, key, value, attention_mask, **kwargs):
        return kernel_attention_forward(kernels, module, query, key, value, attention_mask, **kwargs)

    attention.kernels = kernels  # type: ignore[attr-defined]
    AttentionInterface.register(name, attention)
    return name
