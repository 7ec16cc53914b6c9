"""Task 3: FlashAttention-2 forward pass (Algorithm 1) in PyTorch (reference solution)."""
import math

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
    # Line 9: the new running max, and this tile's exponentials taken against it.
    m_new = torch.maximum(m_prev, scores.amax(dim=-1))
    p = torch.exp(scores - m_new.unsqueeze(-1))
    # How much the old statistics shrink because the max grew (exp(-inf) = 0 at first).
    correction = torch.exp(m_prev - m_new)
    l_new = correction * l_prev + p.sum(dim=-1)
    # Line 10, with the paper's typo fixed: the old output is multiplied by
    # diag(exp(m_prev - m_new)), NOT by its inverse (flash-attention issue #991).
    o_new = o_prev * correction.unsqueeze(-1) + p @ v
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
        *lead, seq_len, head_dim = q.shape
        scale = 1.0 / math.sqrt(head_dim)
        out = torch.empty_like(q)
        for r0 in range(0, seq_len, T_r):  # Algorithm 1, line 3: loop over query tiles
            r1 = min(r0 + T_r, seq_len)  # the last tile may be shorter
            q_i = q[..., r0:r1, :]
            # Line 4: running statistics start empty.
            m = torch.full((*lead, r1 - r0), float("-inf"), dtype=q.dtype, device=q.device)
            l = torch.zeros((*lead, r1 - r0), dtype=q.dtype, device=q.device)
            o = torch.zeros((*lead, r1 - r0, head_dim), dtype=q.dtype, device=q.device)
            # With a causal mask, key tiles starting after this tile's last row are
            # entirely masked: skip them instead of computing zeros.
            k_end = r1 if causal else seq_len
            for c0 in range(0, k_end, T_c):  # line 6: loop over key/value tiles
                c1 = min(c0 + T_c, seq_len)
                s = (q_i @ k[..., c0:c1, :].transpose(-2, -1)) * scale  # line 8
                if causal and c1 - 1 > r0:  # a tile crossing the diagonal: mask part of it
                    rows = torch.arange(r0, r1, device=q.device).unsqueeze(1)
                    cols = torch.arange(c0, c1, device=q.device).unsqueeze(0)
                    s = s.masked_fill(cols > rows, float("-inf"))
                m, l, o = online_softmax_step(m, l, o, s, v[..., c0:c1, :])  # lines 9-10
            out[..., r0:r1, :] = o / l.unsqueeze(-1)  # line 12: normalise once, at the end
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
