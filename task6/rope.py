"""Rotary position embeddings (RoPE) for the task-6 model (provided).

RoPE tells attention where each token is by rotating its query and key
vectors: within every head, the features are taken in pairs
``(x[2i], x[2i+1])`` and pair ``i`` of the token at position ``p`` is rotated by
the angle ``p * theta_i``, with ``theta_i = base ** (-2i / head_dim)``. The dot
product of a rotated query (position m) and a rotated key (position n) then
depends on the positions only through ``m - n``.

Two things matter for a KV cache:
* keys are rotated BEFORE they are written to the cache (the cache holds
  rotated keys, which never change), values are not rotated;
* a token's rotation uses its absolute position: ``current_pos + s`` for row
  ``s`` of a call, so a decode step must pass the right ``current_pos``.

Implementation: a pair is a complex number ``x[2i] + i*x[2i+1]`` and the
rotation a multiplication by ``exp(i * p * theta_i)``, one elementwise kernel.
"""
from __future__ import annotations

import torch
from torch import nn


def rope_table(head_dim: int, max_seq_len: int, base: float = 10000.0, device=None) -> torch.Tensor:
    """``exp(i * p * theta_j)`` for every position ``p < max_seq_len``: complex64 ``[max_seq_len, head_dim // 2]``."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    # Angles in float64, then rounded once: positions up to 10^5 keep full float32 accuracy.
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
    angles = torch.arange(max_seq_len, dtype=torch.float64, device=device)[:, None] * theta[None, :]
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def check_positions(table: torch.Tensor, current_pos: int, s: int) -> None:
    """Raise ``ValueError`` unless positions ``current_pos .. current_pos + s - 1`` are in ``table``."""
    if current_pos < 0 or current_pos + s > table.shape[0]:
        raise ValueError(
            f"RoPE positions [{current_pos}, {current_pos + s}) exceed the table of "
            f"{table.shape[0]} positions (the model's max_seq_len)"
        )


def apply_rope(x: torch.Tensor, table: torch.Tensor, current_pos: int, num_heads: int) -> torch.Tensor:
    """Rotate ``x [B, S, H]`` (``H = num_heads * head_dim``) for positions ``current_pos .. current_pos + S - 1``.

    Returns a new contiguous tensor of ``x``'s shape and dtype.
    """
    b, s, h = x.shape
    head_dim = h // num_heads
    check_positions(table, current_pos, s)
    rot = table[current_pos : current_pos + s].view(1, s, 1, head_dim // 2)
    if x.dtype == torch.float64:
        rot = rot.to(torch.complex128)
    pairs = torch.view_as_complex(x.reshape(b, s, num_heads, head_dim // 2, 2).contiguous())
    return torch.view_as_real(pairs * rot).reshape(b, s, h)


class RotaryEmbedding(nn.Module):
    """Holds the RoPE table (a buffer, so ``.to(device)`` moves it) and applies it."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("table", rope_table(head_dim, max_seq_len, base), persistent=False)

    def forward(self, x: torch.Tensor, current_pos: int, num_heads: int) -> torch.Tensor:
        return apply_rope(x, self.table, current_pos, num_heads)
