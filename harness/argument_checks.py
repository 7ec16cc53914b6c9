"""Input checks shared by the tasks' attention modules: clear errors, never a wrong answer."""
from __future__ import annotations

import torch


def check_heads(hidden_dim: int, num_heads: int) -> int:
    """Return ``head_dim``; raise if ``hidden_dim`` does not split evenly into heads."""
    if num_heads <= 0 or hidden_dim % num_heads != 0:
        raise ValueError(
            f"hidden_dim={hidden_dim} must be a positive multiple of num_heads={num_heads} "
            "(each head gets hidden_dim // num_heads features)"
        )
    return hidden_dim // num_heads


def check_hidden_states(x: torch.Tensor, hidden_dim: int, weight: torch.Tensor | None = None) -> None:
    """``x`` must be a floating ``[batch, seq_len, hidden_dim]`` tensor on the weights' device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != hidden_dim:
        raise ValueError(
            f"x must have shape [batch, seq_len, hidden_dim={hidden_dim}], got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if weight is not None and weight.device != x.device:
        raise ValueError(
            f"x is on {x.device} but the weights are on {weight.device}: move both to one device"
        )
