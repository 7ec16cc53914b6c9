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
        # TODO (README, Task 6):
        #   1. q, k, v = self.project(x, current_pos)   (RoPE is already applied to q and k)
        #   2. store k and v in this layer's cache, rows [current_pos, current_pos + S),
        #      with your task-5 kernel: decode_extension().update_kv_cache(...)
        #   3. prefill (decode=False): attention over the prompt with your task-4 kernel,
        #      flash_extension().custom_flash_attention(...)
        #      decode (decode=True): attention of the one new query over the cache's valid
        #      rows with your task-5 kernel, decode_extension().custom_flash_attention_decode(...);
        #      pass the cache tensors themselves (no copy) and the number of valid rows
        #   4. return self.out(attention output)
        # self.torch_forward(x, kv_cache, current_pos) does the same with plain PyTorch: your
        # result must match it.
        raise NotImplementedError("not implemented yet: customAttention.forward (README, Task 6)")
