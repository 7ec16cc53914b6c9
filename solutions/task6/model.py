"""Task 6: a small decoder-only transformer that runs prefill and decode on your kernels.

You write ONE method: ``customAttention.forward`` (README, Task 6). Everything
else is provided.

The model: token embedding, ``num_layers`` pre-norm decoder layers
(LayerNorm -> attention with RoPE on q and k -> residual add; LayerNorm ->
SwiGLU MLP with a 4H intermediate -> residual add), a final LayerNorm and the LM
head. All float32, weights in ``nn.Linear`` layout.

Inference has two phases:
* prefill: ``model(prompt_tokens)`` with no cache. The model allocates one
  ``(k_cache, v_cache)`` pair per layer, each ``[B, max_seq_len, H]``, and every
  layer attends over the whole prompt (causal) with the task-4 kernel;
* decode: ``model(next_token[:, None], kv_cache, current_pos)``, one token per
  sequence at position ``current_pos``. Each layer appends the token's K/V to
  its cache with ``update_kv_cache`` and attends over the cache's first
  ``current_pos + 1`` rows with the task-5 decode kernel.

Decode is limited by how fast the weights stream from memory, so in decode the
linear layers (with RoPE and SwiGLU fused in) and the LayerNorms run on
provided kernels, ``decode_linear.py``; they compute what the plain-PyTorch
lines next to each call compute.

``model.attention_backend`` selects the attention: ``"custom"`` (your
``customAttention.forward``), ``"torch"`` (plain PyTorch, the reference the
test compares you with) or ``"torch64"`` (the same with the attention core in
float64, which the test uses to measure PyTorch's own float32 error).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import decode_linear
from .rope import RotaryEmbedding

BACKENDS = ("custom", "torch", "torch64")

_extensions: dict[str, object] = {}


def _extension(name: str):
    """Build (first call only) and import one of the kit's CUDA extensions."""
    if name not in _extensions:
        from harness.build import load_extension

        _extensions[name] = load_extension(name)
    return _extensions[name]


def flash_extension():
    """Task 4: ``custom_flash_attention(q, k, v, num_heads, causal)`` on ``[B, S, H]`` tensors."""
    return _extension("custom_flash_attention")


def decode_extension():
    """Task 5: ``update_kv_cache(k_cache, v_cache, k, v, current_pos)`` and
    ``custom_flash_attention_decode(q, k_cache, v_cache, num_heads, causal, seq_len=...)``."""
    return _extension("custom_flash_attention_decode")


