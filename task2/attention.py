"""Task 2: multi-head self-attention whose core runs on your CUDA kernels (provided).

You don't edit this file: the projections are PyTorch matrix products, and the
attention core, ``softmax(Q K^T / sqrt(head_dim)) V``, is ``custom_attention``
from your ``task2/attention_kernel.cu`` (extension ``custom_self_attention``):
GEMM_NT, then ``scale_and_causal_mask``, softmax and GEMM_NN.

The extension is built (if needed) and imported on the first ``forward``, not
when this module is imported, so importing it never starts a compiler.
"""
from __future__ import annotations

from harness.kernel_attention import KernelAttention

EXTENSION = "custom_self_attention"


def extension():
    """The compiled extension (built on first use, then cached for this process)."""
    from harness.build import extension as built

    return built(EXTENSION)


class CustomSelfAttention(KernelAttention):
    """Multi-head self-attention with given weights (``nn.Linear`` layout: ``q = x @ w_q.T``)
    whose core runs on your kernels of ``task2/attention_kernel.cu``.

    ``x`` must be a float32 CUDA tensor ``[batch, seq_len, hidden_dim]``.
    """

    def core(self, q, k, v, causal: bool):
        # The attention core on your kernels: [B, S, H] in, [B, S, H] out.
        return extension().custom_attention(q, k, v, self.num_heads, causal)
