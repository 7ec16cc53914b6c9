"""The task-6 model around your attention (provided; you don't edit this).

``task6/model.py`` holds the one class you complete, ``customAttention``; this
file holds everything else, so the reference the tests compare you with is
never in a file you edit:

* :class:`AttentionBase`: what ``customAttention`` is built on (its weights, the
  projections with RoPE, and :meth:`AttentionBase.torch_forward`, the same layer
  in plain PyTorch);
* :class:`customMLP` (SwiGLU), :class:`customDecoderLayer` and :class:`customModel`:
  token embedding, ``num_layers`` pre-norm decoder layers (LayerNorm -> attention
  with RoPE on q and k -> residual add; LayerNorm -> SwiGLU MLP with a 4H
  intermediate -> residual add), a final LayerNorm and the LM head. All float32,
  weights in ``nn.Linear`` layout;
* :func:`seeded_model` and :func:`run_model`: what the tests and the benchmark
  build and run.

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

``model.attention_backend`` selects the attention: ``"custom"`` (the layer's
``forward``: yours), ``"torch"`` (plain PyTorch, the reference) or ``"torch64"``
(the same with the attention core in float64, which the tests use to measure
PyTorch's own float32 error).
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from . import decode_linear
from .rope import RotaryEmbedding

BACKENDS = ("custom", "torch", "torch64")

def _extension(name: str):
    """Build (first call only) and import one of the kit's CUDA extensions."""
    from harness.build import extension

    return extension(name)


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


class AttentionBase(nn.Module):
    """Multi-head self-attention with RoPE and a KV cache: everything but ``forward``.

    ``rotary`` is the model's shared RoPE table; a layer made on its own
    (``customAttention(hidden_dim, num_heads)``, as the original assignment does)
    makes one for ``max_seq_len`` positions.
    """

    def __init__(self, hidden_dim: int, num_heads: int, rotary: RotaryEmbedding | None = None,
                 max_seq_len: int = 4096):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        self.hidden_dim, self.num_heads = hidden_dim, num_heads
        self.head_dim = hidden_dim // num_heads
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim, bias=False)  # W_q, W_k, W_v stacked
        self.out = decode_linear.Linear(hidden_dim, hidden_dim)  # nn.Linear, decode kernel for a few rows
        self.rotary = rotary if rotary is not None else RotaryEmbedding(self.head_dim, max_seq_len)

    def project(self, x: torch.Tensor, current_pos: int):
        """``x [B, S, H]`` -> contiguous ``q, k, v [B, S, H]``, with RoPE applied to q and k
        for positions ``current_pos .. current_pos + S - 1``.

        That is ``q, k, v = self.qkv(x).split(H)``, then ``self.rotary`` on ``q`` and ``k``;
        in decode one provided kernel does all of it (decode_linear.qkv_rope)."""
        return decode_linear.qkv_rope(x, self.qkv.weight, self.rotary.table, current_pos, self.num_heads)

    def torch_forward(self, x, kv_cache, current_pos: int, core_dtype=torch.float32):
        """The reference path: the same projections and cache, attention in plain PyTorch.

        It calls the provided projections by name (not ``self.project``), so a layer that
        changes its own methods cannot change the path it is compared and timed against."""
        s = x.shape[1]
        q, k, v = AttentionBase.project(self, x, current_pos)
        k_cache, v_cache = kv_cache
        k_cache[:, current_pos : current_pos + s] = k
        v_cache[:, current_pos : current_pos + s] = v
        end = current_pos + s
        attn = torch_attention(q, k_cache[:, :end], v_cache[:, :end], self.num_heads, core_dtype)
        return decode_linear.linear(attn, self.out.weight)

    def forward(self, x, kv_cache=None, decode: bool = False, current_pos: int = 0):
        raise NotImplementedError("not implemented yet: customAttention.forward (README, Task 6)")


class ReferenceAttention(AttentionBase):
    """The layer in plain PyTorch: the tests' reference model is made of these."""

    def forward(self, x, kv_cache=None, decode: bool = False, current_pos: int = 0):
        return self.torch_forward(x, kv_cache, current_pos)


class customMLP(nn.Module):
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


class customDecoderLayer(nn.Module):
    def __init__(self, hidden_dim: int, num_heads: int, rotary: RotaryEmbedding, attention_cls=None):
        super().__init__()
        self.norm1 = decode_linear.LayerNorm(hidden_dim)
        self.attn = (attention_cls or _student_attention())(hidden_dim, num_heads, rotary)
        self.norm2 = decode_linear.LayerNorm(hidden_dim)
        self.mlp = customMLP(hidden_dim)

    def forward(self, x, kv_cache, current_pos: int, decode: bool, backend: str = "custom"):
        h = self.norm1(x)
        if backend == "custom":
            a = self.attn(h, kv_cache, decode=decode, current_pos=current_pos)
        else:
            core = torch.float64 if backend == "torch64" else torch.float32
            a = AttentionBase.torch_forward(self.attn, h, kv_cache, current_pos, core)
        x = x + a
        return self.mlp(self.norm2(x), residual=x)


