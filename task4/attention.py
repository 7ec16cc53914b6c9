"""Task 4: multi-head self-attention whose core is your fused FlashAttention kernel (provided).

You don't edit this file: the projections are PyTorch matrix products, and the
attention core, ``softmax(Q K^T / sqrt(head_dim)) V``, is one launch of
``custom_flash_attention`` from your ``task4/attention_kernel.cu`` (extension
``custom_flash_attention``), which never stores the S x S score matrix.

The extension is built (if needed) and imported on the first ``forward``, not
when this module is imported, so importing it never starts a compiler.
"""
from __future__ import annotations

from harness.kernel_attention import KernelAttention

EXTENSION = "custom_flash_attention"


def extension():
    """The compiled extension (built on first use, then cached for this process)."""
    from harness.build import extension as built

    return built(EXTENSION)


#: The bonus part's extension, from task4/attention_kernel_tc.cu (optional: README, Task 4 bonus).
TENSOR_CORE_EXTENSION = "custom_flash_attention_tc"


def tensor_core_extension():
    """The bonus part's compiled extension: ``custom_flash_attention_bf16`` and
    ``custom_flash_attention_3xtf32``, the same interface as ``custom_flash_attention`` on the
    tensor cores (built on first use, then cached for this process)."""
    from harness.build import extension as built

    return built(TENSOR_CORE_EXTENSION)


class CustomFlashAttention(KernelAttention):
    """Multi-head self-attention with given weights (``nn.Linear`` layout: ``q = x @ w_q.T``)
    whose core is your fused kernel of ``task4/attention_kernel.cu``.

    ``x`` must be a float32 CUDA tensor ``[batch, seq_len, hidden_dim]``; head_dim
    (``hidden_dim // num_heads``) may be at most 128.
    """

    def core(self, q, k, v, causal: bool):
        # The attention core: one fused kernel, [B, S, H] in, [B, S, H] out.
        return extension().custom_flash_attention(q, k, v, self.num_heads, causal)
