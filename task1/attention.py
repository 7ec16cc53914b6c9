"""Task 1: multi-head self-attention in plain PyTorch.

Fill in the six steps of ``forward`` (README, Task 1). Run ``python -m task1.test``
to check your work against a float64 reference and ``torch.nn.MultiheadAttention``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.argument_checks import check_heads, check_hidden_states


class CustomSelfAttention(nn.Module):
    """Multi-head self-attention with given weights (``nn.Linear`` layout: ``q = x @ w_q.T``)."""

    def __init__(self, w_q, w_k, w_v, w_o, hidden_dim, num_heads):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = check_heads(hidden_dim, num_heads)
        self.w_q, self.w_k, self.w_v, self.w_o = w_q, w_k, w_v, w_o

    def forward(self, x, causal=False):
        check_hidden_states(x, self.hidden_dim, self.w_q)
        batch_size, seq_len, _ = x.shape

        # Project the input to queries, keys and values: [B, S, H] each.
        q = x @ self.w_q.T
        k = x @ self.w_k.T
        v = x @ self.w_v.T

        # TODO step 1: split the heads with .view() -> [B, S, num_heads, head_dim].
        # TODO step 2: swap the sequence and head dimensions with .transpose()
        #              -> [B, num_heads, S, head_dim].
        # TODO step 3: scores = Q K^T / sqrt(head_dim)   (the @ operator, math.sqrt).
        # TODO step 4: if causal, mask the entries above the diagonal: build the mask
        #              with torch.triu(..., diagonal=1) and fill it with float("-inf")
        #              using scores.masked_fill(mask, value).
        # TODO step 5: softmax over the last dimension (F.softmax).
        # TODO step 6: out = probabilities @ V   -> [B, num_heads, S, head_dim].
        raise NotImplementedError(
            "not implemented yet: CustomSelfAttention.forward in task1/attention.py "
            "(README, Task 1, steps 1-6)"
        )

        # Provided: merge the heads back into [B, S, H] and apply the output projection.
        out = out.transpose(1, 2).contiguous().view(batch_size, seq_len, self.hidden_dim)
        return out @ self.w_o.T
