"""Task 6: a small decoder-only transformer that runs prefill and decode on your kernels.

You write ONE method: ``customAttention.forward`` (README, Task 6). The rest of
the model is provided in ``task6/transformer.py`` (importable from here too,
under the original assignment's names): ``AttentionBase`` gives this class its
weights, ``project`` (the q/k/v projections with RoPE) and ``torch_forward``
(the same layer in plain PyTorch: the reference your result must match).

In the model, each decoder layer calls
``attn(h, kv_cache, decode=decode, current_pos=current_pos)``:

* prefill (``decode=False``, the whole prompt, ``current_pos = 0``): store the
  prompt's K/V in the cache and attend over the prompt with the task-4 kernel;
* decode (``decode=True``, one token per sequence at ``current_pos``): append its
  K/V to the cache with ``update_kv_cache`` and attend over the cache's first
  ``current_pos + 1`` rows with the task-5 decode kernel.
"""
from __future__ import annotations

import torch

from .transformer import (  # noqa: F401 - the provided parts, under the names the assignment uses
    BACKENDS,
    AttentionBase,
    customDecoderLayer,
    customMLP,
    customModel,
    decode_extension,
    flash_extension,
    torch_attention,
)


class customAttention(AttentionBase):
    """Multi-head self-attention with RoPE and a KV cache: ``customAttention(hidden_dim, num_heads)``
    (inside the model: with the model's shared RoPE table)."""

    def forward(self, x: torch.Tensor, kv_cache=None, decode: bool = False, current_pos: int = 0) -> torch.Tensor:
        """Attention of ``x [B, S, H]`` (already normalised) with this layer's cache; returns ``[B, S, H]``.

        ``kv_cache = (k_cache, v_cache)``, each ``[B, max_seq_len, H]``; rows
        ``[0, current_pos)`` hold earlier tokens. Prefill (``decode=False``)
        always starts at ``current_pos = 0``; decode has ``S = 1``. Attention is
        causal. Write this call's K/V into rows ``[current_pos, current_pos + S)``.
        """
        if kv_cache is None:
            raise ValueError("customAttention.forward needs the layer's kv_cache = (k_cache, v_cache)")
        q, k, v = self.project(x, current_pos)
        k_cache, v_cache = kv_cache
        kernels = decode_extension()
        # Both phases store the new keys and values in the cache, in place.
        kernels.update_kv_cache(k_cache, v_cache, k, v, current_pos)
        if decode:
            # One query per sequence, over the cache's first current_pos + 1 rows, read in place.
            attn = kernels.custom_flash_attention_decode(
                q, k_cache, v_cache, self.num_heads, True, seq_len=current_pos + 1
            )
        else:
            # The whole prompt: the task-4 kernel on this call's own q, k, v.
            attn = flash_extension().custom_flash_attention(q, k, v, self.num_heads, True)
        return self.out(attn)
