"""The provided module around a CUDA attention core (tasks 2 and 4): PyTorch projections, then
``core(q, k, v, causal)`` on ``[B, S, hidden]`` tensors, then the output projection.

The tasks' modules (``CustomSelfAttention``, ``CustomFlashAttention``) subclass it and say
only which kernel is their core, so the part around the kernel is written once.
"""
from __future__ import annotations

from torch import nn

from .argument_checks import check_heads, check_hidden_states


class KernelAttention(nn.Module):
    """Multi-head self-attention with given weights (``nn.Linear`` layout: ``q = x @ w_q.T``).

    ``x`` must be a float32 CUDA tensor ``[batch, seq_len, hidden_dim]``.
    """

    def __init__(self, w_q, w_k, w_v, w_o, hidden_dim, num_heads):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = check_heads(hidden_dim, num_heads)
        self.w_q, self.w_k, self.w_v, self.w_o = w_q, w_k, w_v, w_o

    def core(self, q, k, v, causal: bool):
        """The attention core on contiguous ``[B, S, hidden]`` q, k, v: the subclass's kernel."""
        raise NotImplementedError

    def forward(self, x, causal=False):
        check_hidden_states(x, self.hidden_dim, self.w_q)
        # Projections in PyTorch: [B, S, H] each, contiguous (what the kernels index).
        q = x @ self.w_q.T
        k = x @ self.w_k.T
        v = x @ self.w_v.T
        out = self.core(q.contiguous(), k.contiguous(), v.contiguous(), bool(causal))
        return out @ self.w_o.T
