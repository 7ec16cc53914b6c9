"""Task 1: multi-head self-attention in plain PyTorch (reference solution)."""
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

        # Step 1: split the hidden dimension into heads: [B, S, heads, head_dim].
        q = q.view(batch_size, seq_len, self.num_heads, self.head_dim)
        k = k.view(batch_size, seq_len, self.num_heads, self.head_dim)
        v = v.view(batch_size, seq_len, self.num_heads, self.head_dim)

        # Step 2: put the heads before the sequence: [B, heads, S, head_dim], so the
        # matrix products below run one independent attention per (batch, head).
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

        # Step 3: scaled scores [B, heads, S, S]. Dividing by sqrt(head_dim) keeps
        # their spread near 1, so the softmax does not saturate.
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)

        # Step 4: a query may not look at later positions. triu(..., diagonal=1)
        # marks exactly the entries above the diagonal; -inf becomes 0 after softmax.
        if causal:
            mask = torch.triu(
                torch.ones(seq_len, seq_len, dtype=torch.bool, device=x.device), diagonal=1
            )
            scores = scores.masked_fill(mask, float("-inf"))

        # Step 5: each row of scores becomes a probability distribution over keys.
        probs = F.softmax(scores, dim=-1)

        # Step 6: mix the values with those probabilities: [B, heads, S, head_dim].
        out = probs @ v

        # Merge the heads back into [B, S, H] and apply the output projection.
        out = out.transpose(1, 2).contiguous().view(batch_size, seq_len, self.hidden_dim)
        return out @ self.w_o.T
