"""Task 3: FlashAttention-2 forward pass (Algorithm 1) in PyTorch.

Fill in ``online_softmax_step`` and ``CustomFlashAttention._flash_attention``
(README, Task 3), then run ``python -m task3.test``.
"""
import math  # noqa: F401  (you will need it)

import torch
import torch.nn as nn

from harness.argument_checks import check_heads, check_hidden_states


def online_softmax_step(m_prev, l_prev, o_prev, scores, v):
    """Fold one tile of keys into the running softmax state of a tile of queries.

    Arguments (``...`` = any leading batch/head dims, ``r`` rows, ``c`` keys):
      m_prev ``[..., r]``  running row maximum of the scores seen so far (-inf at first)
      l_prev ``[..., r]``  running row sum of exp(score - m_prev) (0 at first)
      o_prev ``[..., r, d]`` running output, NOT yet divided by l (0 at first)
      scores ``[..., r, c]`` this tile's scaled (and masked) scores S_ij
      v      ``[..., c, d]`` this tile's values V_j
    Returns the new ``(m, l, o)`` (Algorithm 1, lines 9-10).
    """
    # TODO (Algorithm 1, line 9): the new running maximum m_new of m_prev and this
    #   tile's row maxima; the tile's exponentials P = exp(scores - m_new); the new
    #   running sum l_new = exp(m_prev - m_new) * l_prev + rowsum(P).
    # TODO (line 10): o_new = diag(exp(m_prev - m_new)) o_prev + P v.
    #   The paper prints diag(...)^-1 here: that inverse is a typo (flash-attention
    #   issue #991). diag(w) A is just A * w.unsqueeze(-1) in PyTorch.
    raise NotImplementedError(
        "not implemented yet: online_softmax_step in task3/attention.py (README, Task 3)"
    )
    return m_new, l_new, o_new


class CustomFlashAttention(nn.Module):
    """Multi-head self-attention computed tile by tile, never holding an S x S matrix."""

    def __init__(self, w_q, w_k, w_v, w_o, hidden_dim, num_heads):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = check_heads(hidden_dim, num_heads)
        self.w_q, self.w_k, self.w_v, self.w_o = w_q, w_k, w_v, w_o

    def _flash_attention(self, q, k, v, T_r=8, T_c=8, causal=False):
        """Attention of ``q, k, v [B, heads, S, d]`` in tiles of ``T_r`` query rows and
        ``T_c`` key rows (the paper's B_r and B_c; 8 by default, as in the original
        assignment). Tiles need not divide S."""
        # TODO: Algorithm 1 of the FlashAttention-2 paper (README, Task 3).
        #  - loop over query tiles of T_r rows (the last one may be shorter than T_r);
        #  - start each with m = -inf, l = 0, o = 0 (one entry per row);
        #  - loop over key/value tiles of T_c rows: scores = Q_i K_j^T / sqrt(head_dim);
        #    with causal=True mask (-inf) the keys after each query's own position,
        #    and skip key tiles that lie entirely after the query tile's last row;
        #  - fold each tile in with online_softmax_step(m, l, o, scores, V_j);
        #  - write o / l for the tile's rows into the output.
        raise NotImplementedError(
            "not implemented yet: CustomFlashAttention._flash_attention in task3/attention.py "
            "(README, Task 3)"
        )
        return out

    def forward(self, x, causal=False, T_r=64, T_c=64):
        check_hidden_states(x, self.hidden_dim, self.w_q)
        batch_size, seq_len, _ = x.shape

        def heads(t):  # [B, S, H] -> [B, heads, S, head_dim]
            return t.view(batch_size, seq_len, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(x @ self.w_q.T), heads(x @ self.w_k.T), heads(x @ self.w_v.T)
        out = self._flash_attention(q, k, v, T_r, T_c, causal)
        out = out.transpose(1, 2).contiguous().view(batch_size, seq_len, self.hidden_dim)
        return out @ self.w_o.T
