"""Reference implementations in float64: what every task is checked against.

They are written for clarity, not speed, except that attention is computed in
chunks of the batch so that a large problem (B=64, S=4096, 32 heads) never
holds more than ``CHUNK_BYTES`` of scores at once.

Conventions used across the kit:
* weights use the ``nn.Linear`` layout: ``q = x @ w_q.T (+ b_q)``;
* attention inputs are ``[..., S, D]``; a query block shorter than the keys
  (decode, or prefill after a cached prefix) sits at the *end* of the keys, so
  causal row ``i`` of ``Sq`` rows sees keys ``0 .. Sk - Sq + i``.
"""
from __future__ import annotations

import math

import torch

#: Largest score block the attention reference materialises at once (bytes).
CHUNK_BYTES = 1 << 30


#: The precision of the references. The same functions with ``dtype=torch.float32``
#: are "PyTorch's own float32 computation of the same thing", which the tolerance
#: rule in :mod:`harness.compare` measures candidates against.
REFERENCE_DTYPE = torch.float64


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.detach().to(dtype)


def softmax(x: torch.Tensor, dim: int = -1, dtype: torch.dtype = REFERENCE_DTYPE) -> torch.Tensor:
    """Numerically stable softmax."""
    x = _cast(x, dtype)
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = shifted.exp()
    return e / e.sum(dim=dim, keepdim=True)


def gemm_nn(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype = REFERENCE_DTYPE) -> torch.Tensor:
    """``a @ b`` for ``[batch, M, K] x [batch, K, N]``."""
    return torch.bmm(_cast(a, dtype), _cast(b, dtype))


def gemm_nt(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype = REFERENCE_DTYPE) -> torch.Tensor:
    """``a @ b^T`` for ``[batch, M, K] x [batch, N, K]``."""
    return torch.bmm(_cast(a, dtype), _cast(b, dtype).transpose(-1, -2))


def causal_mask(sq: int, sk: int, device=None) -> torch.Tensor:
    """True where a query may NOT look: key index beyond the query's position.

    Queries are the last ``sq`` positions of ``sk`` keys (bottom-right aligned).
    """
    rows = torch.arange(sq, device=device).unsqueeze(1) + (sk - sq)
    cols = torch.arange(sk, device=device).unsqueeze(0)
    return cols > rows


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    dtype: torch.dtype = REFERENCE_DTYPE,
) -> torch.Tensor:
    """``softmax(q k^T * scale [+ mask]) v`` for ``[..., S, D]`` inputs."""
    lead = q.shape[:-2]
    sq, d = q.shape[-2:]
    sk = k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    q3, k3, v3 = (t.reshape(-1, t.shape[-2], t.shape[-1]) for t in (q, k, v))
    out = torch.empty(q3.shape[0], sq, v.shape[-1], dtype=dtype, device=q.device)
    mask = causal_mask(sq, sk, q.device) if causal else None
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_item = max(1, sq * sk * itemsize * 3)  # scores, exp and probabilities alive at once
    step = max(1, CHUNK_BYTES // per_item)
    for start in range(0, q3.shape[0], step):
        sl = slice(start, start + step)
        scores = gemm_nt(q3[sl], k3[sl], dtype) * scale
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        out[sl] = torch.bmm(softmax(scores, -1, dtype), _cast(v3[sl], dtype))
    return out.reshape(*lead, sq, v.shape[-1])


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, S, H]`` -> ``[B, heads, S, head_dim]``."""
    b, s, h = x.shape
    return x.view(b, s, num_heads, h // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, S, head_dim]`` -> ``[B, S, H]``."""
    b, n, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, n * d)


def linear(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    dtype: torch.dtype = REFERENCE_DTYPE,
) -> torch.Tensor:
    """``x @ w.T + b`` (the ``nn.Linear`` layout)."""
    y = _cast(x, dtype) @ _cast(w, dtype).T
    return y if b is None else y + _cast(b, dtype)


def mha(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    num_heads: int,
    causal: bool = False,
    biases: tuple | None = None,
    dtype: torch.dtype = REFERENCE_DTYPE,
) -> torch.Tensor:
    """Multi-head self-attention of ``x [B, S, H]``."""
    b_q, b_k, b_v, b_o = biases if biases is not None else (None,) * 4
    q = split_heads(linear(x, w_q, b_q, dtype), num_heads)
    k = split_heads(linear(x, w_k, b_k, dtype), num_heads)
    v = split_heads(linear(x, w_v, b_v, dtype), num_heads)
    return linear(merge_heads(attention(q, k, v, causal, dtype=dtype)), w_o, b_o, dtype)
