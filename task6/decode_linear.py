"""The model's linear layers in decode (provided; you don't edit this).

A decode step feeds ``B`` rows (one new token per sequence) through every
weight matrix of the model, and each weight is used for only ``B`` multiply-adds.
The step is therefore limited by how fast the weights stream out of GPU memory
(the "weight-streaming floor" the test prints), and a library GEMM tuned for
large products, plus one launch per small elementwise op around it, leaves a
good part of that bandwidth unused. ``decode_linear.cu`` streams each weight
matrix once, with the elementwise work fused into the same pass:

* :func:`linear`: ``x @ w.T`` (plus an optional residual), the out- and
  down-projections and the LM head;
* :func:`swiglu`: ``silu(x @ Wg.T) * (x @ Wu.T)`` from the stacked ``[Wg; Wu]``;
* :func:`qkv_rope`: ``q, k, v`` from the stacked ``W_qkv``, RoPE already applied
  to ``q`` and ``k``;
* :func:`layer_norm`: the decoder's LayerNorms, one block per row.

Each function computes exactly what its plain-PyTorch fallback computes (float32,
summed in another order). The fast path runs for float32 CUDA inputs of at most
``MAX_ROWS`` rows outside autograd; everything else (the prefill, float64 copies of
the model, CPU) takes the fallback. ``ATTN_KIT_DECODE_LINEAR=0`` (or
:func:`set_enabled`) turns the fast path off everywhere, to compare.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .rope import apply_rope, check_positions

#: Set to "0" to run every linear layer with plain PyTorch.
ENABLE_ENV = "ATTN_KIT_DECODE_LINEAR"
#: Most rows (batch x new tokens) the kernel takes; larger inputs are a prefill.
MAX_ROWS = 8

_state = {"enabled": os.environ.get(ENABLE_ENV, "1") != "0"}


def set_enabled(enabled: bool) -> bool:
    """Turn the fast path on or off; returns the previous setting."""
    previous = _state["enabled"]
    _state["enabled"] = bool(enabled)
    return previous


def extension():
    """The compiled ``decode_linear`` extension (built on first use, like the tasks' kernels)."""
    from harness.build import extension as built

    return built("decode_linear")


def _aligned(t: torch.Tensor) -> bool:
    return t.data_ptr() % 16 == 0


def _fits(rows: torch.Tensor, *params: torch.Tensor) -> bool:
    """Whether ``rows [M, K]`` and the float32 ``params`` meet the kernels' requirements."""
    return (
        _state["enabled"]
        and rows.is_cuda
        and rows.dim() == 2
        and rows.dtype == torch.float32
        and 1 <= rows.shape[0] <= MAX_ROWS
        and rows.shape[1] % 4 == 0
        and rows.stride(1) == 1
        and rows.stride(0) % 4 == 0
        and _aligned(rows)
        and all(p.dtype == torch.float32 and p.device == rows.device and p.is_contiguous() and _aligned(p)
                for p in params)
        # The kernels have no backward: inside autograd, PyTorch does the work.
        and not (torch.is_grad_enabled() and (rows.requires_grad or any(p.requires_grad for p in params)))
    )


def applies(rows: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernel can compute ``rows [M, K] @ weight.T``."""
    return weight.dim() == 2 and weight.shape[1] == rows.shape[-1] and _fits(rows, weight)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def linear(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T`` (``+ residual``), ``x [..., K]``, ``weight [N, K]`` -> ``[..., N]``."""
    rows = _rows(x)
    if applies(rows, weight) and (residual is None or residual.dtype == torch.float32):
        res = None if residual is None else _rows(residual.expand(*x.shape[:-1], weight.shape[0]))
        if res is None or res.stride(1) == 1:
            out = extension().linear(rows, weight, res)
            return out.view(*x.shape[:-1], weight.shape[0])
    y = F.linear(x, weight)
    return y if residual is None else residual + y


def swiglu(x: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(x @ Wg.T) * (x @ Wu.T)`` where ``gate_up = [Wg; Wu]`` (``[2I, K]``) -> ``[..., I]``."""
    rows = _rows(x)
    if applies(rows, gate_up) and gate_up.shape[0] % 2 == 0:
        return extension().swiglu(rows, gate_up).view(*x.shape[:-1], gate_up.shape[0] // 2)
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    return F.silu(gate) * up


def qkv_rope(x: torch.Tensor, w_qkv: torch.Tensor, table: torch.Tensor, current_pos: int, num_heads: int):
    """``q, k, v`` (each ``[B, S, H]``, contiguous) from ``x [B, S, K]`` and the stacked ``w_qkv [3H, K]``,
    with RoPE (``table``: :func:`task6.rope.rope_table`) applied to ``q`` and ``k`` for positions
    ``current_pos .. current_pos + S - 1``."""
    b, s, _ = x.shape
    hidden = w_qkv.shape[0] // 3
    head_dim = hidden // num_heads
    check_positions(table, current_pos, s)  # before the kernel, which would only say "outside the table"
    rows = _rows(x)
    if (
        applies(rows, w_qkv)
        and w_qkv.shape[0] % 3 == 0
        and hidden % 4 == 0
        and head_dim % 2 == 0
        and table.dtype == torch.complex64
        and table.is_contiguous()
        and table.device == x.device
    ):
        q, k, v = extension().qkv_rope(rows, w_qkv, torch.view_as_real(table), head_dim, current_pos, s)
        return q.view(b, s, hidden), k.view(b, s, hidden), v.view(b, s, hidden)
    q, k, v = F.linear(x, w_qkv).split(hidden, dim=-1)
    return apply_rope(q, table, current_pos, num_heads), apply_rope(k, table, current_pos, num_heads), v.contiguous()


#: Widest row the LayerNorm kernel holds in registers (256 threads x 8 float4).
MAX_NORM_WIDTH = 8192


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``F.layer_norm`` over the last dimension of ``x``."""
    rows = _rows(x)
    if rows.shape[1] <= MAX_NORM_WIDTH and weight.numel() == bias.numel() == rows.shape[1] and _fits(rows, weight, bias):
        return extension().layer_norm(rows, weight, bias, eps).view(x.shape)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


class LayerNorm(torch.nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension whose forward takes the decode kernel when it applies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class Linear(torch.nn.Linear):
    """``nn.Linear`` (no bias) whose forward takes the decode kernel when it applies."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight)
