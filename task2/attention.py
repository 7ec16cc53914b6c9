"""Task 2: multi-head self-attention whose core runs on your CUDA kernels (provided).

You don't edit this file: the projections are PyTorch matrix products, and the
attention core, ``softmax(Q K^T / sqrt(head_dim)) V``, is ``custom_attention``
from your ``task2/attention_kernel.cu`` (extension ``custom_self_attention``):
GEMM_NT, then ``scale_and_causal_mask``, softmax and GEMM_NN.

The extension is built (if needed) and imported on the first ``forward``, not
when this module is imported, so importing it never starts a compiler.
"""
from __future__ import annotations

from torch import nn

from harness.argument_checks import check_heads, check_hidden_states

EXTENSION = "custom_self_attention"


def extension():
    """The compiled extension (built on first use, then cached for this process)."""
    from harness.build import extension as built

    return built(EXTENSION)


class CustomSelfAttention(nn.Module):
    """Multi-head self-attention with given weights (``nn.Linear`` layout: ``q = x @ w_q.T``).

    ``x`` must be a float32 CUDA tensor ``[batch, seq_len, hidden_dim]``.
    """

    def __init__(self, w_q, w_k, w_v, w_o, hidden_dim, num_heads):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = check_heads(hidden_dim, num_heads)
        self.w_q, self.w_k, self.w_v, self.w_o = w_q, w_k, w_v, w_o

    def forward(self, x, causal=False):
        check_hidden_states(x, self.hidden_dim, self.w_q)
        # Projections in PyTorch: [B, S, H] each, contiguous.
        q = x @ self.w_q.T
        k = x @ self.w_k.T
        v = x @ self.w_v.T
        # The attention core on your kernels: [B, S, H] in, [B, S, H] out.
        out = extension().custom_attention(
            q.contiguous(), k.contiguous(), v.contiguous(), self.num_heads, bool(causal)
        )
        return out @ self.w_o.T
