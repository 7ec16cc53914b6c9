"""Task 5: multi-head attention with a KV cache, for prefill and decode (provided).

You don't edit this file: it calls the two kernels you write in
``task5/attention_kernel.cu`` and the task-4 prefill kernel.

The KV cache is a pair ``(k_cache, v_cache)`` of preallocated float32 tensors of
shape ``[B, max_seq_len, H]``. Positions ``[0, current_pos)`` already hold the
keys and values of earlier tokens; a call with ``S`` new tokens writes theirs at
``[current_pos, current_pos + S)`` and attends over ``[0, current_pos + S)``.

* Prefill (``decode=False``): project the prompt, write its K/V into the cache
  with ``update_kv_cache``, and run the task-4 FlashAttention kernel.
* Decode (``decode=True``, ``S`` must be 1): project the one new token, append
  its K/V with ``update_kv_cache``, and run ``custom_flash_attention_decode``
  directly on the cache (no copy of the prefix), over its first
  ``current_pos + 1`` rows.

Queries are always the LAST ``S`` positions of the keys they see: with the
causal mask, query row ``i`` sees keys ``0 .. current_pos + i``. For a single
decode query that is every valid key, so ``causal`` changes nothing in decode.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.argument_checks import check_heads, check_hidden_states

def _extension(name: str):
    """Build (first call only) and import one of the kit's CUDA extensions."""
    from harness.build import extension

    return extension(name)


def flash_extension():
    """Task 4's prefill kernel: ``custom_flash_attention(q, k, v, num_heads, causal)``."""
    return _extension("custom_flash_attention")


def decode_extension():
    """Task 5's kernels: ``update_kv_cache`` and ``custom_flash_attention_decode``."""
    return _extension("custom_flash_attention_decode")


def new_kv_cache(batch: int, max_seq_len: int, hidden_dim: int, device="cuda", fill=None):
    """A ``(k_cache, v_cache)`` pair of ``[batch, max_seq_len, hidden_dim]`` float32 tensors.

    Unwritten rows hold whatever the allocator left there (``fill`` sets them,
    e.g. ``float("nan")`` in the tests, to catch reads past the valid prefix).
    """
    shape = (batch, max_seq_len, hidden_dim)
    if fill is None:
        return torch.empty(shape, device=device), torch.empty(shape, device=device)
    return torch.full(shape, fill, device=device), torch.full(shape, fill, device=device)


def prefill_attention(q, k, v, k_cache, v_cache, current_pos: int, num_heads: int, causal: bool):
    """Task-4 attention of ``q [B, S, H]`` over cache rows ``[0, current_pos + S)``.

    ``k``, ``v`` are this call's own keys and values (already written to the
    cache). The task-4 kernel takes queries and keys of the same length. With an
    empty prefix (``current_pos == 0``) that is the prompt itself. After a cached
    prefix, the queries are padded at the front with ``current_pos`` rows (whose
    outputs are dropped): padded row ``current_pos + i`` sees exactly the keys
    ``0 .. current_pos + i`` under the causal mask, which is what the real row
    ``i`` must see (and every key without it).
    """
    flash = flash_extension()
    if current_pos == 0:
        return flash.custom_flash_attention(q.contiguous(), k.contiguous(), v.contiguous(), num_heads, causal)
    b, s, h = q.shape
    end = current_pos + s
    padded = torch.zeros(b, end, h, device=q.device, dtype=q.dtype)
    padded[:, current_pos:] = q
    out = flash.custom_flash_attention(
        padded, k_cache[:, :end].contiguous(), v_cache[:, :end].contiguous(), num_heads, causal
    )
    return out[:, current_pos:]


class CustomFlashAttention(nn.Module):
    """Multi-head attention with a KV cache; weights in ``nn.Linear`` layout (``y = x @ W.T + b``)."""

    def __init__(
        self,
        w_q: torch.Tensor,
        w_k: torch.Tensor,
        w_v: torch.Tensor,
        w_o: torch.Tensor,
        hidden_dim: int,
        num_heads: int,
        b_q: torch.Tensor | None = None,
        b_k: torch.Tensor | None = None,
        b_v: torch.Tensor | None = None,
        b_o: torch.Tensor | None = None,
    ):
        super().__init__()
        self.head_dim = check_heads(hidden_dim, num_heads)
        for name, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v), ("w_o", w_o)):
            if tuple(w.shape) != (hidden_dim, hidden_dim):
                raise ValueError(
                    f"{name} must be [hidden_dim, hidden_dim] = [{hidden_dim}, {hidden_dim}], "
                    f"got {tuple(w.shape)}"
                )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.w_q, self.w_k, self.w_v, self.w_o = w_q, w_k, w_v, w_o
        self.b_q, self.b_k, self.b_v, self.b_o = b_q, b_k, b_v, b_o

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        decode: bool = False,
        current_pos: int = 0,
        causal: bool = False,
    ) -> torch.Tensor:
        """``x [B, S, H]`` -> ``[B, S, H]``; updates ``kv_cache`` in place."""
        check_hidden_states(x, self.hidden_dim, self.w_q)
        if x.dtype != torch.float32:
            raise TypeError(f"x must be float32 (the kernels are float32), got {x.dtype}")
        k_cache, v_cache = kv_cache
        b, s, _ = x.shape
        if tuple(k_cache.shape[::2]) != (b, self.hidden_dim):
            raise ValueError(
                f"the KV cache {tuple(k_cache.shape)} does not match x {tuple(x.shape)}: "
                "it must be [B, max_seq_len, hidden_dim]"
            )
        if decode and s != 1:
            raise ValueError(f"decode processes one new token per sequence, but x has S={s}")

        q = F.linear(x, self.w_q, self.b_q)
        k = F.linear(x, self.w_k, self.b_k)
        v = F.linear(x, self.w_v, self.b_v)

        kernels = decode_extension()
        # Append this call's keys and values to the cache (checks current_pos + S <= max_seq_len).
        kernels.update_kv_cache(k_cache, v_cache, k, v, current_pos)
        if decode:
            attn = kernels.custom_flash_attention_decode(
                q, k_cache, v_cache, self.num_heads, causal, seq_len=current_pos + 1
            )
        else:
            attn = prefill_attention(
                q, k, v, k_cache, v_cache, current_pos, self.num_heads, causal
            )
        return F.linear(attn, self.w_o, self.b_o)