def _student_attention():
    """``customAttention`` of the file the student edits (from the implementation root: see
    harness.impl; the grader's judge never gets here, it builds its reference explicitly)."""
    from harness.impl import load_module

    return load_module("task6.model").customAttention


class customModel(nn.Module):
    """A decoder-only transformer: ``forward(tokens, kv_cache=None, current_pos=0) -> (logits, kv_cache)``.

    Its layers use ``attention_cls`` (by default ``customAttention`` of ``task6/model.py``).
    """

    def __init__(self, hidden_dim, num_heads, num_layers, vocab_size, max_seq_len=4096, attention_cls=None):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        self.hidden_dim, self.num_heads, self.num_layers = hidden_dim, num_heads, num_layers
        self.vocab_size, self.max_seq_len = vocab_size, max_seq_len
        self.attention_backend = "custom"
        self.embed = nn.Embedding(vocab_size, hidden_dim)
        self.rotary = RotaryEmbedding(hidden_dim // num_heads, max_seq_len)
        attention_cls = attention_cls or _student_attention()
        self.layers = nn.ModuleList(
            customDecoderLayer(hidden_dim, num_heads, self.rotary, attention_cls) for _ in range(num_layers)
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


# ---------------------------------------------------------------- what the tests and the benchmark use
def _parameter_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big") >> 1


@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """Draw every matrix of ``model`` from ``seed`` and the matrix's own name, so that the same seed
    gives the same weights in any process and whatever else was created first: embeddings from
    N(0, 1), linear layers from U(-1/sqrt(in), 1/sqrt(in)) (``nn.Linear``'s default); the
    LayerNorms keep their ones and zeros."""
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        gen = torch.Generator(device=p.device).manual_seed(_parameter_seed(seed, name))
        if isinstance(model.get_submodule(name.rsplit(".", 1)[0]), nn.Embedding):
            p.normal_(generator=gen)
        else:
            bound = 1 / math.sqrt(p.shape[1])
            p.uniform_(-bound, bound, generator=gen)
    return model


def seeded_model(hidden: int, heads: int, layers: int, vocab: int, max_seq_len: int, seed: int,
                 device="cuda", attention_cls=None) -> customModel:
    """The model with weights from ``seed`` (see :func:`init_weights`), made on ``device``, for inference."""
    with torch.device(device):
        model = customModel(hidden, heads, layers, vocab, max_seq_len=max_seq_len, attention_cls=attention_cls)
    return init_weights(model, seed).eval().requires_grad_(False)


def run_model(model, backend, prompt, steps, forced=None, cache=None):
    """Prefill ``prompt``, then ``steps`` decode steps; returns the logits and tokens (no cache).

    The decode inputs are ``forced[:, t]`` when given (teacher forcing: every
    backend sees the same tokens), else the greedy choice of the previous step.
    Returns a dict with the prefill logits ``[B, S, V]``, the decode logits
    ``[steps, B, V]`` and the greedy tokens ``[B, steps + 1]`` (timing is harness.timing's
    job: see model_step).
    """
    from harness.compare import strict_float32

    model.set_attention_backend(backend)
    b, s = prompt.shape
    if cache is None:
        cache = model.new_kv_cache(b, s + steps)
    with torch.no_grad(), strict_float32():
        logits, cache = model(prompt, cache, 0)
        token = logits[:, -1].argmax(-1)
        prefill = logits
        greedy, step_logits = [token], []
        for t in range(steps):
            feed = forced[:, t] if forced is not None else token
            logits, _ = model(feed[:, None], cache, s + t)
            token = logits[:, -1].argmax(-1)
            step_logits.append(logits[:, -1])
            greedy.append(token)
    if prompt.is_cuda:
        torch.cuda.synchronize()
    out = dict(prefill=prefill, steps=torch.stack(step_logits) if step_logits else None,
               tokens=torch.stack(greedy, 1))
    return out


def model_step(tokens, cache, current_pos, model, backend: str):
    """One call of ``model`` with the attention ``backend``: what the timed loops time (inference
    mode and strict float32 set here, in the process the model runs in)."""
    from harness.compare import strict_float32

    model.set_attention_backend(backend)
    with torch.no_grad(), strict_float32():
        return model(tokens, cache, current_pos)[0]