def torch_attention(q, k, v, num_heads: int, dtype=torch.float32) -> torch.Tensor:
    """Causal attention in plain PyTorch: ``q [B, S, H]`` over ``k, v [B, L, H]`` (``L >= S``).

    The queries are the LAST ``S`` positions: row ``i`` sees keys ``0 .. L - S + i``.
    The core runs in ``dtype``; the result has ``q``'s dtype.
    """
    b, s, h = q.shape
    length = k.shape[1]
    d = h // num_heads

    def heads(t, n):
        return t.reshape(b, n, num_heads, d).transpose(1, 2).to(dtype)

    scores = heads(q, s) @ heads(k, length).transpose(-1, -2) / math.sqrt(d)
    if s > 1:
        rows = torch.arange(s, device=q.device)[:, None] + (length - s)
        cols = torch.arange(length, device=q.device)[None, :]
        scores = scores.masked_fill(cols > rows, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ heads(v, length)
    return out.transpose(1, 2).reshape(b, s, h).to(q.dtype)


class customAttention(nn.Module):
    """Multi-head self-attention with RoPE and a KV cache."""

    def __init__(self, hidden_dim: int, num_heads: int, rotary: RotaryEmbedding):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        self.hidden_dim, self.num_heads = hidden_dim, num_heads
        self.head_dim = hidden_dim // num_heads
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim, bias=False)  # W_q, W_k, W_v stacked
        self.out = decode_linear.Linear(hidden_dim, hidden_dim)  # nn.Linear, decode kernel for a few rows
        self.rotary = rotary

    def project(self, x: torch.Tensor, current_pos: int):
        """``x [B, S, H]`` -> contiguous ``q, k, v [B, S, H]``, with RoPE applied to q and k
        for positions ``current_pos .. current_pos + S - 1``.

        That is ``q, k, v = self.qkv(x).split(H)``, then ``self.rotary`` on ``q`` and ``k``;
        in decode one provided kernel does all of it (decode_linear.qkv_rope)."""
        return decode_linear.qkv_rope(x, self.qkv.weight, self.rotary.table, current_pos, self.num_heads)

    def torch_forward(self, x, kv_cache, current_pos: int, core_dtype=torch.float32):
        """The reference path: the same projections and cache, attention in plain PyTorch."""
        s = x.shape[1]
        q, k, v = self.project(x, current_pos)
        k_cache, v_cache = kv_cache
        k_cache[:, current_pos : current_pos + s] = k
        v_cache[:, current_pos : current_pos + s] = v
        end = current_pos + s
        attn = torch_attention(q, k_cache[:, :end], v_cache[:, :end], self.num_heads, core_dtype)
        return self.out(attn)

    def forward(self, x: torch.Tensor, kv_cache, current_pos: int, decode: bool) -> torch.Tensor:
        """Attention of ``x [B, S, H]`` (already normalised) with this layer's cache; returns ``[B, S, H]``.

        ``kv_cache = (k_cache, v_cache)``, each ``[B, max_seq_len, H]``; rows
        ``[0, current_pos)`` hold earlier tokens. Prefill (``decode=False``)
        always starts at ``current_pos = 0``; decode has ``S = 1``. Attention is
        causal. Write this call's K/V into rows ``[current_pos, current_pos + S)``.
        """
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


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with a ``4 * hidden_dim`` intermediate; gate and up in one matmul.

    ``forward(x, residual)`` adds ``residual`` to the result (in decode, inside the same kernel).
    """

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.inner = 4 * hidden_dim
        self.gate_up = nn.Linear(hidden_dim, 2 * self.inner, bias=False)
        self.down = nn.Linear(self.inner, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        # = residual + self.down(F.silu(gate) * up), with gate, up = self.gate_up(x).split(self.inner, -1)
        hidden = decode_linear.swiglu(x, self.gate_up.weight)
        return decode_linear.linear(hidden, self.down.weight, residual)


class DecoderLayer(nn.Module):
    def __init__(self, hidden_dim: int, num_heads: int, rotary: RotaryEmbedding):
        super().__init__()
        self.norm1 = decode_linear.LayerNorm(hidden_dim)
        self.attn = customAttention(hidden_dim, num_heads, rotary)
        self.norm2 = decode_linear.LayerNorm(hidden_dim)
        self.mlp = SwiGLU(hidden_dim)

    def forward(self, x, kv_cache, current_pos: int, decode: bool, backend: str):
        h = self.norm1(x)
        if backend == "custom":
            a = self.attn(h, kv_cache, current_pos, decode)
        else:
            core = torch.float64 if backend == "torch64" else torch.float32
            a = self.attn.torch_forward(h, kv_cache, current_pos, core)
        x = x + a
        return self.mlp(self.norm2(x), residual=x)


class customModel(nn.Module):
    """A decoder-only transformer: ``forward(tokens, kv_cache=None, current_pos=0) -> (logits, kv_cache)``."""

    def __init__(self, hidden_dim, num_heads, num_layers, vocab_size, max_seq_len=4096):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        self.hidden_dim, self.num_heads, self.num_layers = hidden_dim, num_heads, num_layers
        self.vocab_size, self.max_seq_len = vocab_size, max_seq_len
        self.attention_backend = "custom"
        self.embed = nn.Embedding(vocab_size, hidden_dim)
        self.rotary = RotaryEmbedding(hidden_dim // num_heads, max_seq_len)
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, num_heads, self.rotary) for _ in range(num_layers)
        )
        self.norm = decode_linear.LayerNorm(hidden_dim)
        self.lm_head = decode_linear.Linear(hidden_dim, vocab_size)

    def set_attention_backend(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
        self.attention_backend = backend

    def new_kv_cache(self, batch: int, max_len: int | None = None):
        """One ``(k_cache, v_cache)`` pair per layer, ``[batch, max_len, H]`` in the model's dtype, uninitialised."""
        max_len = self.max_seq_len if max_len is None else max_len
        if not 0 < max_len <= self.max_seq_len:
            raise ValueError(f"max_len must be in 1..{self.max_seq_len} (the RoPE table), got {max_len}")
        like = dict(device=self.embed.weight.device, dtype=self.embed.weight.dtype)
        shape = (batch, max_len, self.hidden_dim)
        return [
            (torch.empty(shape, **like), torch.empty(shape, **like))
            for _ in range(self.num_layers)
        ]

    def forward(self, tokens: torch.Tensor, kv_cache=None, current_pos: int = 0):
        """``tokens [B, S]`` (int64) -> ``(logits [B, S, vocab], kv_cache)``.

        No cache: prefill from position 0 into a new cache. A cache and ``S == 1``:
        decode the token at ``current_pos``.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, seq_len], got {tuple(tokens.shape)}")
        b, s = tokens.shape
        decode = kv_cache is not None and s == 1
        if kv_cache is None:
            kv_cache = self.new_kv_cache(b)
        if len(kv_cache) != self.num_layers:
            raise ValueError(f"kv_cache has {len(kv_cache)} layers, the model {self.num_layers}")
        cache_len = kv_cache[0][0].shape[1]
        if tuple(kv_cache[0][0].shape) != (b, cache_len, self.hidden_dim):
            raise ValueError(
                f"kv_cache entries are {tuple(kv_cache[0][0].shape)}, expected "
                f"[{b}, max_len, {self.hidden_dim}]"
            )
        if not decode and current_pos != 0:
            raise ValueError("prefill (more than one token) must start at current_pos=0")
        if current_pos < 0 or current_pos + s > cache_len:
            raise ValueError(
                f"tokens at positions [{current_pos}, {current_pos + s}) do not fit the "
                f"KV cache of {cache_len} positions"
            )
        x = self.embed(tokens)
        for layer, cache in zip(self.layers, kv_cache):
            x = layer(x, cache, current_pos, decode, self.attention_backend)
        return self.lm_head(self.norm(x)), kv_cache
